"""Classifier-free guidance (Ho & Salimans 2021; GLIDE, Nichol et al. 2021 §2.3), the training-time conditioning
dropout it needs (unCLIP §2.1: drop z_i 10% and the caption 50% of the time), and autoguidance (Karras et al. 2024),
which guides with a weaker model in place of the unconditional one."""

from __future__ import annotations

from collections.abc import Callable

import torch

from .gaussian import ModelFn


def classifier_free_guidance(
    model: Callable[..., torch.Tensor], *, scale: float, cond: dict[str, torch.Tensor],
    uncond: dict[str, torch.Tensor], guided_channels: int | None = None,
    interval: tuple[int, int] | None = None,
) -> ModelFn:
    """Wrap `model(x, t, **conditioning)` as a denoiser `fn(x, t)` returning uncond + scale * (cond - uncond).

    Both branches run in one batch of 2B, the conditional rows first. With a learned variance, pass
    `guided_channels` (the mean's channel count on dim 1): only those are guided, the variance channels are the
    conditional ones. scale = 1 is the plain conditional model (one branch only); scale = 0 the unconditional one.

    `interval` (lo, hi), in training timesteps: guide only rows with lo <= t <= hi and give the others the
    conditional output (Kynkäänniemi et al. 2024, "Applying guidance in a limited interval", §3: guidance off at
    the noisiest and the cleanest steps). A call whose rows all fall outside runs the conditional branch alone,
    one evaluation of B rows instead of 2B.
    """
    if set(cond) != set(uncond):
        raise ValueError(f"cond and uncond name different inputs: {sorted(cond)} vs {sorted(uncond)}")
    if scale < 0:
        raise ValueError(f"guidance scale must be >= 0, got {scale}")
    if interval is not None and not (len(interval) == 2 and 0 <= interval[0] <= interval[1]):
        raise ValueError(f"guidance interval must be (lo, hi) timesteps with 0 <= lo <= hi, got {interval!r}")

    def guided(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if scale == 1:
            return model(x, t, **cond)
        inside = None if interval is None else (t >= interval[0]) & (t <= interval[1])  # (B,)
        if inside is not None and not bool(inside.any()):
            return model(x, t, **cond)
        if scale == 0 and inside is None:
            return model(x, t, **uncond)
        both = model(torch.cat([x, x]), torch.cat([t, t]), **{k: torch.cat([cond[k], uncond[k]]) for k in cond})
        c, u = both.chunk(2)  # (B, ...) each
        g = c.shape[1] if guided_channels is None else guided_channels
        out = torch.cat([u[:, :g] + scale * (c[:, :g] - u[:, :g]), c[:, g:]], dim=1)
        if inside is None:
            return out
        return torch.where(inside.view(-1, *[1] * (c.ndim - 1)), out, c)  # mask (B, 1, ..., 1)

    return guided


def autoguidance(model: ModelFn, guide: ModelFn, *, scale: float, guided_channels: int | None = None,
                 interval: tuple[int, int] | None = None) -> ModelFn:
    """guide + scale * (model - guide): `model` pushed away from a weaker `guide` given the same conditioning
    (Karras et al. 2024, "Guiding a diffusion model with a bad version of itself", eq. 1 and §3: D_0 a smaller,
    less trained model of the same data). Both are denoisers fn(x, t) of one parameterisation on one schedule; x0,
    eps and v are affine in each other for given (x_t, t), so a combination whose weights sum to 1 means the same
    in any of them. `guided_channels` and `interval` as in classifier_free_guidance (outside the interval: `model`
    alone, the guide not run); scale = 1 is `model` alone."""
    if scale < 0:
        raise ValueError(f"guidance scale must be >= 0, got {scale}")
    if interval is not None and not (len(interval) == 2 and 0 <= interval[0] <= interval[1]):
        raise ValueError(f"guidance interval must be (lo, hi) timesteps with 0 <= lo <= hi, got {interval!r}")

    def guided(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        inside = None if interval is None else (t >= interval[0]) & (t <= interval[1])  # (B,)
        if scale == 1 or (inside is not None and not bool(inside.any())):
            return model(x, t)
        c, w = model(x, t), guide(x, t)  # (B, ...) each
        g = c.shape[1] if guided_channels is None else guided_channels
        out = torch.cat([w[:, :g] + scale * (c[:, :g] - w[:, :g]), c[:, g:]], dim=1)
        if inside is None:
            return out
        return torch.where(inside.view(-1, *[1] * (c.ndim - 1)), out, c)  # mask (B, 1, ..., 1)

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
