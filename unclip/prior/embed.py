"""Training data for the priors: (caption tokens, z_t, z_i) triples through a frozen CLIP, computed once.

A prior trains for many epochs on the same pairs, so they are embedded once and kept in the run
directory (embeddings.safetensors, written atomically); CLIP's per-token text states are recomputed per
batch from the stored tokens (storing them would take T times the space). Precomputed embedding shards
(img_emb/, text_emb/) without captions train the prior on z_t alone: their token rows are empty.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from ..clip import CLIP
from ..data import collate_image_caption
from ..data.embeddings import EmbeddingShards
from ..train.checkpoint import write_tensors


@torch.no_grad()
def embed_items(clip: CLIP, dataset: Dataset, *, n: int, first: int = 0, batch_size: int = 256,
                progress: bool = True, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """tokens (n, T) int32, text_embedding and image_embedding (n, E) unit-norm, for items first..first+n-1."""
    if clip.tokenizer is None:
        raise ValueError("the CLIP has no tokenizer attached")
    if first < 0 or first + n > len(dataset):
        raise ValueError(f"asked for items {first}..{first + n - 1} but the dataset holds {len(dataset)}")
    loader = DataLoader(torch.utils.data.Subset(dataset, range(first, first + n)), batch_size=batch_size,
                        collate_fn=collate_image_caption)
    parts: dict[str, list[torch.Tensor]] = {"tokens": [], "text_embedding": [], "image_embedding": []}
    for batch in tqdm(loader, desc="embedding", unit="batch", disable=not progress):
        tokens = clip.tokenizer(batch["caption"]).to(device)
        parts["tokens"].append(tokens.int().cpu())
        parts["text_embedding"].append(F.normalize(clip.encode_text_tokens(tokens), dim=-1).float().cpu())
        parts["image_embedding"].append(F.normalize(clip.encode_image_pixels(batch["image"].to(device)),
                                                    dim=-1).float().cpu())
    return {k: torch.cat(v) for k, v in parts.items()}


def cached_embeddings(path: str | os.PathLike, make) -> dict[str, torch.Tensor]:
    """Read `path` if it exists, else compute `make()` and write it atomically."""
    path = Path(path)
    if path.is_file():
        return load_file(str(path))
    tensors = make()
    write_tensors(path, tensors)
    return tensors


def from_shards(root: str | os.PathLike, *, context_length: int) -> dict[str, torch.Tensor]:
    """Precomputed (z_i, z_t) shards as training rows; their token rows are all zero (no caption known)."""
    shards = EmbeddingShards(root)
    rows = [shards[i] for i in range(len(shards))]
    return {"tokens": torch.zeros(len(rows), context_length, dtype=torch.int32),
            "text_embedding": F.normalize(torch.stack([r["text_embedding"] for r in rows]), dim=-1),
            "image_embedding": F.normalize(torch.stack([r["image_embedding"] for r in rows]), dim=-1)}


class EmbeddingRows(Dataset):
    """Rows of an embeddings dict as items {"tokens", "text_embedding", "image_embedding"}."""

    def __init__(self, tensors: dict[str, torch.Tensor]):
        lengths = {len(v) for v in tensors.values()}
        if len(lengths) != 1:
            raise ValueError(f"embedding tensors disagree in length: { {k: len(v) for k, v in tensors.items()} }")
        self.tensors = tensors

    def __len__(self) -> int:
        return len(self.tensors["image_embedding"])

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {k: v[i] for k, v in self.tensors.items()}


@torch.no_grad()
def text_conditioning(clip: CLIP, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """CLIP's token states (B, T, W) and mask (B, T) for stored tokens; all-zero rows (no caption) get zero
    states and a mask holding position 0 only."""
    tokens = tokens.long()
    states, mask = clip.encode_text_sequence(tokens)
    empty = tokens.eq(0).all(dim=1)  # (B,)
    if empty.any():
        states = torch.where(empty[:, None, None], torch.zeros_like(states), states)
        mask = torch.where(empty[:, None], torch.arange(mask.shape[1], device=mask.device)[None] == 0, mask)
    return states, mask
