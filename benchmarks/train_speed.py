"""Two switches for the decoder's training speed on this CPU, measured on and off, each pair in its own process.

- malloc: glibc told to keep the memory a step frees (unclip/train/malloc.py; `unclip train` sets it unless
  --no-malloc-tuning), against glibc's defaults. It is process-wide, hence one process per row.
- channels-last: the UNet's convolutions in NHWC (UNetConfig.channels_last, `unclip train ... --channels-last`).

Every row trains the same decoder (a recipe's architecture, fresh weights) on the same batch of real scenes,
conditioned through the frozen CLIP, with AdamW, and times --steps steps after --warmup: forward, backward and the
optimizer, without data loading (the same for every row). Then it times the pipeline's decoder sampling (7 DDPM steps
at guidance 2) for a batch of 16. The rows run in --rounds interleaved rounds so that the machine's drift falls on
all of them; the table gives each row's median step over every round, and its ratio to the first row's. The first
losses show that the switches change only rounding. Prints a table and writes benchmarks/results/train_speed.json.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/train_speed.py --threads 2
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROWS = ({"malloc": False, "channels_last": False}, {"malloc": True, "channels_last": False},
        {"malloc": False, "channels_last": True}, {"malloc": True, "channels_last": True})


def worker(spec: dict) -> dict:
    """One row, in this process: the step and sampling times, minor page faults per step, peak RSS, first loss."""
    import torch

    from unclip.clip import load_clip
    from unclip.decoder import Decoder
    from unclip.decoder.train import RECIPES, decoder_conditioning
    from unclip.train.malloc import keep_freed_memory
    from unclip.world import ShapesDataset

    torch.set_num_threads(spec["threads"])
    tuned = keep_freed_memory() if spec["malloc"] else False
    recipe = RECIPES[spec["preset"]]
    clip = load_clip(spec["clip"])
    cfg = recipe.model
    cfg = cfg.with_(unet=cfg.unet.with_(clip_dim=clip.config.embed_dim, text_width=clip.config.text_width,
                                        channels_last=spec["channels_last"]))
    torch.manual_seed(0)
    decoder = Decoder(cfg)
    batch = spec["batch"] or recipe.train.batch_size
    data = ShapesDataset("train", size=cfg.image_size, length=batch)
    items = [data[i] for i in range(batch)]
    images = torch.stack([item[0] for item in items])
    z_i, caption = decoder_conditioning(decoder, clip, images, [item[1] for item in items])
    optimizer = torch.optim.AdamW(decoder.parameters(), lr=1e-4)
    times, losses = [], []
    faults = 0
    for step in range(spec["warmup"] + spec["steps"]):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        started = time.perf_counter()
        loss = decoder.loss(images=images, image_embedding=z_i, **caption,
                            generator=torch.Generator().manual_seed(step))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step >= spec["warmup"]:
            times.append(time.perf_counter() - started)
            faults += resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
        losses.append(loss.item())
    decoder.eval()
    sample_times = []
    with torch.no_grad():
        for k in range(spec["sample_reps"]):
            started = time.perf_counter()
            decoder.sample(image_embedding=z_i[:16], **{key: v[:16] for key, v in caption.items()}, sampler="ddpm",
                           steps=7, guidance_scale=2.0, generator=torch.Generator().manual_seed(k))
            sample_times.append(time.perf_counter() - started)
    return {"malloc_tuned": tuned, "step_seconds": times, "faults_per_step": faults / spec["steps"],
            "sample_seconds": sample_times, "first_loss": losses[0], "batch": batch,
            "parameters": sum(p.numel() for p in decoder.parameters()),
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def label(row: dict) -> str:
    return f"malloc {'tuned' if row['malloc'] else 'default'}, {'channels-last' if row['channels_last'] else 'NCHW'}"


def main() -> None:
    from report import write_report

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="tiny-16-rb1-sc-focus7-cap20-ft7",
                        help="the decoder recipe whose architecture and batch size train (default: the shipped one's)")
    parser.add_argument("--clip", default="models/shapes-tiny/clip", help="the frozen CLIP for the conditioning")
    parser.add_argument("--batch", type=int, default=None, help="batch size (default: the recipe's)")
    parser.add_argument("--steps", type=int, default=30, help="timed steps per row and round (default: 30)")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--sample-reps", type=int, default=3, help="timed sampling batches per row and round")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds over the four rows (default: 2)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "train_speed.json"))
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return
    runs = {i: [] for i in range(len(ROWS))}
    for round_ in range(args.rounds):
        for i, row in enumerate(ROWS):
            spec = dict(row, preset=args.preset, clip=args.clip, batch=args.batch, steps=args.steps,
                        warmup=args.warmup, sample_reps=args.sample_reps, threads=args.threads)
            done = subprocess.run([sys.executable, __file__, "--worker", json.dumps(spec)], check=True,
                                  capture_output=True, text=True)
            runs[i].append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(f"  round {round_ + 1}/{args.rounds}: {label(row)}: median step "
                  f"{statistics.median(runs[i][-1]['step_seconds']) * 1e3:.1f} ms", flush=True)
    table = []
    for i, row in enumerate(ROWS):
        step = statistics.median(t for run in runs[i] for t in run["step_seconds"])
        sample = statistics.median(t for run in runs[i] for t in run["sample_seconds"])
        batch = runs[i][0]["batch"]
        table.append(dict(row, malloc_tuned=runs[i][0]["malloc_tuned"], step_seconds=step,
                          samples_per_second=batch / step, sample_seconds_per_image=sample / 16,
                          faults_per_step=statistics.median(run["faults_per_step"] for run in runs[i]),
                          peak_rss_mib=max(run["peak_rss_mib"] for run in runs[i]),
                          first_loss=runs[i][0]["first_loss"], parameters=runs[i][0]["parameters"], batch=batch))
    base = table[0]
    print(f"\n{args.preset} ({base['parameters'] / 1e6:.2f}M parameters), batch {base['batch']}, {args.threads} "
          f"threads, {args.rounds} rounds x {args.steps} steps")
    print(f"{'setting':<34}{'samples/s':>10}{'ratio':>7}{'faults/step':>13}{'peak MiB':>10}{'sample s/img':>14}"
          f"{'ratio':>7}{'first loss':>13}")
    for row in table:
        print(f"{label(row):<34}{row['samples_per_second']:>10.1f}{base['step_seconds'] / row['step_seconds']:>7.2f}"
              f"{row['faults_per_step']:>13.0f}{row['peak_rss_mib']:>10.0f}{row['sample_seconds_per_image']:>14.4f}"
              f"{base['sample_seconds_per_image'] / row['sample_seconds_per_image']:>7.2f}{row['first_loss']:>13.6f}")
    write_report(args.out, {"benchmark": "train_speed", "preset": args.preset, "clip": args.clip,
                            "threads": args.threads, "rounds": args.rounds, "steps": args.steps, "rows": table})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
