"""Periodic sample grids: a Trainer hook that draws images for fixed captions and writes a captioned PNG."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from PIL import Image

from ..grid import captioned_grid

SampleFn = Callable[[torch.nn.Module, Sequence[str], torch.Generator], Sequence[Image.Image]]


def sample_grid_hook(sample_fn: SampleFn, captions: Sequence[str], *, seed: int = 0, columns: int | None = None):
    """A hook for Trainer(hooks=[...]) that writes RUN_DIR/samples/step-NNNNNNNN.png.

    `sample_fn(model, captions, generator)` returns one PIL image per caption; it gets the EMA weights
    when the run keeps them, and a generator seeded the same every time, so grids of successive steps
    show the same noise and differ only by training.
    """
    def hook(trainer) -> None:
        model = trainer.ema.shadow if trainer.ema is not None else trainer.module
        was_training = model.training
        model.eval()
        with torch.no_grad():
            images = sample_fn(model, list(captions), torch.Generator().manual_seed(seed))
        model.train(was_training)
        out = trainer.run_dir / "samples"
        out.mkdir(parents=True, exist_ok=True)
        captioned_grid(list(images), list(captions), columns=columns).save(out / f"step-{trainer.step:08d}.png")

    return hook
