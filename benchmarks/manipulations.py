"""Do the paper's manipulations do what they say? (issue 8: variations keep the scene, text diffs edit it)

- Variations (unCLIP §3.1): for N real test images, K variations each (DDIM inversion to x_T, decoded with
  eta > 0). Reported: how often the scorer calls a variation correct against its source's caption, over
  all sources and over the sources whose eta = 0 reconstruction the scorer calls correct (a "correct
  image" of the decoder's own: there the latent holds the scene, and the question is whether eta keeps
  it); and how far variations differ from each other (RMS pixel distance, 0..1 scale, mean over pairs), for
  each eta of --eta and decoding guidance of --guidance.
- Text diff (§3.3): real single red objects, old caption "a red SHAPE", new "a blue SHAPE", 5 frames,
  theta 0 .. max_theta. Reported: how often the last frame's object is parsed as blue (the colour flip),
  how often it is scored correct for "a blue SHAPE", and how often frame 0 still shows a red object.
Images are scored at the decoder's size (the upsampler does not change what the scorer reads and costs
seconds per image). Prints a table and writes benchmarks/results/manipulations.json.

    .venv/bin/python benchmarks/manipulations.py --model models/shapes-tiny --n 50 --k 4
"""

from __future__ import annotations

import argparse
import itertools
import time
from pathlib import Path

import torch
from tqdm import tqdm

from unclip.data.images import to_pil
from unclip.manipulate import MANIPULATION_GUIDANCE, decode_latent, encode_images, text_diff
from unclip.pipeline import UnCLIP
from unclip.world import render, sample_scene, score_image
from unclip.world.parse import parse_image
from report import write_report


def pairwise_rms(images: torch.Tensor) -> float:
    """Mean RMS distance between distinct pairs of (K, 3, S, S) images in [-1, 1], on a 0..1 pixel scale."""
    pairs = list(itertools.combinations(range(len(images)), 2))
    return sum(float(((images[a] - images[b]) / 2).pow(2).mean().sqrt()) for a, b in pairs) / len(pairs)


def single_red_scenes(n: int) -> list:
    out, i = [], 0
    while len(out) < n:
        scene = sample_scene("test", i)
        if scene.form == "single" and scene.objects[0].colour == "red":
            out.append(scene)
        i += 1
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="models/shapes-tiny")
    parser.add_argument("--n", type=int, default=50, help="source images for variations")
    parser.add_argument("--k", type=int, default=4, help="variations per source image")
    parser.add_argument("--first", type=int, default=0,
                        help="index of the first test scene used as a source (to check a choice on other sources)")
    parser.add_argument("--eta", type=float, nargs="+", default=[0.8],
                        help="DDIM eta for the variations; several values give a sweep (same sources and seeds)")
    parser.add_argument("--guidance", type=float, nargs="+", default=[MANIPULATION_GUIDANCE],
                        help="guidance scale the variations decode at (the inversion is always unguided); several "
                        "values give a sweep")
    parser.add_argument("--n-diff", type=int, default=30, help="red single-object images for the text diff")
    parser.add_argument("--max-theta", type=float, default=0.5)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "manipulations.json"))
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    pipe = UnCLIP.from_pretrained(args.model)
    size = pipe.decoder.config.image_size
    started = time.time()

    # One inversion per source (what manipulate.variations does), decoded as it decodes at eta = 0 (the
    # reconstruction) and K times at each eta of the sweep, from the same seed.
    grid = [(eta, g) for g in sorted(set(args.guidance)) for eta in sorted(set(args.eta))]
    kept = {cell: 0 for cell in grid}
    kept_of_good = {cell: 0 for cell in grid}
    spreads = {cell: [] for cell in grid}
    n_good = 0
    for i in tqdm(range(args.first, args.first + args.n), desc="variations"):
        scene = sample_scene("test", i)
        z_i, x_T = encode_images(pipe, [render(scene, size)])
        recon = decode_latent(pipe, z_i, x_T.clone(), eta=0.0)
        good = score_image(to_pil(recon[0]), scene.caption).correct
        n_good += good
        for cell in grid:
            generator = torch.Generator(pipe.device).manual_seed(i)
            images = decode_latent(pipe, z_i.expand(args.k, -1), x_T.expand(args.k, -1, -1, -1).clone(), eta=cell[0],
                                   generator=generator, guidance_scale=cell[1])
            right = sum(score_image(to_pil(im), scene.caption).correct for im in images)
            kept[cell] += right
            kept_of_good[cell] += right if good else 0
            spreads[cell].append(pairwise_rms(images))
    var = {"sources": args.n, "first_source": args.first, "k": args.k, "reconstruction_correct": n_good / args.n,
           "sources_reconstructed_correctly": n_good,
           "sweep": [{"eta": c[0], "guidance": c[1], "kept_all": kept[c] / (args.n * args.k),
                      "kept_of_correct": kept_of_good[c] / (n_good * args.k) if n_good else None,
                      "pairwise_rms": sum(spreads[c]) / len(spreads[c])} for c in grid]}

    flipped, scored, starts_red = 0, 0, 0
    for scene in tqdm(single_red_scenes(args.n_diff), desc="text diff"):
        shape = scene.objects[0].shape
        strip = text_diff(pipe, render(scene, size), old=f"a red {shape}", new=f"a blue {shape}", steps=5,
                          max_theta=args.max_theta)
        first, last = parse_image(to_pil(strip[0])), parse_image(to_pil(strip[-1]))
        starts_red += len(first.objects) == 1 and first.objects[0].colour == "red"
        flipped += len(last.objects) == 1 and last.objects[0].colour == "blue"
        scored += score_image(to_pil(strip[-1]), f"a blue {shape}").correct
    diff = {"images": args.n_diff, "max_theta": args.max_theta, "colour_flipped": flipped / args.n_diff,
            "scored_correct": scored / args.n_diff, "first_frame_red": starts_red / args.n_diff}

    steps = pipe.config.manipulation_steps or pipe.config.decoder.steps
    print(f"model {args.model}: decoder {size} px, {steps} DDIM steps, inversion guidance "
          f"{MANIPULATION_GUIDANCE} (the manipulations'; the pipeline's: {pipe.config.decoder.guidance_scale})")
    print(f"variations, {args.n} real test images x {args.k}; eta=0 reconstruction scored correct "
          f"{var['reconstruction_correct']:.3f} ({n_good} sources)")
    print("| eta | guidance | scored correct, all sources | ... of correctly reconstructed sources (goal >= 0.80) | "
          "pairwise RMS |")
    print("|--:|--:|--:|--:|--:|")
    for row in var["sweep"]:
        kept_good = "n/a" if row["kept_of_correct"] is None else f"{row['kept_of_correct']:.3f}"
        print(f"| {row['eta']:g} | {row['guidance']:g} | {row['kept_all']:.3f} | {kept_good} | "
              f"{row['pairwise_rms']:.3f} |")
    print(f"text diff 'a red SHAPE' -> 'a blue SHAPE', {args.n_diff} images, theta 0..{args.max_theta}:")
    print(f"  frame 0 parsed red {diff['first_frame_red']:.3f}; last frame parsed blue {diff['colour_flipped']:.3f}; "
          f"scored correct as 'a blue SHAPE' {diff['scored_correct']:.3f}")
    report = {"benchmark": "manipulations", "model": args.model, "decoder_size": size, "ddim_steps": steps,
              "variations": var,
              "text_diff": diff, "seconds": round(time.time() - started, 1)}
    write_report(args.out, report)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
