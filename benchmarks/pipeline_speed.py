"""How fast does the shipped pipeline sample, and what would a 64 px base cost? (issue 8: under 0.5 s per 64 px
image at batch 16, at most 35 network evaluations in all stages, peak RSS under 2 GiB)

For each base size: `pipe(captions, upsample=False)` on the first --n test captions at batch --batch, one warm-up
call, then the median of --repeats timed calls, in seconds per image. The model's own base size runs its trained
weights. A larger --base-size runs the same decoder (and guide, and distilled decoder) built at that size with
random weights, the attention at the same levels (resolutions scaled with the image): what the pipeline would cost
with a base of that size, since sampling time does not depend on the weights' values. The prior and CLIP re-ranking
are the model's at every size. Peak RSS is the process's (ru_maxrss), read after each size. Prints a table and
writes JSON.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/pipeline_speed.py --model models/shapes-tiny --base-size 64
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time
from pathlib import Path

import torch

from unclip.decoder.decoder import Decoder
from unclip.eval.harness import decoder_guidance, nfe_per_image
from unclip.pipeline import UnCLIP
from unclip.world import sample_scene
from report import write_report


def resized(decoder: Decoder, size: int) -> Decoder:
    """The decoder's architecture at base `size` (random weights), attending at the same levels."""
    unet = decoder.config.unet
    factor = size / unet.image_size
    if factor != int(factor) or factor < 1:
        raise ValueError(f"--base-size {size} must be a whole multiple of the model's {unet.image_size} px")
    attention = tuple(int(r * factor) for r in unet.attention_resolutions)
    config = decoder.config.with_(unet=unet.with_(image_size=size, attention_resolutions=attention))
    return Decoder(config).eval()


def time_sampling(pipe: UnCLIP, captions: list[str], *, repeats: int) -> list[float]:
    pipe(captions[:2], upsample=False)  # warm-up: first-call allocations
    times = []
    for r in range(repeats):
        start = time.perf_counter()
        pipe(captions, upsample=False, seed=r)
        times.append((time.perf_counter() - start) / len(captions))
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="models/shapes-tiny", help="a pipeline directory")
    parser.add_argument("--n", type=int, default=16, help="test captions, sampled as one batch")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls; the median is reported")
    parser.add_argument("--base-size", type=int, nargs="*", default=[],
                        help="extra base sizes to time with the same architecture at random weights (e.g. 64)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "pipeline_speed.json"))
    args = parser.parse_args()
    for name in ("n", "repeats", "threads"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    pipe = UnCLIP.from_pretrained(args.model)
    captions = [sample_scene("test", i).caption for i in range(args.n)]
    trained = pipe.decoder.config.image_size
    rows = []
    for size in [trained, *args.base_size]:
        if size != trained:
            guide = None if pipe.decoder_guide is None else resized(pipe.decoder_guide, size)
            student = None if pipe.decoder_distilled is None else resized(pipe.decoder_distilled, size)
            pipe = UnCLIP(clip=pipe.clip, decoder=resized(pipe.decoder, size), prior=pipe.prior,
                          ar_prior=pipe.ar_prior, config=pipe.config, decoder_guide=guide, decoder_distilled=student,
                          judge=pipe.judge)
        times = time_sampling(pipe, captions, repeats=args.repeats)
        rows.append({"base_size": size, "weights": "trained" if size == trained else "random",
                     "seconds_per_image": statistics.median(times), "seconds_per_image_all": times,
                     "decoder_parameters": sum(p.numel() for p in pipe.decoder.parameters()),
                     "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20})
    nfe = nfe_per_image(pipe, "diffusion", upsample=False)

    print(f"model {args.model}: {args.n} test captions at batch {args.n}, {args.threads} thread(s), median of "
          f"{args.repeats}; {nfe} network evaluations per image ({pipe.config.candidates} candidates, decoder "
          f"{decoder_guidance(pipe)})")
    print("| base px | weights | s / image | decoder parameters | peak RSS (GiB) |")
    print("|--:|---|--:|--:|--:|")
    for row in rows:
        print(f"| {row['base_size']} | {row['weights']} | {row['seconds_per_image']:.3f} | "
              f"{row['decoder_parameters'] / 1e6:.2f}M | {row['peak_rss_gib']:.2f} |")
    path = write_report(args.out, {"model": args.model, "n": args.n, "threads": args.threads,
                                   "repeats": args.repeats, "network_evaluations_per_image": nfe,
                                   "decoder_guidance": decoder_guidance(pipe), "rows": rows})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
