"""Where along the noise does the decoder go wrong? Each test image is noised to timestep t0 (DDPM eq. 4) and the
decoder, given its true z_i + caption, denoises from there with DDIM; the scorer checks the result (issue 7).

From t0 = 999 (pure noise on the zero-terminal-SNR schedule) this is plain reconstruction, as benchmarks/decoder.py
measures it. The lower t0, the more of the image the noise leaves intact: first the background and the layout, then
colours, then the shapes' outlines. Where accuracy jumps between two t0, the decoder's mistakes are made in that band;
where it stays low even from a lightly noised image, the decoder cannot draw what it is shown. Prints a table and
writes benchmarks/results/decoder_bands.json.

    .venv/bin/python benchmarks/decoder_bands.py --decoder models/shapes-tiny/decoder --n 200 --threads 2

Every t0 and every decoder sees the same images and, batch k, the same noise (seed k).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from unclip.clip import load_clip
from unclip.decoder import load_decoder
from unclip.decoder.train import decoder_conditioning
from unclip.world import ShapesDataset
from decoder import attributes, batches, score
from report import write_report


def band_steps(t0: int, steps: int) -> list[int]:
    """`steps` DDIM timesteps from t0 down, evenly spaced, noisiest first (fewer when t0 is small)."""
    return sorted({round(t0 * (1 - j / steps)) for j in range(steps)}, reverse=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clip", default="models/shapes-tiny/clip", help="the frozen CLIP the decoder inverts")
    parser.add_argument("--decoder", nargs="+", default=["models/shapes-tiny/decoder"], help="decoder directories")
    parser.add_argument("--n", type=int, default=200, help="test images (default: 200)")
    parser.add_argument("--t0", type=int, nargs="+", default=[999, 900, 800, 700, 500, 300],
                        help="timesteps to start from (default: 999 900 800 700 500 300)")
    parser.add_argument("--steps", type=int, default=20, help="DDIM steps from each t0 (default: 20)")
    parser.add_argument("--guidance", type=float, default=3.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "decoder_bands.json"))
    args = parser.parse_args()
    clip = load_clip(args.clip)
    torch.set_num_threads(args.threads)
    rows = []
    print(f"{'decoder':<28}{'t0':>5}{'correct':>9}{'single':>8}{'two':>7}{'relation':>10}{'count':>7}{'colours':>9}"
          f"{'shapes':>8}{'centre err':>12}   ({args.n} test images, true z_i + caption)")
    for path in args.decoder:
        decoder = load_decoder(path)
        bad = [t for t in args.t0 if not 0 < t < decoder.diffusion.num_steps]
        if bad:
            parser.error(f"--t0 {bad}: each must be in 1..{decoder.diffusion.num_steps - 1}")
        data = ShapesDataset("test", size=decoder.config.image_size, length=args.n)
        items = [data[i] for i in range(args.n)]
        conditioned = []  # (images, z_i, caption inputs) per batch of 50, the same for every t0
        for sl in batches(args.n, 50):
            images = torch.stack([item[0] for item in items[sl]])
            conditioned.append((images, *decoder_conditioning(decoder, clip, images, [item[1] for item in items[sl]])))
        for t0 in args.t0:
            started, outs = time.perf_counter(), []
            for k, (images, z_i, caption) in enumerate(conditioned):
                g = torch.Generator().manual_seed(k)
                noise = torch.randn(images.shape, generator=g)
                x_t = decoder.diffusion.q_sample(images, torch.full((len(images),), t0), noise)  # DDPM eq. 4
                with torch.no_grad():
                    outs.append(decoder.sample(image_embedding=z_i, **caption, steps=band_steps(t0, args.steps),
                                               sampler="ddim", guidance_scale=args.guidance, x_T=x_t, generator=g))
            out = torch.cat(outs)
            verdicts, skills = score(out, [item[1] for item in items])
            parsed = attributes(out, [item[2] for item in items])
            rows.append({"decoder": path, "t0": t0, "correct": sum(verdicts) / len(verdicts), "skills": skills,
                         "attributes": parsed, "seconds": time.perf_counter() - started})
            skill = lambda name, width: f"{skills[name]:>{width}.3f}" if name in skills else f"{'-':>{width}}"
            print(f"{path[-27:]:<28}{t0:>5}{rows[-1]['correct']:>9.3f}{skill('single', 8)}{skill('two', 7)}"
                  f"{skill('relation', 10)}{parsed['count']:>7.3f}{parsed['colours']:>9.3f}{parsed['shapes']:>8.3f}"
                  f"{parsed['single_centre_error']:>12.3f}", flush=True)
    write_report(args.out, {"benchmark": "decoder_bands", "decoders": args.decoder, "clip": args.clip, "n": args.n,
                            "steps": args.steps, "guidance": args.guidance, "threads": args.threads, "rows": rows})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
