"""Distances between two sets of samples in R^D (used to check samplers on known distributions)."""

from __future__ import annotations

import torch


def sliced_wasserstein(a: torch.Tensor, b: torch.Tensor, *, projections: int = 256, seed: int = 0) -> float:
    """Sliced 2-Wasserstein distance: sqrt of the mean over random unit directions of W_2^2 between the
    1-D projections (Rabin et al. 2011). a and b are (n, D) with the same n; float64 throughout."""
    if a.ndim != 2 or a.shape != b.shape:
        raise ValueError(f"need two (n, D) sets of the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    g = torch.Generator().manual_seed(seed)
    directions = torch.randn(a.shape[1], projections, generator=g, dtype=torch.float64)
    directions /= directions.norm(dim=0, keepdim=True)
    pa = torch.sort(a.double().cpu() @ directions, dim=0).values  # (n, P)
    pb = torch.sort(b.double().cpu() @ directions, dim=0).values
    return float(((pa - pb) ** 2).mean().sqrt())


def energy_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """Energy distance 2 E|X-Y| - E|X-X'| - E|Y-Y'| (Szekely & Rizzo 2013), V-statistic; zero iff equal laws."""
    a, b = a.double().cpu(), b.double().cpu()
    return float(2 * torch.cdist(a, b).mean() - torch.cdist(a, a).mean() - torch.cdist(b, b).mean())


def mode_weights(labels: torch.Tensor, k: int) -> torch.Tensor:
    """(k,) share of samples assigned to each mode."""
    return torch.bincount(labels, minlength=k).double() / len(labels)
