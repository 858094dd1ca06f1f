"""Training throughput per stage on this machine: samples/s of the engine's optimizer steps.

Runs each stage's preset for a few warm-up steps, then times `--steps` more, in a temporary run
directory (data loading, forward, backward and the optimizer step included; checkpoints excluded).
Stages so far: clip. Prints a table and writes benchmarks/results/train_throughput.json.

    .venv/bin/python benchmarks/train_throughput.py --threads 2
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import tempfile
import time
from pathlib import Path

import torch

from unclip.clip import CLIP
from unclip.clip.train import RECIPES, clip_loss, tokenizer_for
from unclip.data import collate_image_caption
from unclip.data.sources import ShapesItems
from unclip.train import Trainer
from report import write_report


def clip_trainer(preset: str, run_dir: Path, device: str) -> Trainer:
    recipe = RECIPES[preset]
    tokenizer = tokenizer_for(run_dir, recipe)
    config = recipe.model.with_(vocab_size=tokenizer.vocab_size)
    train = dataclasses.replace(recipe.train, checkpoint_every=10**9, log_every=10**9)
    return Trainer(model=CLIP(config), loss_fn=clip_loss(tokenizer), dataset=ShapesItems(
        "train", size=config.image_size, negatives=recipe.negatives), config=train, run_dir=run_dir,
        model_config=config.to_dict(), collate_fn=collate_image_caption, device=device, progress=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "train_throughput.json"))
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = []
    for stage, preset in [("clip", "tiny")]:
        with tempfile.TemporaryDirectory() as tmp:
            trainer = clip_trainer(preset, Path(tmp), args.device)
            trainer.fit(args.warmup)
            start = time.perf_counter()
            trainer.fit(args.warmup + args.steps)
            seconds = time.perf_counter() - start
        batch = trainer.config.batch_size * trainer.config.grad_accum
        params = sum(p.numel() for p in trainer.module.parameters())
        rows.append({"stage": stage, "preset": preset, "params_m": params / 1e6, "batch": batch,
                     "samples_per_s": args.steps * batch / seconds, "s_per_step": seconds / args.steps})
    print(f"{'stage':<8}{'preset':<8}{'params':>9}{'batch':>7}{'samples/s':>11}{'s/step':>8}")
    for r in rows:
        print(f"{r['stage']:<8}{r['preset']:<8}{r['params_m']:>8.2f}M{r['batch']:>7}{r['samples_per_s']:>11.1f}"
              f"{r['s_per_step']:>8.2f}")
    report = {"benchmark": "train_throughput", "device": args.device, "threads": torch.get_num_threads(),
              "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}", "rows": rows}
    write_report(args.out, report)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
