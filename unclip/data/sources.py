"""`--data SPEC` -> a dataset. Every image source yields {"image": (3, S, S) in [-1, 1], "caption": str}.

    shapes[:SPLIT]      the Shapes world (default; split train, val, test or novel)
    emoji[:SPLIT]       Twemoji images with their names (optional extra; split train or test)
    folder:DIR          DIR/captions.jsonl + images
    shards:DIR|FILE     img2dataset-style .tar shards
    embeddings:DIR      precomputed CLIP embeddings (img_emb/, text_emb/ .npy shards)
"""

from __future__ import annotations

from torch.utils.data import Dataset

from ..world import ShapesDataset
from .embeddings import EmbeddingShards
from .emoji import EmojiDataset
from .folder import CaptionFolder
from .shards import TarShards

KINDS = ("shapes", "emoji", "folder", "shards", "embeddings")
SHAPES_LENGTH = 10_000_000  # the world is endless; a run draws scenes 0 .. N-1 of its split in order


class ShapesItems(Dataset):
    """The Shapes world in the common item format."""

    def __init__(self, split: str, *, size: int, length: int = SHAPES_LENGTH):
        self.world = ShapesDataset(split, size=size, length=length)

    def __len__(self) -> int:
        return len(self.world)

    def __getitem__(self, i: int) -> dict:
        image, caption, _ = self.world[i]
        return {"image": image, "caption": caption}


def make_dataset(spec: str, *, size: int = 64) -> Dataset:
    kind, _, arg = spec.partition(":")
    if kind == "shapes":
        return ShapesItems(arg or "train", size=size)
    if kind == "emoji":
        return EmojiDataset(arg or "train", size=size)
    if kind in ("folder", "shards", "embeddings") and not arg:
        raise ValueError(f"data source {spec!r} needs a path: '{kind}:PATH'")
    if kind == "folder":
        return CaptionFolder(arg, size=size)
    if kind == "shards":
        return TarShards(arg, size=size)
    if kind == "embeddings":
        return EmbeddingShards(arg)
    raise ValueError(f"unknown data source {spec!r}: expected one of {', '.join(KINDS)} (see --help)")
