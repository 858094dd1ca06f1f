"""Noise schedules in float64: the betas and everything derived from them.

Cosine: Nichol & Dhariwal 2021 (Improved DDPM) eq. 17. Linear: Ho et al. 2020, scaled to the
step count as in Improved DDPM. Zero terminal SNR: Lin et al. 2024 ("Common Diffusion Noise
Schedules and Sample Steps are Flawed") Algorithm 1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import torch


def cosine_betas(steps: int, *, offset: float = 0.008, max_beta: float = 0.999) -> torch.Tensor:
    """Improved DDPM eq. 17: alpha_bar(t) = f(t) / f(0), f(t) = cos^2(((t/T + s) / (1 + s)) * pi/2)."""
    t = torch.arange(steps + 1, dtype=torch.float64) / steps
    f = torch.cos((t + offset) / (1 + offset) * math.pi / 2) ** 2
    alpha_bar = f / f[0]
    return (1 - alpha_bar[1:] / alpha_bar[:-1]).clamp(max=max_beta)  # eq. 17's clip at 0.999


def linear_betas(steps: int, *, max_beta: float = 0.999) -> torch.Tensor:
    """Ho et al. 2020's 1e-4 .. 0.02 over 1000 steps, scaled so any step count spans the same noise
    (Improved DDPM); clipped at 0.999 as the cosine schedule is, for step counts far below 1000."""
    scale = 1000 / steps
    return torch.linspace(scale * 1e-4, scale * 0.02, steps, dtype=torch.float64).clamp(max=max_beta)


def rescale_zero_terminal_snr(betas: torch.Tensor) -> torch.Tensor:
    """Lin et al. 2024 Alg. 1: shift and scale sqrt(alpha_bar) so that alpha_bar_T = 0 and alpha_bar_1 is kept."""
    root = torch.cumprod(1 - betas, 0).sqrt()
    first, last = root[0].clone(), root[-1].clone()
    root = (root - last) * first / (first - last)
    alpha_bar = root ** 2
    alphas = torch.cat([alpha_bar[:1], alpha_bar[1:] / alpha_bar[:-1]])
    return 1 - alphas


@dataclass(frozen=True)
class Schedule:
    """Per-step quantities of a discrete Gaussian diffusion, all float64, indexed by t = 0 .. T-1.

    The derived tables are computed once per schedule (cached), not on every training step or sampler step.
    """

    betas: torch.Tensor  # (T,)

    def __post_init__(self):
        b = self.betas
        if b.dtype != torch.float64 or b.ndim != 1 or len(b) < 1:
            raise ValueError("betas must be a non-empty 1-D float64 tensor")
        if not bool(((b > 0) & (b <= 1)).all()):
            raise ValueError(f"betas must lie in (0, 1]; got min {b.min().item():.3g}, max {b.max().item():.3g}")

    @property
    def num_steps(self) -> int:
        return len(self.betas)

    @cached_property
    def alphas_cumprod(self) -> torch.Tensor:
        """alpha_bar_t = prod_{s <= t} (1 - beta_s); decreasing, from ~1 to ~0 (exactly 0 at zero terminal SNR)."""
        return torch.cumprod(1 - self.betas, 0)

    @cached_property
    def alphas_cumprod_prev(self) -> torch.Tensor:
        return torch.cat([torch.ones(1, dtype=torch.float64), self.alphas_cumprod[:-1]])

    @cached_property
    def snr(self) -> torch.Tensor:
        """alpha_bar / (1 - alpha_bar): the signal-to-noise ratio of x_t."""
        ab = self.alphas_cumprod
        return ab / (1 - ab)

    @cached_property
    def posterior_variance(self) -> torch.Tensor:
        """DDPM eq. 7: beta_tilde_t = beta_t (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t)."""
        return self.betas * (1 - self.alphas_cumprod_prev) / (1 - self.alphas_cumprod)

    @cached_property
    def posterior_log_variance_clipped(self) -> torch.Tensor:
        """log beta_tilde with t = 0 (where beta_tilde = 0) replaced by t = 1's value, as Improved DDPM does."""
        var = self.posterior_variance
        if len(var) == 1:
            return torch.log(self.betas)
        return torch.log(torch.cat([var[1:2], var[1:]]))


def make_schedule(kind: str, steps: int = 1000, *, zero_terminal_snr: bool = False) -> Schedule:
    """A named schedule ('cosine' or 'linear') of `steps` steps, optionally rescaled to zero terminal SNR."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"number of diffusion steps must be a positive integer, got {steps!r}")
    if kind == "cosine":
        betas = cosine_betas(steps)
    elif kind == "linear":
        betas = linear_betas(steps)
    else:
        raise ValueError(f"unknown noise schedule {kind!r}: expected 'cosine' or 'linear'")
    if zero_terminal_snr:
        if steps < 2:
            raise ValueError("zero terminal SNR needs at least 2 steps (the rescale pins the first and last)")
        betas = rescale_zero_terminal_snr(betas)
    return Schedule(betas=betas)


SPACINGS = ("trailing", "leading")


def spaced_timesteps(num_train_steps: int, num_steps: int | str, *, spacing: str = "trailing") -> list[int]:
    """Which of the training timesteps a sampler visits, in decreasing order (first = noisiest).

    `num_steps` is an int N for N evenly spread steps, or a comma-separated string of explicit
    timesteps such as "999,749,499,249". Spacing of N steps (Lin et al. 2024 §3.3, Table 2):
    - "trailing": T-1, T-1-T/N, ...: sampling starts from the last timestep, where the marginal is
      (at zero terminal SNR exactly) the N(0, I) the sampler starts from;
    - "leading": 0, T/N, 2T/N, ... (DDIM's choice): never visits the last steps.
      It suits eps-prediction on schedules whose last alpha_bar is ~0 but not 0, where
      x0 = (x_t - sigma eps) / alpha amplifies the network's eps error by 1 / alpha (~2e4 at the
      cosine schedule's last step).
    """
    if spacing not in SPACINGS:
        raise ValueError(f"unknown timestep spacing {spacing!r}: expected one of {', '.join(SPACINGS)}")
    if isinstance(num_steps, str):
        try:
            steps = sorted({int(s) for s in num_steps.split(",")}, reverse=True)
        except ValueError:
            raise ValueError(f"timesteps {num_steps!r} must be comma-separated integers") from None
        if not steps or steps[-1] < 0 or steps[0] >= num_train_steps:
            raise ValueError(f"timesteps {num_steps!r} must lie in 0..{num_train_steps - 1}")
        return steps
    if isinstance(num_steps, bool) or not isinstance(num_steps, int) or not 1 <= num_steps <= num_train_steps:
        raise ValueError(f"number of sampling steps must be in 1..{num_train_steps}, got {num_steps!r}")
    stride = num_train_steps / num_steps
    if spacing == "leading":
        return sorted({round(i * stride) for i in range(num_steps)}, reverse=True)
    return sorted({round(num_train_steps - i * stride) - 1 for i in range(num_steps)}, reverse=True)
