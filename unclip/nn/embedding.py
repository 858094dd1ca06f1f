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


def sincos_2d(grid: int, dim: int) -> torch.Tensor:
    """(grid*grid, dim) fixed 2-D position table, row-major: half the channels encode the row, half the column.

    The 2-D sine-cosine embedding of MAE (He et al. 2022) and MoCo v3 (Chen et al. 2021), built from the
    1-D table above with max_period 10,000.
    """
    if dim % 4:
        raise ValueError(f"a 2-D sine-cosine table needs dim divisible by 4, got {dim}")
    coords = torch.arange(grid, dtype=torch.float32)
    rows = timestep_embedding(coords, dim // 2)  # (grid, dim/2)
    return torch.cat([rows[:, None].expand(grid, grid, -1), rows[None].expand(grid, grid, -1)], dim=-1).reshape(
        grid * grid, dim)
