"""Which candidate to keep: re-ranking rules compared on the same candidates, scored by the world's scorer.

The pipeline draws K candidates per caption and keeps one (`PipelineConfig.candidates`, unclip/rerank.py). This
draws exactly the candidates `unclip eval` draws (`UnCLIP.candidates`: caption i seeded seed + i, the pipeline's
own sampling), scores every candidate with the world's exact scorer, and reports what each rule keeps:

- `cosine`: cos(CLIP image embedding, z_t), the pipeline's rule until now;
- `contrast`: the caption's log-probability among itself and its alternatives (every caption one edit away,
  unclip/world/alternatives.py) at the CLIP's logit scale: zero-shot classification of the candidate;
- `margin`: cos to the caption minus the highest cos to an alternative;
- `oracle`: a correct candidate whenever there is one (the ceiling of any rule on these candidates);
- `first`: the first candidate (no re-ranking);
- `judge` (with `--judge DIR`): cos(image, caption) as another CLIP sees them, e.g. the evaluation encoder
  (models/eval-clip; only to measure whether a different CLIP would choose better: the pipeline never reads it);
- `matcher`: the match logit of an image-text matching judge (unclip/judge; `unclip train judge`), the pipeline's
  own judge stage where it has one, or the one in `--matcher DIR` (on the pipeline's CLIP); it is the rule a
  pipeline with `judge: true` keeps by.

Run (1.5 min for 500 captions at K = 2 on two threads, 3 min for 1,000):

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/rerank_rules.py --split test --n 500 --threads 2 \\
        --out benchmarks/results/rerank_rules_test.json
    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/rerank_rules.py --split val --n 1000 --threads 2 \\
        --out benchmarks/results/rerank_rules_val.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from unclip.clip import load_clip
from unclip.data.images import to_pil
from unclip.pipeline import UnCLIP
from unclip.judge import load_judge
from unclip.rerank import clip_image_embeddings, judge_scores as matcher_scores
from unclip.world import sample_scene
from unclip.world.alternatives import caption_alternatives
from unclip.world.captions import parse_caption
from unclip.world.score import accuracy_by_skill, score_image

RULES = ("first", "cosine", "contrast", "margin", "oracle")


@torch.no_grad()
def judge_scores(judge, images: torch.Tensor, captions: list[str], *, k: int) -> np.ndarray:
    """cos(judge's image embedding, judge's text embedding of the caption), (len(captions), K): another CLIP's
    view of the same candidates."""
    z_t = F.normalize(judge.encode_text(captions), dim=-1)  # (N, E)
    image_e = clip_image_embeddings(judge, images).view(len(captions), k, -1)  # (N, K, E)
    return (image_e * z_t[:, None]).sum(-1).numpy()


@torch.no_grad()
def rule_scores(pipe: UnCLIP, images: torch.Tensor, captions: list[str], *, k: int) -> dict[str, np.ndarray]:
    """Each rule's score of each candidate, (len(captions), K) per rule (higher is kept)."""
    z_t = F.normalize(pipe.text_conditioning(captions)[0], dim=-1)  # (N, E)
    image_e = clip_image_embeddings(pipe.clip, images).view(len(captions), k, -1)  # (N, K, E)
    cos = (image_e * z_t[:, None]).sum(-1)  # (N, K): clip_scores, the pipeline's rule, from the same embeddings
    scale = float(pipe.clip.scale)
    contrast, margin = torch.zeros_like(cos), torch.zeros_like(cos)
    for n, caption in enumerate(captions):
        alternatives = caption_alternatives(caption)
        if not alternatives:
            contrast[n], margin[n] = cos[n], cos[n]
            continue
        alt = F.normalize(pipe.clip.encode_text_tokens(pipe.tokens(alternatives)), dim=-1)  # (A, E)
        sims = torch.cat([cos[n][:, None], image_e[n] @ alt.T], dim=1)  # (K, 1 + A)
        contrast[n] = torch.log_softmax(scale * sims, dim=1)[:, 0]
        margin[n] = sims[:, 0] - sims[:, 1:].max(dim=1).values
    return {"cosine": cos.numpy(), "contrast": contrast.numpy(), "margin": margin.numpy()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="models/shapes-tiny")
    parser.add_argument("--split", default="val", choices=("val", "test", "novel"))
    parser.add_argument("--n", type=int, default=500, help="captions, scenes 0 .. n-1 of the split")
    parser.add_argument("--k", type=int, default=None, help="candidates per caption (default: the pipeline's)")
    parser.add_argument("--seed", type=int, default=0, help="as `unclip eval --seed`")
    parser.add_argument("--batch", type=int, default=32, help="captions per batch, as `unclip eval` (32)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--judge", default=None, help="another CLIP's directory: adds a rule 'judge' that keeps the "
                        "candidate it rates closest to the caption")
    parser.add_argument("--matcher", default=None, help="an image-text matching judge's directory (unclip train "
                        "judge) on the pipeline's CLIP: adds a rule 'matcher' that keeps the candidate with its "
                        "highest match logit (default: the pipeline's own judge stage, if it has one)")
    parser.add_argument("--out", default=None)
    parser.add_argument("--save", default=None, help="also write the candidates (uint8), their captions, verdicts "
                        "and every rule's scores to this .npz, to compare other re-rankers on them later")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    pipe = UnCLIP.from_pretrained(args.model)
    judge = load_clip(args.judge) if args.judge else None
    matcher = load_judge(args.matcher) if args.matcher else pipe.judge
    extra = (("judge",) if judge else ()) + (("matcher",) if matcher else ())
    scored, rules = ("cosine", "contrast", "margin") + extra, RULES + extra  # the rules that score candidates; all
    k = args.k or pipe.config.candidates
    if k < 2:
        raise SystemExit(f"--k {k}: re-ranking needs at least 2 candidates")
    pipe.config = pipe.config.with_(candidates=k)  # pipe.candidates draws what pipe(captions) would re-rank
    captions = [sample_scene(args.split, i).caption for i in range(args.n)]
    correct = np.zeros((args.n, k), dtype=bool)
    scores = {name: np.zeros((args.n, k)) for name in scored}
    started, kept_images = time.perf_counter(), []
    for s in range(0, args.n, args.batch):
        chunk = captions[s:s + args.batch]
        images = pipe.candidates(chunk, seed=args.seed + s)  # (len(chunk) * k, 3, S, S), as `unclip eval` draws
        for name, value in rule_scores(pipe, images, chunk, k=k).items():
            scores[name][s:s + len(chunk)] = value
        if judge is not None:
            scores["judge"][s:s + len(chunk)] = judge_scores(judge, images, chunk, k=k)
        if matcher is not None:
            tokens = pipe.tokens(chunk).repeat_interleave(k, dim=0)  # (len(chunk) * k, T)
            scores["matcher"][s:s + len(chunk)] = matcher_scores(matcher, pipe.clip, images, tokens).view(-1, k).numpy()
        for j, image in enumerate(images):
            correct[s + j // k, j % k] = score_image(to_pil(image), chunk[j // k]).correct
        if args.save:
            kept_images.append(((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).view(len(chunk), k,
                                                                                             *images.shape[1:]))
        print(f"{s + len(chunk)}/{args.n} captions, {time.perf_counter() - started:.0f} s", flush=True)

    skills = [parse_caption(c).skills for c in captions]
    kept = {"first": np.zeros(args.n, dtype=int), "oracle": correct.argmax(axis=1)}
    kept |= {name: value.argmax(axis=1) for name, value in scores.items()}
    rows = {}
    for rule in rules:
        right = correct[np.arange(args.n), kept[rule]]
        rows[rule] = accuracy_by_skill(zip(right, skills))
    base = correct[np.arange(args.n), kept["cosine"]].astype(float)
    for rule in rules:
        diff = correct[np.arange(args.n), kept[rule]].astype(float) - base
        rows[rule]["gain_vs_cosine"] = float(diff.mean())
        rows[rule]["gain_se"] = float(diff.std(ddof=1) / np.sqrt(args.n))
    names = ("single", "two", "counting", "relation", "position", "background")
    print(f"\n{args.n} {args.split} captions, {k} candidates each; a candidate is right "
          f"{correct.mean():.3f} of the time\n")
    print("| rule | overall | vs cosine | " + " | ".join(names) + " |")
    print("|---|--:|--:|" + "--:|" * len(names))
    for rule in rules:
        r = rows[rule]
        print(f"| {rule} | {r['overall']:.3f} | {r['gain_vs_cosine']:+.3f} ± {r['gain_se']:.3f} | "
              + " | ".join(f"{r['skills'].get(t, float('nan')):.3f}" for t in names) + " |")
    if args.save:
        np.savez_compressed(args.save, images=torch.cat(kept_images).numpy(), captions=np.array(captions),
                            correct=correct, **{f"score_{name}": value for name, value in scores.items()})
        print(f"wrote {args.save}")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({
            "benchmark": "rerank_rules", "model": args.model, "split": args.split, "n": args.n, "k": k,
            "seed": args.seed, "threads": args.threads, "seconds": time.perf_counter() - started,
            "matcher": args.matcher or (str(args.model) + "/judge" if matcher is not None else None),
            "candidate_accuracy": float(correct.mean()), "rules": rows}, indent=1))
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
