"""How far apart are two draws of the pipeline's diffusion prior for one caption, at each number of sampler steps?

Candidates re-ranked by CLIP only help if they differ (docs/distillation.md): with the prior's sampler at one step,
its z_i is its mean prediction and every candidate of a caption gets nearly the same one. For the first --n captions
of --split, each step count in --steps draws z_i twice (generators seeded 0 and 1, the pipeline's sampler otherwise)
and reports the mean cos between the two draws and the mean cos of a draw to the true image's z_i (the scene
rendered at the CLIP's size, through its image tower). Prints a table and writes JSON.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/prior_spread.py --model models/shapes-tiny --split val --n 200
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import torch

from unclip.data.images import to_tensor
from unclip.pipeline import UnCLIP
from unclip.rerank import clip_image_embeddings
from unclip.world import render, sample_scene
from report import write_report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="models/shapes-tiny", help="a pipeline directory with a diffusion prior")
    parser.add_argument("--split", default="val", choices=("test", "val"))
    parser.add_argument("--n", type=int, default=200, help="captions (default: 200)")
    parser.add_argument("--steps", type=int, nargs="+", default=[1, 2, 3], help="prior sampler steps to compare")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "prior_spread.json"))
    args = parser.parse_args()
    if args.n < 1 or any(s < 1 for s in args.steps):
        parser.error(f"--n and --steps must be >= 1, got --n {args.n} --steps {args.steps}")
    torch.set_num_threads(args.threads)
    pipe = UnCLIP.from_pretrained(args.model)
    scenes = [sample_scene(args.split, i) for i in range(args.n)]
    captions = [s.caption for s in scenes]
    size = pipe.clip.config.image_size
    true = clip_image_embeddings(pipe.clip, torch.stack([to_tensor(render(s, size), size) for s in scenes]))
    rows = []
    for steps in args.steps:
        pipe.config = pipe.config.with_(prior=replace(pipe.config.prior, steps=steps))
        a, b = (pipe.image_embeddings(captions, prior="diffusion", generator=torch.Generator().manual_seed(seed))
                for seed in (0, 1))
        rows.append({"steps": steps, "cos_between_draws": float((a * b).sum(-1).mean()),
                     "cos_to_true": float((a * true).sum(-1).mean())})
    print(f"model {args.model}, {args.n} {args.split} captions, prior sampler {pipe.config.prior.sampler}")
    print("| prior steps | cos between two draws | cos to the true z_i |")
    print("|--:|--:|--:|")
    for row in rows:
        print(f"| {row['steps']} | {row['cos_between_draws']:.4f} | {row['cos_to_true']:.3f} |")
    path = write_report(args.out, {"model": args.model, "split": args.split, "n": args.n,
                                   "sampler": pipe.config.prior.sampler, "rows": rows})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
