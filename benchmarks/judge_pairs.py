"""How well the judge and the CLIP read each attribute: real scenes, their true caption against a false one.

For each of N val scenes (rendered at the CLIP's size) and each world attribute, one hard negative is drawn as
the CLIP and the judge are trained with (world/perturb.py: the true caption with that attribute made false). A
reader is right on the pair when it rates the true caption above the false one: the CLIP by cos(z_i, z_t), the
judge (unclip/judge) by its match logit. Relations are what the pipeline's CLIP reads worst (docs/clip.md) and
what the judge is for (docs/reranking.md).

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/judge_pairs.py --model models/shapes-tiny --n 1000 --threads 2 \\
        --out benchmarks/results/judge_pairs_val.json
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import torch.nn.functional as F

from unclip.data.images import to_tensor
from unclip.judge import load_judge
from unclip.pipeline import UnCLIP
from unclip.rerank import clip_image_embeddings
from unclip.world import ATTRIBUTES, perturb, render, sample_scene
from report import write_report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="models/shapes-tiny", help="the pipeline whose CLIP (and judge) to read")
    parser.add_argument("--judge", default=None, help="a judge directory (default: the pipeline's judge stage)")
    parser.add_argument("--split", default="val", choices=("val", "test"))
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0, help="seeds the choice of false captions")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    pipe = UnCLIP.from_pretrained(args.model)
    judge = load_judge(args.judge) if args.judge else pipe.judge
    if judge is None:
        raise SystemExit(f"{args.model} has no judge stage: give one with --judge DIR")
    clip, rng, started = pipe.clip, np.random.default_rng(args.seed), time.perf_counter()
    right: dict[str, dict[str, list[bool]]] = {reader: {a: [] for a in ATTRIBUTES} for reader in ("clip", "judge")}
    for s in range(0, args.n, 50):
        scenes = [sample_scene(args.split, i) for i in range(s, min(s + 50, args.n))]
        images = torch.stack([to_tensor(render(x, clip.config.image_size), clip.config.image_size) for x in scenes])
        pairs = [(i, attribute, wrong) for i, x in enumerate(scenes) for attribute in ATTRIBUTES
                 if (wrong := perturb(x, attribute, rng)) is not None]
        if not pairs:
            continue
        index = torch.tensor([i for i, _, _ in pairs])
        true = pipe.tokens([scenes[i].caption for i, _, _ in pairs])
        false = pipe.tokens([wrong for _, _, wrong in pairs])
        with torch.no_grad():
            z_i = clip_image_embeddings(clip, images)[index]  # (P, E)
            cos_true = (z_i * F.normalize(clip.encode_text_tokens(true), dim=-1)).sum(-1)
            cos_false = (z_i * F.normalize(clip.encode_text_tokens(false), dim=-1)).sum(-1)
            logit_true = judge.score(clip, images=images, tokens=true, image_index=index)
            logit_false = judge.score(clip, images=images, tokens=false, image_index=index)
        for p, (_, attribute, _) in enumerate(pairs):
            right["clip"][attribute].append(bool(cos_true[p] > cos_false[p]))
            right["judge"][attribute].append(bool(logit_true[p] > logit_false[p]))
    table = {reader: {a: float(np.mean(v)) for a, v in by.items() if v} for reader, by in right.items()}
    counts = {a: len(v) for a, v in right["clip"].items()}
    print(f"\n{args.n} {args.split} scenes: the true caption rated above a false one\n")
    print("| reader | " + " | ".join(f"{a} ({counts[a]})" for a in ATTRIBUTES) + " |")
    print("|---|" + "--:|" * len(ATTRIBUTES))
    for reader, row in table.items():
        print(f"| {reader} | " + " | ".join(f"{row.get(a, float('nan')):.3f}" for a in ATTRIBUTES) + " |")
    if args.out:
        write_report(args.out, {"benchmark": "judge_pairs", "model": args.model, "judge": args.judge,
                                "split": args.split, "n": args.n, "seed": args.seed, "pairs": counts,
                                "accuracy": table, "seconds": time.perf_counter() - started})
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
