"""Conditioning augmentation for the decoder's z_i (config.DecoderConfig.image_embedding_noise).

At sampling the decoder reads the prior's z_i, which sit at cosine about 0.946 to the true z_i of the images their
captions describe (the shipped prior, docs/priors.md); trained only on true z_i, it has never seen one that far off.
Noising the conditioning in training so the model learns to treat it as approximate is what Ho et al. 2022
("Cascaded Diffusion Models for High Fidelity Image Generation", §3) do for a cascade's low-resolution input.
"""

from __future__ import annotations

import math

import torch


def noised_embedding(z: torch.Tensor, sigma: float, *, generator: torch.Generator | None = None) -> torch.Tensor:
    """z (B, d) moved by isotropic Gaussian noise of total length about sigma * |z|, then scaled back to |z|:
    z' = |z| * u / |u| with u = z + sigma * |z| * e / sqrt(d), e ~ N(0, I) from `generator`. For large d the cosine
    of z' to z is about 1 / sqrt(1 + sigma^2); sigma = 0 returns z unchanged."""
    if z.ndim != 2:
        raise ValueError(f"z must be (B, d), got {tuple(z.shape)}")
    if not (sigma >= 0 and math.isfinite(sigma)):
        raise ValueError(f"sigma must be a finite number >= 0, got {sigma}")
    if sigma == 0:
        return z
    norm = z.norm(dim=-1, keepdim=True)  # (B, 1)
    noise = torch.randn(z.shape, generator=generator, device=z.device, dtype=z.dtype)
    moved = z + noise * (sigma * norm / math.sqrt(z.shape[-1]))  # (B, d)
    return moved * (norm / moved.norm(dim=-1, keepdim=True).clamp_min(torch.finfo(z.dtype).tiny))
