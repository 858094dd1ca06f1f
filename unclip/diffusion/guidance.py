"""Classifier-free guidance (Ho & Salimans 2021; GLIDE, Nichol et al. 2021 §2.3) and the training-time
conditioning dropout it needs (unCLIP §2.1: drop z_i 10% and the caption 50% of the time)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from .gaussian import ModelFn


def classifier_free_guidance(
    model: Callable[..., torch.Tensor], *, scale: float, cond: dict[str, torch.Tensor],
    uncond: dict[str, torch.Tensor], guided_channels: int | None = None,
) -> ModelFn:
    """Wrap `model(x, t, **conditioning)` as a denoiser `fn(x, t)` returning uncond + scale * (cond - uncond).

    Both branches run in one batch of 2B. With a learned variance, pass `guided_channels` (the mean's
    channel count on dim 1): only those are guided, the variance channels are the conditional ones.
    scale = 1 is the plain conditional model (one branch only); scale = 0 the unconditional one.
    """
    if set(cond) != set(uncond):
        raise ValueError(f"cond and uncond name different inputs: {sorted(cond)} vs {sorted(uncond)}")
    if scale < 0:
        raise ValueError(f"guidance scale must be >= 0, got {scale}")

    def guided(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if scale == 1:
            return model(x, t, **cond)
        if scale == 0:
            return model(x, t, **uncond)
        both = model(torch.cat([x, x]), torch.cat([t, t]), **{k: torch.cat([cond[k], uncond[k]]) for k in cond})
        c, u = both.chunk(2)  # (B, ...) each
        if guided_channels is None:
            return u + scale * (c - u)
        g = guided_channels
        mean = u[:, :g] + scale * (c[:, :g] - u[:, :g])
        return torch.cat([mean, c[:, g:]], dim=1)

    return guided


def dropout_mask(batch: int, p: float, *, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
    """(B,) bool: which samples lose their conditioning this step (each with probability p)."""
    if not 0 <= p <= 1:
        raise ValueError(f"dropout probability must be in [0, 1], got {p}")
    return torch.rand(batch, generator=generator, device=device) < p


def drop_condition(cond: torch.Tensor, null: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Replace the rows of `cond` (B, ...) where `mask` is True by `null` (a learned or zero embedding, shape (...))."""
    if mask.shape != cond.shape[:1]:
        raise ValueError(f"mask of shape {tuple(mask.shape)} for a batch of {cond.shape[0]}")
    keep = mask.reshape(-1, *([1] * (cond.ndim - 1)))
    return torch.where(keep, null.to(cond.dtype).expand_as(cond), cond)
