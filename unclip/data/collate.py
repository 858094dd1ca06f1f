"""Batching image-caption items, dropping the ones that could not be read (and counting them)."""

from __future__ import annotations

import torch


def collate_image_caption(items: list[dict | None]) -> dict:
    """{"image": (B, 3, S, S), "caption": [B strings], "skipped": how many items were unreadable}."""
    good = [item for item in items if item is not None]
    if not good:
        return {"image": torch.empty(0), "caption": [], "skipped": len(items)}
    batch = {"image": torch.stack([g["image"] for g in good]), "caption": [g["caption"] for g in good],
             "skipped": len(items) - len(good)}
    if "negatives" in good[0]:  # hard-negative captions, all items' lists concatenated
        batch["negatives"] = [n for g in good for n in g["negatives"]]
    if "negative_image" in good[0]:  # each item's image changed so that its caption is false: (B, 3, S, S)
        batch["negative_image"] = torch.stack([g["negative_image"] for g in good])
    return batch


def collate_embeddings(items: list[dict | None]) -> dict:
    """Stack every tensor field of embedding items; unreadable ones are dropped and counted."""
    good = [item for item in items if item is not None]
    out = {k: torch.stack([g[k] for g in good]) for k in (good[0] if good else {}) if torch.is_tensor(good[0][k])}
    return out | {"skipped": len(items) - len(good)}
