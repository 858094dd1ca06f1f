"""Gaussian diffusion for tensors of any shape: forward process, posterior, predictions, training losses.

The same object serves the prior (vectors z_i, predicting x0, unCLIP §2.2), the decoder and the
upsamplers (images, predicting eps or v). Equations: DDPM (Ho et al. 2020) eqs. 4, 6, 7; learned
variance and the hybrid loss: Improved DDPM (Nichol & Dhariwal 2021) eqs. 15-16 and §3.1.
The network is a plain function `model_fn(x_t, t) -> output`; it never sees the schedule.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Callable, NamedTuple

import torch

from .likelihood import discretized_gaussian_log_likelihood, gaussian_log_likelihood, normal_kl
from .params import PREDICTIONS, min_snr_weight, target, to_x0_eps
from .schedule import Schedule, make_schedule, spaced_timesteps

TIMESTEP_SAMPLING = ("uniform", "logit-normal")
ModelFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (x_t, t: LongTensor (B,)) -> output


@dataclass(frozen=True)
class DiffusionConfig:
    schedule: str = "cosine"  # "cosine" | "linear"
    steps: int = 1000  # training timesteps; the paper trains every stage with 1000
    prediction: str = "eps"  # "eps" | "x0" | "v"
    learned_variance: bool = False  # Improved DDPM's learned range: the output doubles its channels (dim 1)
    zero_terminal_snr: bool = False  # Lin et al. 2024: rescale so the last step is pure noise
    min_snr_gamma: float | None = None  # Hang et al. 2023: weight the MSE by min(SNR, gamma) (in x0 terms)
    vlb_weight: float = 0.001  # lambda of L_hybrid = L_simple + lambda * L_vlb (Improved DDPM §3.1)
    images: bool = True  # data are 8-bit images in [-1, 1] (discretised decoder term) or continuous vectors
    # Training timesteps: "uniform", t ~ U{0..T-1} (DDPM), or "logit-normal", t = floor(T sigmoid(m + s n)) with
    # n ~ N(0, 1) (Esser et al. 2024, §3.1: training time spent where the conditioning decides the image).
    timestep_sampling: str = "uniform"
    timestep_logit_mean: float = 0.0  # m
    timestep_logit_std: float = 1.0  # s
    # A share of each batch's timesteps drawn instead from the N that a trailing sampler of N steps visits (T-1,
    # T-1-T/N, ...; Lin et al. 2024 §3.3), so a network too small to fit every noise level equally well trains more
    # where it is sampled (the remaining rows keep the other levels trained, for DDIM inversion and other step
    # counts); None: no focus.
    timestep_focus_steps: int | None = None
    timestep_focus_fraction: float = 0.5

    def __post_init__(self):
        if self.prediction not in PREDICTIONS:
            raise ValueError(f"unknown prediction {self.prediction!r}: expected one of {', '.join(PREDICTIONS)}")
        if self.zero_terminal_snr and self.prediction == "eps":
            raise ValueError("prediction 'eps' cannot recover x0 at zero terminal SNR (alpha = 0); use 'v' or 'x0'")
        if self.min_snr_gamma is not None and not self.min_snr_gamma > 0:
            raise ValueError(f"min_snr_gamma must be positive, got {self.min_snr_gamma}")
        if self.vlb_weight < 0:
            raise ValueError(f"vlb_weight must be >= 0, got {self.vlb_weight}")
        if self.timestep_sampling not in TIMESTEP_SAMPLING:
            raise ValueError(f"unknown timestep_sampling {self.timestep_sampling!r}: expected one of "
                             f"{', '.join(TIMESTEP_SAMPLING)}")
        if not self.timestep_logit_std > 0:
            raise ValueError(f"timestep_logit_std must be positive, got {self.timestep_logit_std}")
        if self.timestep_focus_steps is not None:
            if (isinstance(self.timestep_focus_steps, bool) or not isinstance(self.timestep_focus_steps, int)
                    or not 1 <= self.timestep_focus_steps <= self.steps):
                raise ValueError(f"timestep_focus_steps must be None or an integer in 1..{self.steps}, "
                                 f"got {self.timestep_focus_steps!r}")
            if self.prediction == "eps":
                raise ValueError("timestep_focus_steps focuses on a trailing sampler's steps, and eps models sample "
                                 "from leading ones (samplers.common.default_spacing): use 'v' or 'x0'")
        if not 0 < self.timestep_focus_fraction <= 1:
            raise ValueError(f"timestep_focus_fraction must be in (0, 1], got {self.timestep_focus_fraction}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> DiffusionConfig:
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown DiffusionConfig keys: {sorted(unknown)}")
        return cls(**data)


class Prediction(NamedTuple):
    x0: torch.Tensor
    eps: torch.Tensor
    variance_frac: torch.Tensor | None  # learned range in [0, 1]: 0 -> beta_tilde, 1 -> beta (None: fixed)


def broadcast(values: torch.Tensor, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """values[t] (float64 schedule entries) as like's dtype, shaped (B, 1, ..., 1) to broadcast over `like`."""
    out = values.to(like.device)[t.to(like.device)].to(like.dtype)
    return out.reshape(-1, *([1] * (like.ndim - 1)))


def threshold_x0(x0: torch.Tensor, kind: str | None, percentile: float = 0.995) -> torch.Tensor:
    """Clip predicted images to [-1, 1]: 'static' clamps; 'dynamic' is Imagen's (Saharia et al. 2022 §2.3):
    s = max(1, the `percentile` quantile of |x0| per sample), then clamp to [-s, s] and divide by s."""
    if kind is None:
        return x0
    if kind == "static":
        return x0.clamp(-1, 1)
    if kind == "dynamic":
        s = torch.quantile(x0.detach().abs().reshape(len(x0), -1).float(), percentile, dim=1).clamp(min=1)
        s = s.to(x0.dtype).reshape(-1, *([1] * (x0.ndim - 1)))
        return x0.clamp(-s, s) / s
    raise ValueError(f"unknown thresholding {kind!r}: expected None, 'static' or 'dynamic'")


class GaussianDiffusion:
    def __init__(self, config: DiffusionConfig | None = None, *, schedule: Schedule | None = None):
        self.config = config or DiffusionConfig()
        self.schedule = schedule or make_schedule(
            self.config.schedule, self.config.steps, zero_terminal_snr=self.config.zero_terminal_snr
        )
        if self.schedule.num_steps != self.config.steps:
            raise ValueError(f"schedule has {self.schedule.num_steps} steps, config says {self.config.steps}")
        self.alphas_cumprod = self.schedule.alphas_cumprod  # (T,) float64
        steps = self.config.timestep_focus_steps  # the trailing sampler's timesteps that training focuses on: (N,)
        self.focus_timesteps = None if steps is None else torch.tensor(
            spaced_timesteps(self.num_steps, steps, spacing="trailing"))

    @property
    def num_steps(self) -> int:
        return self.schedule.num_steps

    def alpha_sigma(self, t: torch.Tensor, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        ab = self.alphas_cumprod
        return broadcast(ab.sqrt(), t, like), broadcast((1 - ab).sqrt(), t, like)

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """DDPM eq. 4: x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) eps."""
        alpha, sigma = self.alpha_sigma(t, x0)
        return alpha * x0 + sigma * noise

    def q_posterior(self, x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor):
        """DDPM eqs. 6-7: mean and (clipped) log-variance of q(x_{t-1} | x_t, x0)."""
        s = self.schedule
        ab, ab_prev = s.alphas_cumprod, s.alphas_cumprod_prev
        coef_x0 = s.betas * ab_prev.sqrt() / (1 - ab)
        coef_xt = (1 - ab_prev) * (1 - s.betas).sqrt() / (1 - ab)
        mean = broadcast(coef_x0, t, x_t) * x0 + broadcast(coef_xt, t, x_t) * x_t
        return mean, broadcast(s.posterior_log_variance_clipped, t, x_t)

    def split_output(self, out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Separate the mean output from the learned-variance channels (the second half of dim 1)."""
        if not self.config.learned_variance:
            return out, None
        if out.shape[1] % 2:
            raise ValueError(f"learned variance needs an even channel count on dim 1, got shape {tuple(out.shape)}")
        mean_out, var_out = out.chunk(2, dim=1)
        # Improved DDPM eq. 15's v, kept in [-1, 1] so the variance stays between beta_tilde and beta (a
        # deliberate safety margin: improved-diffusion lets it extrapolate, and overflow, unchecked).
        return mean_out, (var_out.clamp(-1, 1) + 1) / 2

    def predict(self, out: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor, *, threshold: str | None = None):
        """Turn a raw network output into (x0, eps, variance fraction); thresholding, if any, recomputes eps."""
        mean_out, frac = self.split_output(out)
        alpha, sigma = self.alpha_sigma(t, x_t)
        x0, eps = to_x0_eps(self.config.prediction, mean_out, x_t, alpha, sigma)
        if threshold is not None:
            x0 = threshold_x0(x0, threshold)
            eps = (x_t - alpha * x0) / sigma
        return Prediction(x0=x0, eps=eps, variance_frac=frac)

    def model_log_variance(self, frac: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Improved DDPM eq. 15: log Sigma = v log beta_t + (1 - v) log beta_tilde_t, in float64."""
        s = self.schedule
        frac64 = frac.double()
        return frac64 * broadcast(torch.log(s.betas), t, frac64) + (1 - frac64) * broadcast(
            s.posterior_log_variance_clipped, t, frac64
        )

    def _vlb_term(self, out: torch.Tensor, x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """L_t of the variational bound in bits per dimension, with the mean frozen (Improved DDPM §3.1)."""
        mean_out, frac = self.split_output(out)
        alpha, sigma = self.alpha_sigma(t, x_t)
        # The bound trains the variance only: the mean is detached (Improved DDPM §3.1).
        x0_pred, _ = to_x0_eps(self.config.prediction, mean_out.detach(), x_t, alpha, sigma)
        true_mean, true_logvar = self.q_posterior(x0.double(), x_t.double(), t)
        model_mean, _ = self.q_posterior(x0_pred.double(), x_t.double(), t)
        model_logvar = self.model_log_variance(frac, t)
        dims = tuple(range(1, x0.ndim))
        kl = normal_kl(true_mean, true_logvar, model_mean, model_logvar).mean(dim=dims) / math.log(2.0)
        if self.config.images:
            nll = -discretized_gaussian_log_likelihood(x0.double(), mean=model_mean, log_scale=0.5 * model_logvar)
        else:
            nll = -gaussian_log_likelihood(x0.double(), mean=model_mean, log_var=model_logvar)
        nll = nll.mean(dim=dims) / math.log(2.0)
        return torch.where(t.to(kl.device) == 0, nll, kl)

    def training_losses(
        self, model_fn: ModelFn, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor | None = None,
        *, weights: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Per-sample losses: {"loss", "mse"} and, with learned variance, {"vb"}; each of shape (B,). `weights`,
        broadcastable to x0, weigh each element of the squared error before its mean (the vb term is not weighted)."""
        if noise is None:
            noise = torch.randn_like(x0)
        x_t = self.q_sample(x0, t, noise)
        out = model_fn(x_t, t)
        mean_out, _ = self.split_output(out)
        if mean_out.shape != x0.shape:
            raise ValueError(f"model output {tuple(mean_out.shape)} does not match data {tuple(x0.shape)}")
        alpha, sigma = self.alpha_sigma(t, x0)
        goal = target(self.config.prediction, x0, noise, alpha, sigma)
        squared = (mean_out - goal) ** 2
        if weights is not None:
            if weights.ndim != x0.ndim or weights.shape[0] not in (1, x0.shape[0]):
                raise ValueError(f"weights {tuple(weights.shape)} must have one row or one per sample of "
                                 f"{tuple(x0.shape)}, with as many dimensions")
            squared = squared * weights
        mse = squared.mean(dim=tuple(range(1, x0.ndim)))
        if self.config.min_snr_gamma is not None:
            snr = self.schedule.snr.to(x0.device)[t.to(x0.device)]
            mse = mse * min_snr_weight(self.config.prediction, snr, self.config.min_snr_gamma).to(mse.dtype)
        terms = {"mse": mse}
        loss = mse
        if self.config.learned_variance:
            # lambda * L_vlb with L_vlb = sum_t L_t = T * E_t[L_t]  (Improved DDPM §3.1, lambda = 0.001)
            vb = self._vlb_term(out, x0, x_t, t) * (self.config.vlb_weight * self.num_steps)
            terms["vb"] = vb.to(mse.dtype)
            loss = loss + terms["vb"]
        terms["loss"] = loss
        return terms

    def sample_timesteps(self, batch: int, *, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
        """Training timesteps (B,) in {0, ..., T-1}: uniform, or logit-normal (DiffusionConfig.timestep_sampling),
        then, with timestep_focus_steps N, each row replaced with probability timestep_focus_fraction by one of the
        N trailing sampling steps, drawn uniformly."""
        cfg = self.config
        if cfg.timestep_sampling == "uniform":
            t = torch.randint(0, self.num_steps, (batch,), generator=generator, device=device)
        else:
            n = torch.randn(batch, generator=generator, device=device)
            u = torch.sigmoid(cfg.timestep_logit_mean + cfg.timestep_logit_std * n)  # in (0, 1): the fraction of T
            t = (u * self.num_steps).long().clamp_(0, self.num_steps - 1)
        if self.focus_timesteps is None:  # no further draws: runs without a focus keep their random streams
            return t
        grid = self.focus_timesteps.to(t.device)  # (N,)
        focus = torch.rand(batch, generator=generator, device=device) < cfg.timestep_focus_fraction
        pick = torch.randint(0, len(grid), (batch,), generator=generator, device=device)
        return torch.where(focus, grid[pick], t)
