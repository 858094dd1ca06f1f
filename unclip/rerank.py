"""CLIP re-ranking: draw several candidate images per request and keep the one CLIP rates closest to the caption.

DALL-E 1 samples this way (Ramesh et al. 2021, §2.6: 512 samples re-ranked by a pretrained contrastive model);
unCLIP's own sampler re-ranks only its prior's z_i (best-of-2, §2.2, which is `PipelineConfig.best_of`). This is
the same idea one stage later, on pixels, with the pipeline's own CLIP: the score of a candidate is
cos(CLIP image embedding, z_t of its caption). It costs the prior and the decoder K times over; the upsamplers
run once, on the chosen image.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .clip import CLIP


@torch.no_grad()
def clip_image_embeddings(clip: CLIP, images: torch.Tensor) -> torch.Tensor:
    """Unit CLIP image embeddings (B, E) of images (B, 3, S, S) in [-1, 1]; images of another side than the CLIP
    reads are resized to it (bicubic, antialiased) first."""
    size = clip.config.image_size
    if images.shape[-1] != size or images.shape[-2] != size:
        images = F.interpolate(images, size=(size, size), mode="bicubic", antialias=True,
                               align_corners=False).clamp(-1, 1)
    return F.normalize(clip.encode_image_pixels(images), dim=-1)  # (B, E)


@torch.no_grad()
def clip_scores(clip: CLIP, images: torch.Tensor, text_embedding: torch.Tensor) -> torch.Tensor:
    """cos(image embedding, text embedding) (B,) for images (B, 3, S, S) in [-1, 1] and unit z_t (B, E)."""
    if images.shape[0] != text_embedding.shape[0]:
        raise ValueError(f"{images.shape[0]} images but {text_embedding.shape[0]} text embeddings")
    return (clip_image_embeddings(clip, images) * F.normalize(text_embedding, dim=-1)).sum(-1)


def pick_best(scores: torch.Tensor, *, candidates: int) -> torch.Tensor:
    """Index into the flat batch of the highest score in each run of `candidates` consecutive entries: (B / K,)."""
    if candidates < 1 or scores.shape[0] % candidates:
        raise ValueError(f"{scores.shape[0]} scores do not split into groups of {candidates} candidates")
    groups = scores.view(-1, candidates)  # (B / K, K)
    return groups.argmax(dim=1) + torch.arange(groups.shape[0], device=scores.device) * candidates
