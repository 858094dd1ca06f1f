"""Data for training: the Shapes world, Emoji, caption folders, tar shards, precomputed embeddings."""

from .collate import collate_embeddings, collate_image_caption
from .embeddings import EmbeddingShards
from .emoji import EmojiDataset
from .folder import CaptionFolder
from .images import load_image, to_tensor
from .sampler import ResumableBatchSampler
from .shards import TarShards
from .sources import ShapesItems, make_dataset

__all__ = [
    "CaptionFolder", "EmbeddingShards", "EmojiDataset", "ResumableBatchSampler", "ShapesItems", "TarShards",
    "collate_embeddings", "collate_image_caption", "load_image", "make_dataset", "to_tensor",
]
