"""How many examples does each CLIP image tower need to learn what a shape is?

A supervised proxy for the contrastive run, without the text tower: the tiny image tower (embed_dim 6) is
trained as a 6-way shape classifier on single-object train scenes (batch 128, AdamW lr 1e-3, 50 warm-up steps,
weight decay 0.1, seed 0) and its accuracy on 400 single-object test scenes is read every 50 steps. The towers:

- `patch`: CLIP's linear patch projection, 4 layers, random positions (the first tiny preset, `tiny-vit`);
- `patch-sincos`: the same, positions started from the 2-D sine-cosine table;
- `conv`: the `tiny` preset's image tower (a 3x3 conv stem with batch norm and ReLU, 2 layers, sine-cosine).

Prints a table and writes benchmarks/results/clip_stems.json.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/clip_stems.py          # about 9 minutes on one thread
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from unclip.clip.config import preset
from unclip.clip.model import CLIP
from unclip.world import ShapesDataset, sample_scene
from unclip.world.vocab import SHAPES
from report import write_report

LR = 1e-3
TOWERS = {"patch": preset("tiny-vit"), "patch-sincos": preset("tiny-vit").with_(vision_position_init="sincos"),
          "conv": preset("tiny")}


def single_objects(split: str, count: int, *, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(count, 3, S, S) images of the first `count` single-object scenes of `split`, and their shape labels."""
    found, index = [], 0  # (index, shape label)
    while len(found) < count:
        scene = sample_scene(split, index)
        if scene.form == "single":
            found.append((index, SHAPES.index(scene.objects[0].shape)))
        index += 1
    data = ShapesDataset(split, size=size, length=index)
    return torch.stack([data[i][0] for i, _ in found]), torch.tensor([label for _, label in found])


def train_tower(name: str, *, images, labels, test_images, test_labels, steps: int, batch: int = 128) -> dict:
    torch.manual_seed(0)
    tower = CLIP(TOWERS[name].with_(embed_dim=len(SHAPES))).visual
    optimizer = torch.optim.AdamW(tower.parameters(), lr=LR, weight_decay=0.1, betas=(0.9, 0.98))
    curve, started = {}, time.time()
    for step in range(1, steps + 1):
        rows = torch.arange((step - 1) * batch, step * batch) % len(images)  # each example seen about once
        for group in optimizer.param_groups:
            group["lr"] = LR * min(1.0, step / 50)
        loss = F.cross_entropy(tower(images[rows]), labels[rows])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 50 == 0:
            tower.eval()
            with torch.no_grad():
                curve[step] = float((tower(test_images).argmax(1) == test_labels).float().mean())
            tower.train()
    return {"test_accuracy_by_step": curve, "seconds_per_step": (time.time() - started) / steps,
            "parameters": sum(p.numel() for p in tower.parameters())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "clip_stems.json"))
    args = parser.parse_args()
    size = preset("tiny").image_size
    images, labels = single_objects("train", args.steps * 128, size=size)
    test_images, test_labels = single_objects("test", 400, size=size)
    results = {name: train_tower(name, images=images, labels=labels, test_images=test_images,
                                 test_labels=test_labels, steps=args.steps) for name in TOWERS}
    steps = list(results["patch"]["test_accuracy_by_step"])
    print(f"shape accuracy on 400 single-object test scenes after N steps of 128 (chance {1 / len(SHAPES):.3f})")
    print(f"{'tower':<14}{'params':>9}{'s/step':>8}" + "".join(f"{s:>7}" for s in steps))
    for name, r in results.items():
        print(f"{name:<14}{r['parameters']:>9}{r['seconds_per_step']:>8.2f}"
              + "".join(f"{r['test_accuracy_by_step'][s]:>7.3f}" for s in steps))
    write_report(args.out, {"benchmark": "clip_stems", "steps": args.steps, "batch": 128, "towers": results,
                            "threads": torch.get_num_threads()})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
