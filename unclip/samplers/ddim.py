"""DDIM (Song et al. 2021) sampling with eta >= 0, and its deterministic inversion x0 -> x_T.

Sampling, eq. 12: x_s = sqrt(ab_s) x0 + sqrt(1 - ab_s - sigma^2) eps + sigma z, with
sigma = eta * sqrt((1 - ab_s) / (1 - ab_t)) * sqrt(1 - ab_t / ab_s) (eq. 16); eta = 0 is the
deterministic ODE sampler, eta = 1 matches ancestral DDPM's variance. Inversion runs the eta = 0
update forwards (unCLIP §3: variations and interpolations start from the inverted x_T).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from ..diffusion.gaussian import GaussianDiffusion, ModelFn
from .common import Generators, Progress, alpha_bar, initial_noise, predict, randn, timesteps_for


@torch.no_grad()
def ddim_sample(
    model_fn: ModelFn, diffusion: GaussianDiffusion, shape_or_x: Sequence[int] | torch.Tensor, *,
    steps: int | str | Sequence[int] | None = 50, spacing: str | None = None, eta: float = 0.0,
    generator: Generators = None,
    threshold: str | None = None, progress: Progress | None = None, device=None, dtype=torch.float32,
) -> torch.Tensor:
    """Draw samples with DDIM over `steps` timesteps (one network evaluation each)."""
    if eta < 0:
        raise ValueError(f"DDIM eta must be >= 0, got {eta}")
    x = initial_noise(shape_or_x, generator, device=device, dtype=dtype)
    ts = timesteps_for(diffusion, steps, spacing)
    for i, t in enumerate(ts):
        s = ts[i + 1] if i + 1 < len(ts) else -1
        ab_t, ab_s = alpha_bar(diffusion, t), alpha_bar(diffusion, s)
        pred = predict(model_fn, diffusion, x, t, threshold)
        sigma = eta * math.sqrt((1 - ab_s) / (1 - ab_t) * (1 - ab_t / ab_s))
        x = math.sqrt(ab_s) * pred.x0 + math.sqrt(max(1 - ab_s - sigma ** 2, 0.0)) * pred.eps
        if sigma > 0:
            x = x + sigma * randn(x.shape, generator, device=x.device, dtype=x.dtype)
        if progress is not None:
            progress(i + 1, len(ts))
    return x


@torch.no_grad()
def ddim_invert(
    model_fn: ModelFn, diffusion: GaussianDiffusion, x0: torch.Tensor, *,
    steps: int | str | Sequence[int] | None = 50, spacing: str | None = None, fixed_point_iters: int = 0,
    progress: Progress | None = None,
) -> torch.Tensor:
    """Map data x0 to the x_T from which `ddim_sample(..., eta=0)` with the same steps returns it.

    Each step s -> t (t noisier) first takes the usual inversion step, which evaluates the model at
    the current point (x_s, s) (Song et al. 2021 §4.3; the first step evaluates the clean x0 at the
    least noisy timestep). The sampler's step t -> s evaluates at (x_t, t) instead, so the round trip
    is only approximate; `fixed_point_iters` > 0 refines x_t by solving the sampler's step exactly,
    x_t = (alpha_t / alpha_s) (x_s - sigma_s eps(x_t, t)) + sigma_t eps(x_t, t), by fixed-point
    iteration (Pan et al. 2023, "Effective Real Image Editing with Accelerated Iterative Diffusion
    Inversion"), one more network evaluation per iteration.
    """
    if fixed_point_iters < 0:
        raise ValueError(f"fixed_point_iters must be >= 0, got {fixed_point_iters}")
    ts = timesteps_for(diffusion, steps, spacing)[::-1]  # least noisy first
    x = x0
    for i, t in enumerate(ts):
        s = ts[i - 1] if i > 0 else -1
        ab_s, ab_t = alpha_bar(diffusion, s), alpha_bar(diffusion, t)
        eps = predict(model_fn, diffusion, x, max(s, ts[0]), None).eps
        # x0 from the current level s (for the clean start, ab_s = 1: x0 = x itself), then up to level t.
        x0 = (x - math.sqrt(1 - ab_s) * eps) / math.sqrt(ab_s)
        x_t = math.sqrt(ab_t) * x0 + math.sqrt(1 - ab_t) * eps
        for _ in range(fixed_point_iters):
            eps = predict(model_fn, diffusion, x_t, t, None).eps
            x_t = math.sqrt(ab_t / ab_s) * (x - math.sqrt(1 - ab_s) * eps) + math.sqrt(1 - ab_t) * eps
        x = x_t
        if progress is not None:
            progress(i + 1, len(ts))
    return x
