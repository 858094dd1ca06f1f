"""What every sampler shares: noise from one or per-sample generators, schedule lookups, one model call."""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable, Sequence

import torch

from ..diffusion.gaussian import GaussianDiffusion, ModelFn, Prediction
from ..diffusion.schedule import spaced_timesteps

Progress = Callable[[int, int], None]  # (steps done, total steps)
Generators = torch.Generator | Sequence[torch.Generator] | None


def randn(shape: Sequence[int], generator: Generators, *, device=None, dtype=torch.float32) -> torch.Tensor:
    """Standard normal noise. With a list of generators, sample b draws from generator b alone, so a batch
    equals the same samples drawn one by one (diffusers' convention)."""
    if isinstance(generator, (list, tuple)):
        if len(generator) != shape[0]:
            raise ValueError(f"{len(generator)} generators for a batch of {shape[0]}")
        return torch.cat([torch.randn((1, *shape[1:]), generator=g, device=device, dtype=dtype) for g in generator])
    return torch.randn(tuple(shape), generator=generator, device=device, dtype=dtype)


def per_row(generators: Sequence[torch.Generator], n: int, *, repeat: int = 1) -> list[torch.Generator]:
    """n per-sample generators, each repeated `repeat` times in turn (for a batch that repeats each row): a row's
    repeats then draw from its generator one after another, as they would with the row sampled alone."""
    if len(generators) != n:
        raise ValueError(f"{len(generators)} generators for a batch of {n}")
    return [g for g in generators for _ in range(repeat)]


def initial_noise(shape_or_x: Sequence[int] | torch.Tensor, generator: Generators, *, device, dtype) -> torch.Tensor:
    if isinstance(shape_or_x, torch.Tensor):
        return shape_or_x
    return randn(shape_or_x, generator, device=device, dtype=dtype)


def default_spacing(diffusion: GaussianDiffusion) -> str:
    """'trailing' (start from the last step, Lin et al. 2024) unless the model predicts eps on a schedule
    whose last step keeps a little signal: there x0 = (x_t - sigma eps) / alpha is ill-conditioned,
    so such models sample from 'leading' steps, as DDIM does."""
    eps_model = diffusion.config.prediction == "eps" and float(diffusion.alphas_cumprod[-1]) > 0
    return "leading" if eps_model else "trailing"


def timesteps_for(
    diffusion: GaussianDiffusion, steps: int | str | Sequence[int] | None, spacing: str | None = None
) -> list[int]:
    """The timesteps a sampler visits, noisiest first: all of them (None), N spaced ones, or an explicit list."""
    if steps is None:
        return list(range(diffusion.num_steps - 1, -1, -1))
    if isinstance(steps, torch.Tensor):
        steps = steps.reshape(-1).tolist() if steps.ndim else int(steps)
    if not isinstance(steps, (str, int)) and isinstance(steps, Iterable):
        steps = list(steps)
        if not steps:
            raise ValueError("an explicit list of timesteps is empty")
        steps = ",".join(str(operator.index(s)) for s in steps)
    elif not isinstance(steps, str):
        steps = operator.index(steps)
    return spaced_timesteps(diffusion.num_steps, steps, spacing=spacing or default_spacing(diffusion))


def alpha_bar(diffusion: GaussianDiffusion, t: int) -> float:
    """alpha_bar at training step t, with t = -1 meaning the clean data (alpha_bar = 1)."""
    return 1.0 if t < 0 else float(diffusion.alphas_cumprod[t])


def predict(model_fn: ModelFn, diffusion: GaussianDiffusion, x: torch.Tensor, t: int, threshold: str | None):
    """One network evaluation at timestep t for the whole batch."""
    t_batch = torch.full((x.shape[0],), t, dtype=torch.long, device=x.device)
    return diffusion.predict(model_fn(x, t_batch), x, t_batch, threshold=threshold)


__all__ = ["Prediction", "Progress", "alpha_bar", "initial_noise", "predict", "randn", "timesteps_for"]
