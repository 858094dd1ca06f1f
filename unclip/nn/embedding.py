"""Sinusoidal timestep embedding (Vaswani et al. 2017 §3.5, as used by DDPM/ADM for diffusion timesteps)."""

from __future__ import annotations

import math

import torch


def timestep_embedding(t: torch.Tensor, dim: int, *, max_period: float = 10_000.0) -> torch.Tensor:
    """(B,) timesteps (integer or fractional) -> (B, dim) embedding [cos(t f_i), sin(t f_i)], f_i geometric."""
    if dim < 2:
        raise ValueError(f"embedding dim must be >= 2, got {dim}")
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]  # (B, half)
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb

