"""Can re-ranking judge candidates part-way through the decoder's steps, and so afford more of them?

The pipeline spends its network evaluations (issue 8: at most 35 an image) on K candidates, each 2 prior steps + 7
decoder steps, and keeps the one whose finished image its CLIP rates closest to the caption. Oracles over more
candidates are far higher, but each finished candidate costs 2 + 2 * 7 = 16 evaluations with the autoguided decoder
(two networks a step), 2 + 7 = 9 with the distilled one (PipelineConfig.distilled; shipped since 2026-12-07, three
candidates). If CLIP could judge a candidate from the decoder's x0 estimate after m of its 7 steps, K candidates could
be started, the best one kept after step m and only it finished:

    evaluations per image = K * (2 + e m) + e * (7 - m),   e = 2 guided, 1 distilled
                            (guided: K = 3, m = 3: 32; distilled: K = 4, m = 6: 33; K = 6, m = 3: 34)

This draws K candidates per caption in full, each from its own generator (so a kept candidate's trajectory is the
one it would follow alone: dropping the others changes nothing), records the decoder's clipped x0 estimate at each
step, scores every finished candidate with the world's scorer, and reports the accuracy of keeping, among the first
k <= K candidates, the one whose step-m estimate CLIP (or, with --rule judge, the pipeline's judge; the default where
the pipeline re-ranks by it) rates highest; m = 8 is the finished image (the shipped rule).

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/rerank_early.py --split val --n 500 --k 6 --threads 2 \\
        --out benchmarks/results/rerank_early_val.json
"""

from __future__ import annotations

import argparse
import itertools
import time

import numpy as np
import torch

from unclip.data.images import to_pil
from unclip.pipeline import UnCLIP
from unclip.rerank import clip_scores, judge_scores
from unclip.world import sample_scene
from unclip.world.score import score_image
from report import write_report


def recording_denoisers(decoder, estimates: list[torch.Tensor]) -> None:
    """Make every model_fn `decoder` builds append its clipped x0 estimate (B, 3, S, S) per call."""
    build = decoder.denoiser

    def denoiser(**kwargs):
        model_fn = build(**kwargs)

        def recorded(x, t):
            out = model_fn(x, t)
            estimates.append(decoder.diffusion.predict(out, x, t, threshold="static").x0.clamp(-1, 1))
            return out

        return recorded

    decoder.denoiser = denoiser


def candidate_seeds(first: int, n: int, k: int, seed: int) -> list[int]:
    """Caption i's candidate j draws from its own generator, seeded from (seed, caption i, j)."""
    return [1_000_003 * (seed + first + i) + 7_919 * j for i in range(n) for j in range(k)]


def evaluations(k: int, m: int, steps: int, prior_steps: int, *, per_step: int = 2) -> int:
    """per_step: network evaluations a decoder step costs (2 guided, 1 distilled)."""
    m = min(m, steps)
    return k * (prior_steps + per_step * m) + per_step * (steps - m)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="models/shapes-tiny")
    parser.add_argument("--split", default="val", choices=("val", "test", "novel"))
    parser.add_argument("--n", type=int, default=500, help="captions, scenes 0 .. n-1 of the split")
    parser.add_argument("--k", type=int, default=6, help="candidates drawn in full per caption")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch", type=int, default=16, help="captions per batch")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rule", default=None, choices=("clip", "judge"), help="what rates the estimates: the "
                        "CLIP's cosine or the pipeline's judge stage (default: what the pipeline re-ranks by)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    if args.k < 2:
        raise SystemExit(f"--k {args.k}: re-ranking needs at least 2 candidates")
    torch.set_num_threads(args.threads)
    pipe = UnCLIP.from_pretrained(args.model)
    cfg = pipe.config
    distilled = cfg.distilled
    if not distilled and (cfg.decoder.sampler != "ddpm" or not cfg.autoguidance
                          or cfg.decoder.guidance_interval is not None):
        raise SystemExit("the evaluation count below assumes the shipped sampling: DDPM, autoguided at every step, "
                         "or the distilled decoder")
    steps, k, per_step = cfg.decoder.steps, args.k, 1 if distilled else 2
    rule = args.rule or ("judge" if cfg.judge else "clip")
    if rule == "judge" and pipe.judge is None:
        raise SystemExit(f"--rule judge: {args.model} has no judge stage")
    estimates: list[torch.Tensor] = []
    recording_denoisers(pipe.decoder_distilled if distilled else pipe.decoder, estimates)
    captions = [sample_scene(args.split, i).caption for i in range(args.n)]
    correct = np.zeros((args.n, k), dtype=bool)
    cos = np.zeros((args.n, steps + 1, k))  # the rule's rating after m decoder evaluations (m - 1), finished (steps)
    started = time.perf_counter()
    for s in range(0, args.n, args.batch):
        chunk = captions[s:s + args.batch]
        batch = [c for c in chunk for _ in range(k)]
        generators = pipe.caption_generators(len(batch), candidate_seeds(s, len(chunk), k, args.seed))
        estimates.clear()
        with torch.no_grad():
            z_i = pipe.image_embeddings(batch, generator=generators)
            images = (pipe.decode(z_i, captions=batch, generator=generators, distilled=True) if distilled
                      else pipe.decode(z_i, captions=batch, generator=generators, autoguidance=True))
            z_t = pipe.text_conditioning(chunk)[0].repeat_interleave(k, dim=0)  # (B * K, E), unit norm
            tokens = pipe.tokens(chunk).repeat_interleave(k, dim=0)  # (B * K, T)
            if len(estimates) != steps:
                raise RuntimeError(f"recorded {len(estimates)} decoder calls for {steps} steps")
            for m, x in enumerate([*estimates, images]):
                rated = (judge_scores(pipe.judge, pipe.clip, x, tokens) if rule == "judge"
                         else clip_scores(pipe.clip, x, z_t)).view(len(chunk), k)
                cos[s:s + len(chunk), m] = rated.numpy()
        for j, image in enumerate(images):
            correct[s + j // k, j % k] = score_image(to_pil(image), chunk[j // k]).correct
        print(f"{s + len(chunk)}/{args.n} captions, {time.perf_counter() - started:.0f} s", flush=True)

    rows, index = [], np.arange(args.n)
    for kk, m in itertools.product(range(2, k + 1), range(1, steps + 2)):
        kept = cos[:, m - 1, :kk].argmax(axis=1)
        rows.append({"k": kk, "judged_after": m if m <= steps else "finished",
                     "evaluations": evaluations(kk, m, steps, cfg.prior.steps, per_step=per_step),
                     "accuracy": float(correct[index, kept].mean())})
    pairs = [float(correct[index, np.where(cos[:, steps, a] >= cos[:, steps, b], a, b)].mean())
             for a, b in itertools.combinations(range(k), 2)]
    oracle = {kk: float(correct[:, :kk].any(axis=1).mean()) for kk in range(1, k + 1)}
    print(f"\n{args.n} {args.split} captions, {k} candidates each; a candidate is right {correct.mean():.3f} "
          f"of the time; the shipped rule over each of the {len(pairs)} pairs: {np.mean(pairs):.3f} "
          f"(min {min(pairs):.3f}, max {max(pairs):.3f})\n")
    print("| candidates | judged after | evaluations | accuracy | oracle |")
    print("|--:|--:|--:|--:|--:|")
    for r in rows:
        mark = " (within 35)" if r["evaluations"] <= 35 else ""
        print(f"| {r['k']} | {r['judged_after']} | {r['evaluations']}{mark} | {r['accuracy']:.3f} | "
              f"{oracle[r['k']]:.3f} |")
    if args.out:
        write_report(args.out, {
            "benchmark": "rerank_early", "model": args.model, "rule": rule, "split": args.split, "n": args.n, "k": k,
            "seed": args.seed, "threads": args.threads, "seconds": time.perf_counter() - started,
            "candidate_accuracy": float(correct.mean()), "pairs_finished": pairs, "oracle": oracle, "rows": rows})
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
