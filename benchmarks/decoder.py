"""The decoder and the upsampler, measured (issue 7):

- reconstruction: the decoder fed the true z_i (and caption) of N test images through the frozen CLIP;
  the world's scorer checks each image against the original caption (goal >= 85%, single objects >= 95%);
  what the parser reads back (background, count, colours, shapes, where a lone object lands), and where the
  decoder means to draw before sampling starts (its x0 prediction at the zero-SNR step);
- guidance: scorer accuracy and diversity (mean pairwise RMS distance, in [0, 1] pixel units, between two
  samples of the same z_i) for guidance scales 1, 2, 3, 5, 8;
- upsampler: on test images, the 32 px image (bicubic-downsampled from the 128 px render) upsampled by the
  diffusion upsampler vs by bicubic interpolation: PSNR against the 128 px render, and how often the scorer's
  verdict on the upsampled image agrees with its verdict on the render (goal >= 98%);
- speed: training samples/s (recipe batch), peak resident memory, and sampling seconds per image per stage.
Prints tables and writes benchmarks/results/decoder.json.

    .venv/bin/python benchmarks/decoder.py --clip runs/clip-tiny/model --decoder runs/decoder-tiny/model \
        --upsampler runs/upsampler-tiny/model
"""

from __future__ import annotations

import argparse
import itertools
import math
import resource
import statistics
import time
from pathlib import Path

import torch

from unclip.clip import load_clip
from unclip.data.images import to_pil
from unclip.decoder import downsample_bicubic, load_decoder, upsample_bicubic
from unclip.decoder.train import RECIPES, decoder_conditioning
from unclip.world import ScoreResult, ShapesDataset, parse_image, score_image
from unclip.world.captions import SKILLS
from unclip.world.vocab import POSITIONS
from report import write_report


def batches(n: int, size: int):
    return [slice(s, min(s + size, n)) for s in range(0, n, size)]


def score_results(images: torch.Tensor, captions: list[str]) -> list[ScoreResult]:
    """The world's scorer on each image against its caption (each result keeps what the parser read)."""
    return [score_image(to_pil(x), caption) for x, caption in zip(images, captions)]


def verdicts_and_skills(results: list[ScoreResult]) -> tuple[list[bool], dict[str, float]]:
    """Each result's verdict, and the accuracy per skill tag."""
    verdicts, by_skill = [], {}
    for result in results:
        verdicts.append(result.correct)
        for tag in result.skills:
            by_skill.setdefault(tag, []).append(result.correct)
    return verdicts, {t: sum(v) / len(v) for t, v in by_skill.items()}


def score(images: torch.Tensor, captions: list[str]) -> tuple[list[bool], dict[str, float]]:
    return verdicts_and_skills(score_results(images, captions))


def attributes(images: torch.Tensor, scenes: list) -> dict[str, float]:
    """What the world's parser reads back from decoded images against the scenes they came from: how often the
    background, the object count, the multiset of colours and that of shapes are right (the last two among
    images with the right count), and how far (unit coordinates) a lone object lands from where it was: for
    every one-object scene whose image shows any object, the centre of the largest one drawn."""
    hits = dict(background=0, count=0, colours=0, shapes=0)
    errors = []
    for x, scene in zip(images, scenes):
        parsed = parse_image(to_pil(x))
        hits["background"] += parsed.background == scene.background
        if len(scene.objects) == 1 and parsed.objects:
            p, o = max(parsed.objects, key=lambda q: q.s), scene.objects[0]
            errors.append(math.hypot(p.cx - o.cx, p.cy - o.cy))
        if len(parsed.objects) != len(scene.objects):
            continue
        hits["count"] += 1
        hits["colours"] += sorted(o.colour or "" for o in parsed.objects) == sorted(o.colour for o in scene.objects)
        hits["shapes"] += sorted(o.shape or "" for o in parsed.objects) == sorted(o.shape for o in scene.objects)
    # chance: each lone object's centre against the next lone object's (placement that ignores the conditioning)
    lone = [s.objects[0] for s in scenes if len(s.objects) == 1]
    chance = [math.hypot(a.cx - b.cx, a.cy - b.cy) for a, b in zip(lone, lone[1:] + lone[:1])]
    middle = [math.hypot(a.cx - 0.5, a.cy - 0.5) for a in lone]  # placement always in the middle of the canvas
    out = {k: v / len(scenes) for k, v in hits.items()}
    return out | {"single_centre_error": sum(errors) / max(len(errors), 1), "singles_counted": len(errors),
                  "chance_centre_error": sum(chance) / max(len(chance), 1),
                  "middle_centre_error": sum(middle) / max(len(middle), 1)}


FAILURES = ("count", "colours", "shapes", "binding", "other")


def first_failure(parsed, scene) -> str:
    """The first way a decoded image that the scorer called wrong departs from the scene it came from, checked in the
    order the noise settles them (benchmarks/decoder_bands.py): "count" (how many objects), "colours" (their multiset),
    "shapes" (theirs), "binding" (right colours and shapes, on the wrong objects: the multiset of colour-shape pairs),
    else "other" (a stated size, relation, position or background)."""
    truth, drawn = scene.objects, parsed.objects
    if len(drawn) != len(truth):
        return "count"
    for key, name in ((lambda o: o.colour or "", "colours"), (lambda o: o.shape or "", "shapes"),
                      (lambda o: (o.colour or "", o.shape or ""), "binding")):
        if sorted(map(key, drawn)) != sorted(map(key, truth)):
            return name
    return "other"


def failure_kinds(results: list[ScoreResult], scenes: list) -> dict[str, dict[str, float]]:
    """Per scene form (single, pair, list, count) and over all: the share of images called correct, and the share
    wrong for each of FAILURES (first_failure, on what the scorer's parser read), which together sum to 1."""
    tally: dict[str, dict[str, int]] = {}
    for result, scene in zip(results, scenes):
        kind = "correct" if result.correct else first_failure(result.parsed, scene)
        for group in (scene.form, "all"):
            counts = tally.setdefault(group, dict.fromkeys(("correct",) + FAILURES, 0) | {"n": 0})
            counts[kind] += 1
            counts["n"] += 1
    return {group: {k: (v / c["n"] if k != "n" else v) for k, v in c.items()} for group, c in tally.items()}


def layout_before_sampling(decoder, clip, size: int, *, n: int = 64, guidance: float = 1.0,
                           named: bool = False) -> dict[str, float]:
    """Where the decoder means to draw before sampling starts: its x0 prediction at the last timestep (zero SNR,
    so x_T is pure noise and the prediction is its guess at E[x0 | z_i, caption]) for N one-object test scenes,
    reduced to the centroid of each pixel's distance from the predicted background (the median colour), against
    the object's true centre, in unit coordinates. A decoder that reads where from its conditioning puts the
    centroid near the object; one that does not predicts a blob in the middle. `named`: only scenes whose caption
    names the object's position (so the caption alone says where, whatever z_i carries)."""
    data = ShapesDataset("test", size=size, length=40 * n)
    items = list(itertools.islice((item for item in (data[i] for i in range(len(data))) if len(item[2].objects) == 1
                                   and (not named or any(p in item[1] for p in POSITIONS))), n))  # render no more
    images = torch.stack([item[0] for item in items])
    z_i, caption = decoder_conditioning(decoder, clip, images, [item[1] for item in items])
    model_fn = decoder.denoiser(image_embedding=z_i, guidance_scale=guidance, **caption)
    diffusion, last = decoder.diffusion, decoder.diffusion.num_steps - 1
    t = torch.full((len(items),), last)
    x_t = diffusion.q_sample(images, t, torch.randn(images.shape, generator=torch.Generator().manual_seed(0)))
    x0 = diffusion.predict(model_fn(x_t, t), x_t, t).x0  # (N, 3, S, S)
    weight = (x0 - x0.flatten(2).median(-1).values[..., None, None]).abs().sum(1)  # (N, S, S)
    weight = weight / weight.sum((1, 2), keepdim=True).clamp(min=1e-8)
    axis = (torch.arange(size) + 0.5) / size
    centroid = torch.stack([(weight.sum(1) * axis).sum(1), (weight.sum(2) * axis).sum(1)], dim=1)  # (N, 2): x, y
    true = torch.tensor([[item[2].objects[0].cx, item[2].objects[0].cy] for item in items])
    return {"n": len(items), "centroid_error": float((centroid - true).norm(dim=1).mean()),
            "middle_error": float((true - 0.5).norm(dim=1).mean())}


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per image, in dB, for images in [-1, 1] compared in [0, 1] units."""
    mse = (((a - b) / 2) ** 2).flatten(1).mean(1)
    return 10 * torch.log10(1 / mse.clamp(min=1e-10))


def train_speed(model, batch_fn, *, steps: int = 4) -> float:
    """Median samples/s of forward + backward + AdamW at the recipe batch."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    model.train()
    g = torch.Generator().manual_seed(0)
    times = []
    for i in range(steps + 1):
        batch = batch_fn()
        t0 = time.perf_counter()
        loss = batch["loss_fn"](g)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if i:
            times.append(time.perf_counter() - t0)
    model.eval()
    return batch["n"] / statistics.median(times)


@torch.no_grad()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clip", default="runs/clip-tiny/model")
    parser.add_argument("--decoder", default="runs/decoder-tiny/model")
    parser.add_argument("--upsampler", default="runs/upsampler-tiny/model", help="'' to skip")
    parser.add_argument("--n", type=int, default=500, help="test images for the reconstruction check")
    parser.add_argument("--n-guidance", type=int, default=60,
                        help="z_i per guidance scale (2 samples each); 0 skips the sweep")
    parser.add_argument("--n-upsample", type=int, default=100, help="test images for the upsampler check")
    parser.add_argument("--steps", type=int, default=25, help="decoder DDIM steps")
    parser.add_argument("--up-steps", type=int, default=27, help="upsampler DDIM steps (the paper's 27)")
    parser.add_argument("--guidance", type=float, default=3.0, help="decoder guidance for the reconstruction check")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "decoder.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    clip, decoder = load_clip(args.clip), load_decoder(args.decoder)
    size = decoder.config.image_size
    report = {"benchmark": "decoder", "decoder": args.decoder, "steps": args.steps, "threads": args.threads,
              "decoder_parameters": sum(p.numel() for p in decoder.parameters())}

    def decode(sl, data, scale, seed, repeat=1):
        images = torch.stack([data[i][0] for i in range(sl.start, sl.stop)])
        captions = [data[i][1] for i in range(sl.start, sl.stop)]
        z_i, caption = decoder_conditioning(decoder, clip, images, captions)
        rep = lambda x: None if x is None else x.repeat_interleave(repeat, dim=0)
        out = decoder.sample(image_embedding=rep(z_i), steps=args.steps, guidance_scale=scale,
                             generator=torch.Generator().manual_seed(seed), **{k: rep(v) for k, v in caption.items()})
        return out, [c for c in captions for _ in range(repeat)]

    # ----- reconstruction ------------------------------------------------------------------------------
    data = ShapesDataset("test", size=size, length=args.n)
    started = time.perf_counter()
    outs, caps = zip(*[decode(sl, data, args.guidance, k) for k, sl in enumerate(batches(args.n, 50))])
    seconds = (time.perf_counter() - started) / args.n
    verdicts, skills = score(torch.cat(outs), sum(caps, []))
    parsed = attributes(torch.cat(outs), [data[i][2] for i in range(args.n)])
    report["reconstruction"] = {"n": args.n, "guidance": args.guidance, "overall": sum(verdicts) / len(verdicts),
                                "skills": skills, "attributes": parsed, "seconds_per_image": seconds}
    print(f"reconstruction from true z_i + caption, {args.n} test images, {args.steps} DDIM steps, guidance "
          f"{args.guidance}: {sum(verdicts) / len(verdicts):.3f} correct (goal >= 0.85); {seconds:.2f} s/image")
    print("  " + "  ".join(f"{t} {skills[t]:.3f}" for t in SKILLS if t in skills) + "  (goal: single >= 0.95)")
    print("  parsed back: " + "  ".join(f"{k} {parsed[k]:.3f}" for k in ("background", "count", "colours", "shapes"))
          + f"  lone-object centre error {parsed['single_centre_error']:.3f} (n={parsed['singles_counted']}; "
          f"chance {parsed['chance_centre_error']:.3f}, always the middle {parsed['middle_centre_error']:.3f})")

    for named in (False, True):
        layout = layout_before_sampling(decoder, clip, size, named=named)
        report["reconstruction"]["layout_before_sampling" + ("_position_named" if named else "")] = layout
        print(f"  x0 predicted at the last (zero-SNR) step, {layout['n']} lone objects"
              + (" whose caption names the position" if named else "") + f": centroid "
              f"{layout['centroid_error']:.3f} from the object (a blob in the middle: {layout['middle_error']:.3f})")

    # ----- guidance sweep ------------------------------------------------------------------------------
    report["guidance"] = []
    print(f"\n{'guidance':>8}{'accuracy':>10}{'diversity':>11}   ({args.n_guidance} z_i x 2 samples)")
    for scale in (1.0, 2.0, 3.0, 5.0, 8.0) if args.n_guidance else ():
        outs, caps = zip(*[decode(sl, data, scale, 100 + k, repeat=2)
                           for k, sl in enumerate(batches(args.n_guidance, 30))])
        x = torch.cat(outs)
        verdicts, _ = score(x, sum(caps, []))
        pairs = x.reshape(-1, 2, *x.shape[1:])
        diversity = float((((pairs[:, 0] - pairs[:, 1]) / 2) ** 2).flatten(1).mean(1).sqrt().mean())
        report["guidance"].append({"scale": scale, "accuracy": sum(verdicts) / len(verdicts), "diversity": diversity})
        print(f"{scale:>8.1f}{sum(verdicts) / len(verdicts):>10.3f}{diversity:>11.4f}")

    # ----- upsampler -----------------------------------------------------------------------------------
    if args.upsampler:
        up = load_decoder(args.upsampler)
        hi_size, lo_size = up.config.image_size, up.config.low_res_size
        hi_data = ShapesDataset("test", size=hi_size, length=args.n_upsample)
        gt = torch.stack([hi_data[i][0] for i in range(args.n_upsample)])
        captions = [hi_data[i][1] for i in range(args.n_upsample)]
        low = downsample_bicubic(gt, lo_size)
        started = time.perf_counter()
        diffused = torch.cat([up.sample(low_res=low[sl], steps=args.up_steps,
                                        generator=torch.Generator().manual_seed(k))
                              for k, sl in enumerate(batches(args.n_upsample, 25))])
        up_seconds = (time.perf_counter() - started) / args.n_upsample
        bicubic = upsample_bicubic(low, (hi_size, hi_size))
        truth, _ = score(gt, captions)
        rows = {}
        for name, x in (("bicubic", bicubic), ("diffusion", diffused)):
            verdicts, _ = score(x, captions)
            rows[name] = {"psnr_db": float(psnr(x, gt).mean()),
                          "verdict_agreement": sum(a == b for a, b in zip(verdicts, truth)) / len(truth),
                          "scorer_accuracy": sum(verdicts) / len(verdicts)}
        report["upsampler"] = {"model": args.upsampler, "n": args.n_upsample, "steps": args.up_steps,
                               "from": lo_size, "to": hi_size, "seconds_per_image": up_seconds, **rows}
        print(f"\nupsampler {lo_size} -> {hi_size} px, {args.n_upsample} test images, {args.up_steps} DDIM steps")
        print(f"{'method':<11}{'PSNR dB':>9}{'verdict agrees':>16}{'scorer acc':>12}")
        for name, r in rows.items():
            print(f"{name:<11}{r['psnr_db']:>9.2f}{r['verdict_agreement']:>16.3f}{r['scorer_accuracy']:>12.3f}")

    # ----- speed ---------------------------------------------------------------------------------------
    with torch.enable_grad():
        def decoder_batch():
            b = RECIPES["tiny"].train.batch_size
            images = torch.stack([data[i % args.n][0] for i in range(b)])
            z_i, caption = decoder_conditioning(decoder, clip, images, [data[i % args.n][1] for i in range(b)])
            return {"n": b, "loss_fn": lambda g: decoder.loss(images=images, image_embedding=z_i, generator=g,
                                                              **caption)}
        speed = {"decoder": {"train_samples_per_s": train_speed(decoder, decoder_batch),
                             "sample_seconds_per_image": report["reconstruction"]["seconds_per_image"]}}
        if args.upsampler:
            def up_batch():
                b = RECIPES["tiny-up-128"].train.batch_size
                images = torch.stack([hi_data[i % args.n_upsample][0] for i in range(b)])
                return {"n": b, "loss_fn": lambda g: up.loss(images=images, generator=g)}
            speed["upsampler"] = {"train_samples_per_s": train_speed(up, up_batch),
                                  "sample_seconds_per_image": report["upsampler"]["seconds_per_image"]}
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    report["speed"] = speed | {"peak_rss_mb_whole_benchmark": peak_mb}
    print(f"\n{'stage':<11}{'train samples/s':>16}{'s/image sampled':>17}   ({args.threads} threads; peak RSS of "
          f"this process {peak_mb:.0f} MB)")
    for name, s in speed.items():
        print(f"{name:<11}{s['train_samples_per_s']:>16.1f}{s['sample_seconds_per_image']:>17.3f}")
    write_report(args.out, report)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
