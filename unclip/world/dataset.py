"""The Shapes world as a torch Dataset: (image tensor, caption, scene), rendered on the fly."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from .render import render_array
from .scene import Scene, sample_scene
from .vocab import check_image_size, check_split


class ShapesDataset(Dataset):
    """Scenes `start .. start + length - 1` of `split`, rendered at `size` pixels.

    Items are (image, caption, scene): image is a (3, size, size) float32 tensor in [-1, 1]
    (the range the diffusion stages work in), caption the scene's caption string.
    Use `collate` as the DataLoader's collate_fn to batch them.
    """

    def __init__(self, split: str = "train", *, size: int = 64, length: int = 10_000, start: int = 0):
        self.split = check_split(split)
        self.size = check_image_size(size)
        if length < 1 or start < 0:
            raise ValueError(f"need length >= 1 and start >= 0, got length={length}, start={start}")
        self.length, self.start = length, start

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> tuple[torch.Tensor, str, Scene]:
        if not -self.length <= i < self.length:
            raise IndexError(f"index {i} out of range for a dataset of {self.length} scenes")
        scene = sample_scene(self.split, self.start + (i % self.length))
        return scene_tensor(scene, self.size), scene.caption, scene


def scene_tensor(scene: Scene, size: int) -> torch.Tensor:
    """`scene` rendered as a (3, size, size) float32 tensor in [-1, 1]."""
    pixels = render_array(scene, size)  # (H, W, 3) uint8
    return torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1))).float() / 127.5 - 1.0  # (3, H, W)


def collate(batch: list[tuple[torch.Tensor, str, Scene]]) -> tuple[torch.Tensor, list[str], list[Scene]]:
    """Stack images into (B, 3, H, W); keep captions and scenes as lists."""
    images, captions, scenes = zip(*batch)
    return torch.stack(images), list(captions), list(scenes)
