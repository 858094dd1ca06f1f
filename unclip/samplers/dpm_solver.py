"""DPM-Solver++ (Lu et al. 2022, "DPM-Solver++: Fast Solver for Guided Sampling"), multistep, data prediction.

Algorithm 2 (2M): with lambda = log(alpha / sigma), h_i = lambda_{t_i} - lambda_{t_{i-1}},
    x_{t_i} = (sigma_i / sigma_{i-1}) x_{t_{i-1}} - alpha_i (e^{-h_i} - 1) D_i,
    D_i = (1 + 1/(2 r_i)) x0_{i-1} - 1/(2 r_i) x0_{i-2},  r_i = h_{i-1} / h_i,
and D_i = x0_{i-1} (first order, which equals DDIM with eta = 0) on the first step, on the last
step to the clean data (lambda = inf) and after a step from zero SNR (lambda = -inf).
e^{-h} is computed as (alpha_{i-1} sigma_i) / (sigma_{i-1} alpha_i), finite at zero terminal SNR.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from ..diffusion.gaussian import GaussianDiffusion, ModelFn
from .common import Generators, Progress, alpha_bar, initial_noise, predict, timesteps_for


def _lambda(ab: float) -> float:
    if ab <= 0:
        return -math.inf
    if ab >= 1:
        return math.inf
    return 0.5 * math.log(ab / (1 - ab))


@torch.no_grad()
def dpm_solver_pp_sample(
    model_fn: ModelFn, diffusion: GaussianDiffusion, shape_or_x: Sequence[int] | torch.Tensor, *,
    steps: int | str | Sequence[int] | None = 20, spacing: str | None = None, order: int = 2,
    generator: Generators = None,
    threshold: str | None = None, progress: Progress | None = None, device=None, dtype=torch.float32,
) -> torch.Tensor:
    """Draw samples with DPM-Solver++ of order 1 or 2 (2M); one network evaluation per timestep."""
    if order not in (1, 2):
        raise ValueError(f"DPM-Solver++ order must be 1 or 2, got {order}")
    x = initial_noise(shape_or_x, generator, device=device, dtype=dtype)
    ts = timesteps_for(diffusion, steps, spacing)
    x0_prev, h_prev = None, None
    for i, t in enumerate(ts):
        s = ts[i + 1] if i + 1 < len(ts) else -1
        ab_t, ab_s = alpha_bar(diffusion, t), alpha_bar(diffusion, s)
        x0 = predict(model_fn, diffusion, x, t, threshold).x0
        if s < 0:
            x = x0  # lambda_s = inf: e^{-h} = 0, sigma_s = 0, alpha_s = 1
        else:
            alpha_t, sigma_t = math.sqrt(ab_t), math.sqrt(1 - ab_t)
            alpha_s, sigma_s = math.sqrt(ab_s), math.sqrt(1 - ab_s)
            exp_neg_h = (alpha_t * sigma_s) / (sigma_t * alpha_s)
            h = _lambda(ab_s) - _lambda(ab_t)
            if order == 2 and x0_prev is not None and math.isfinite(h_prev) and math.isfinite(h):
                r = h_prev / h
                d = (1 + 1 / (2 * r)) * x0 - (1 / (2 * r)) * x0_prev
            else:
                d = x0
            x = (sigma_s / sigma_t) * x - alpha_s * (exp_neg_h - 1) * d
            x0_prev, h_prev = x0, h
        if progress is not None:
            progress(i + 1, len(ts))
    return x
