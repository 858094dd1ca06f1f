"""Precomputed CLIP embeddings in .npy shards, so the prior and decoder can train without running CLIP.

Layout (clip-retrieval's): DIR/img_emb/img_emb_0.npy, DIR/text_emb/text_emb_0.npy, ... each (n_i, D)
float16 or float32, shards aligned by sorted name and row. Shards are memory-mapped, not read whole.
A shard pair that is unreadable or whose row counts differ is skipped and counted (`bad_shards`).
"""

from __future__ import annotations

import os
from bisect import bisect_right
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset


class EmbeddingShards(Dataset):
    def __init__(self, root: str | os.PathLike):
        root = Path(root)
        images, texts = sorted((root / "img_emb").glob("*.npy")), sorted((root / "text_emb").glob("*.npy"))
        if not images or len(images) != len(texts):
            raise FileNotFoundError(f"{root} needs img_emb/*.npy and text_emb/*.npy in equal numbers "
                                    f"(found {len(images)} and {len(texts)})")
        self.arrays: list[tuple[np.ndarray, np.ndarray]] = []
        self.bad_shards: list[str] = []
        for image_path, text_path in zip(images, texts):
            try:
                image, text = np.load(image_path, mmap_mode="r"), np.load(text_path, mmap_mode="r")
                if image.ndim != 2 or image.shape != text.shape:
                    raise ValueError(f"shapes {image.shape} and {text.shape} do not pair up")
            except (ValueError, OSError, EOFError) as error:
                self.bad_shards.append(f"{image_path.name}/{text_path.name}: {error}")
                continue
            self.arrays.append((image, text))
        if not self.arrays:
            raise ValueError(f"no readable embedding shards in {root}")
        self.starts = np.cumsum([0] + [len(a) for a, _ in self.arrays]).tolist()
        self.dim = self.arrays[0][0].shape[1]

    def __len__(self) -> int:
        return self.starts[-1]

    def __getitem__(self, i: int) -> dict:
        shard = bisect_right(self.starts, i) - 1
        row = i - self.starts[shard]
        image, text = self.arrays[shard]
        return {"image_embedding": torch.from_numpy(np.array(image[row], dtype=np.float32)),
                "text_embedding": torch.from_numpy(np.array(text[row], dtype=np.float32))}
