"""Uniform scalar quantisation, one range per coordinate (unCLIP §2.2: 1024 buckets per PCA component)."""

from __future__ import annotations

import torch
from torch import nn


class Quantizer(nn.Module):
    """Buckets of equal width over [low, high] per coordinate; values outside are clamped to the end buckets."""

    def __init__(self, dim: int, buckets: int):
        super().__init__()
        if buckets < 2:
            raise ValueError(f"need >= 2 buckets, got {buckets}")
        self.buckets = buckets
        self.register_buffer("low", torch.zeros(dim))
        self.register_buffer("high", torch.ones(dim))

    @staticmethod
    def fit(data: torch.Tensor, *, buckets: int, tail: float = 1e-3) -> Quantizer:
        """Ranges from the `tail` and 1 - `tail` quantiles of (N, D) data, so a few outliers do not widen them."""
        if data.ndim != 2:
            raise ValueError(f"Quantizer.fit needs (N, D) data, got shape {tuple(data.shape)}")
        q = Quantizer(data.shape[1], buckets)
        x = data.double()
        low, high = torch.quantile(x, tail, dim=0), torch.quantile(x, 1 - tail, dim=0)
        q.low.copy_(low.float())
        q.high.copy_(torch.maximum(high, low + 1e-6).float())
        return q

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """(N, D) values -> (N, D) long bucket indices in [0, buckets)."""
        u = (x - self.low) / (self.high - self.low)  # (N, D), in [0, 1] inside the range
        return (u * self.buckets).floor().long().clamp(0, self.buckets - 1)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """(N, D) bucket indices -> (N, D) bucket centres."""
        if codes.min() < 0 or codes.max() >= self.buckets:
            raise ValueError(f"codes must lie in [0, {self.buckets}), got [{int(codes.min())}, {int(codes.max())}]")
        return self.low + (codes.to(self.low.dtype) + 0.5) / self.buckets * (self.high - self.low)
