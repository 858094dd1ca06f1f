"""CLIP re-ranking: draw several candidate images per request and keep the one CLIP rates closest to the caption.

DALL-E 1 samples this way (Ramesh et al. 2021, §2.6: 512 samples re-ranked by a pretrained contrastive model);
unCLIP's own sampler re-ranks only its prior's z_i (best-of-2, §2.2, which is `PipelineConfig.best_of`). This is
the same idea one stage later, on pixels, with the pipeline's own CLIP: the score of a candidate is
cos(CLIP image embedding, z_t of its caption). It costs the prior and the decoder K times over; the upsamplers
run once, on the chosen image.

A pipeline with a judge stage (unclip/judge: an image-text matching cross-encoder trained on near-miss captions) may
score candidates by the judge's match logit instead (PipelineConfig.judge): the CLIP's text embedding barely tells
"A left of B" from "B left of A", the judge reads the words against the image's grid.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .clip import CLIP
from .judge import Judge


def _at_clip_size(clip: CLIP, images: torch.Tensor) -> torch.Tensor:
    """Images (B, 3, S, S) in [-1, 1] at the side the CLIP reads: resized (bicubic, antialiased) where they differ."""
    size = clip.config.image_size
    if images.shape[-2:] != (size, size):
        images = F.interpolate(images, size=(size, size), mode="bicubic", antialias=True,
                               align_corners=False).clamp(-1, 1)
    return images


@torch.no_grad()
def clip_image_embeddings(clip: CLIP, images: torch.Tensor) -> torch.Tensor:
    """Unit CLIP image embeddings (B, E) of images (B, 3, S, S) in [-1, 1]; images of another side than the CLIP
    reads are resized to it (bicubic, antialiased) first."""
    return F.normalize(clip.encode_image_pixels(_at_clip_size(clip, images)), dim=-1)  # (B, E)


@torch.no_grad()
def clip_scores(clip: CLIP, images: torch.Tensor, text_embedding: torch.Tensor) -> torch.Tensor:
    """cos(image embedding, text embedding) (B,) for images (B, 3, S, S) in [-1, 1] and unit z_t (B, E)."""
    if images.shape[0] != text_embedding.shape[0]:
        raise ValueError(f"{images.shape[0]} images but {text_embedding.shape[0]} text embeddings")
    return (clip_image_embeddings(clip, images) * F.normalize(text_embedding, dim=-1)).sum(-1)


@torch.no_grad()
def judge_scores(judge: Judge, clip: CLIP, images: torch.Tensor, tokens: torch.Tensor, *,
                 batch: int = 256) -> torch.Tensor:
    """The judge's match logits (B,) for images (B, 3, S, S) in [-1, 1] and their captions' token ids (B, T), read
    through the pipeline's CLIP; images of another side than the CLIP reads are resized to it first (bicubic,
    antialiased), as for clip_scores."""
    if images.shape[0] != tokens.shape[0]:
        raise ValueError(f"{images.shape[0]} images but {tokens.shape[0]} captions")
    images = _at_clip_size(clip, images)
    parts = [judge.score(clip, images=images[i:i + batch], tokens=tokens[i:i + batch])
             for i in range(0, len(images), batch)]
    return torch.cat(parts) if parts else images.new_zeros(0)


def pick_best(scores: torch.Tensor, *, candidates: int) -> torch.Tensor:
    """Index into the flat batch of the highest score in each run of `candidates` consecutive entries: (B / K,)."""
    if candidates < 1 or scores.shape[0] % candidates:
        raise ValueError(f"{scores.shape[0]} scores do not split into groups of {candidates} candidates")
    groups = scores.view(-1, candidates)  # (B / K, K)
    return groups.argmax(dim=1) + torch.arange(groups.shape[0], device=scores.device) * candidates
