"""Zero-shot classification and retrieval with a CLIP (Radford et al. 2021 §3.1.4, as open_clip does it):
class names go through prompt templates, their text embeddings are averaged and re-normalised."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from .model import CLIP

TEMPLATES = ("a {}", "a picture of a {}", "an image of a {}", "a drawing of a {}")


@torch.no_grad()
def classifier_weights(model: CLIP, classnames: Sequence[str], templates: Sequence[str] = TEMPLATES) -> torch.Tensor:
    """(C, E) one unit vector per class: the normalised mean of its prompts' normalised embeddings."""
    rows = []
    for name in classnames:
        prompts = [t.format(name) for t in templates]
        rows.append(F.normalize(model.encode_text(prompts).mean(0), dim=-1))
    return torch.stack(rows)


@torch.no_grad()
def classify(model: CLIP, pixels: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """(B,) predicted class indices for images in [-1, 1]."""
    image = F.normalize(model.encode_image_pixels(pixels), dim=-1)
    return (image @ weights.t()).argmax(dim=-1)


def recall_at_k(query: torch.Tensor, keys: torch.Tensor, k: int = 1) -> float:
    """Share of queries (row i) whose own key (row i) is among the k most similar keys."""
    sims = F.normalize(query, dim=-1) @ F.normalize(keys, dim=-1).t()  # (N, N)
    top = sims.topk(k, dim=1).indices
    return float((top == torch.arange(len(query), device=top.device)[:, None]).any(dim=1).float().mean())
