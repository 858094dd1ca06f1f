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


@torch.no_grad()
def marginal_class_scores(image: torch.Tensor, weights: torch.Tensor, *, logit_scale: float) -> torch.Tensor:
    """(B, C) log p(class | image) summed over contexts: `image` (B, E), `weights` (C, K, E) one unit vector per
    class and context (say a shape in each of K colours). The classifier is the softmax over all C*K compound
    classes at CLIP's own temperature, and a class's probability the sum over its contexts, p(c|x) = sum_k p(c, k|x).
    Averaging a class's prompt embeddings instead (`classifier_weights`) mixes in K-1 prompts of the wrong context,
    whose similarities are noise that can outvote the one that matches the image."""
    if weights.dim() != 3 or image.dim() != 2 or weights.shape[-1] != image.shape[-1]:
        raise ValueError(f"expected image (B, E) and weights (C, K, E), got {tuple(image.shape)} and "
                         f"{tuple(weights.shape)}")
    logits = logit_scale * F.normalize(image, dim=-1) @ F.normalize(weights, dim=-1).flatten(0, 1).t()  # (B, C*K)
    joint = logits.log_softmax(dim=-1).view(len(image), *weights.shape[:2])  # (B, C, K)
    return joint.logsumexp(dim=-1)


@torch.no_grad()
def classify_marginal(model: CLIP, pixels: torch.Tensor, prompts: Sequence[Sequence[str]]) -> torch.Tensor:
    """(B,) predicted class indices for images in [-1, 1], each class given by K prompts, one per context (the same
    K for every class), marginalised over the contexts (`marginal_class_scores`)."""
    sizes = {len(row) for row in prompts}
    if len(sizes) != 1:
        raise ValueError(f"every class needs the same number of context prompts, got {sorted(sizes)}")
    text = model.encode_text([p for row in prompts for p in row]).view(len(prompts), sizes.pop(), -1)  # (C, K, E)
    return marginal_class_scores(model.encode_image_pixels(pixels), text, logit_scale=float(model.scale)).argmax(dim=-1)


def recall_at_k(query: torch.Tensor, keys: torch.Tensor, k: int = 1) -> float:
    """Share of queries (row i) whose own key (row i) is among the k most similar keys."""
    sims = F.normalize(query, dim=-1) @ F.normalize(keys, dim=-1).t()  # (N, N)
    top = sims.topk(k, dim=1).indices
    return float((top == torch.arange(len(query), device=top.device)[:, None]).any(dim=1).float().mean())
