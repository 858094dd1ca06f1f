"""Ancestral sampling: DDPM Algorithm 2 (Ho et al. 2020), on any subset of the training timesteps.

Skipping steps respaces the process as Improved DDPM §4 does: between visited steps t > s the
step's beta is 1 - alpha_bar_t / alpha_bar_s, and the posterior q(x_s | x_t, x0) uses it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from ..diffusion.gaussian import GaussianDiffusion, ModelFn
from .common import Generators, Progress, alpha_bar, initial_noise, predict, randn, timesteps_for


@torch.no_grad()
def ddpm_sample(
    model_fn: ModelFn, diffusion: GaussianDiffusion, shape_or_x: Sequence[int] | torch.Tensor, *,
    steps: int | str | Sequence[int] | None = None, spacing: str | None = None, generator: Generators = None,
    variance: str = "small",
    threshold: str | None = None, progress: Progress | None = None, device=None, dtype=torch.float32,
) -> torch.Tensor:
    """Draw samples by ancestral sampling; one network evaluation per visited timestep.

    variance: 'small' (beta_tilde, the posterior's) or 'large' (beta) when the model's variance is
    fixed; a learned-range model's own variance is used whenever it has one.
    """
    if variance not in ("small", "large"):
        raise ValueError(f"unknown variance {variance!r}: expected 'small' or 'large'")
    x = initial_noise(shape_or_x, generator, device=device, dtype=dtype)
    ts = timesteps_for(diffusion, steps, spacing)
    for i, t in enumerate(ts):
        s = ts[i + 1] if i + 1 < len(ts) else -1
        ab_t, ab_s = alpha_bar(diffusion, t), alpha_bar(diffusion, s)
        pred = predict(model_fn, diffusion, x, t, threshold)
        beta = 1 - ab_t / ab_s
        # DDPM eq. 7 with the respaced beta: the mean of q(x_s | x_t, x0).
        mean = (math.sqrt(ab_s) * beta / (1 - ab_t)) * pred.x0 + (math.sqrt(1 - beta) * (1 - ab_s) / (1 - ab_t)) * x
        if s < 0:
            x = mean  # the last step adds no noise (DDPM Algorithm 2, z = 0 at t = 1)
        else:
            beta_tilde = beta * (1 - ab_s) / (1 - ab_t)
            if pred.variance_frac is not None:  # Improved DDPM eq. 15 on the respaced betas
                log_var = pred.variance_frac * math.log(beta) + (1 - pred.variance_frac) * math.log(beta_tilde)
            else:
                log_var = torch.tensor(math.log(beta_tilde if variance == "small" else beta), dtype=x.dtype)
            x = mean + torch.exp(0.5 * log_var).to(x) * randn(x.shape, generator, device=x.device, dtype=x.dtype)
        if progress is not None:
            progress(i + 1, len(ts))
    return x
