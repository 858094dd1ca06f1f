"""A Gaussian mixture with an exact denoiser: the known answer that samplers are checked against.

For data x0 ~ sum_k w_k N(mu_k, s_k^2 I), the noised x_t = alpha x0 + sigma eps is again a mixture,
sum_k w_k N(alpha mu_k, (alpha^2 s_k^2 + sigma^2) I), and the posterior mean is analytic:
    E[x0 | x_t] = sum_k r_k(x_t) (mu_k + alpha s_k^2 / (alpha^2 s_k^2 + sigma^2) (x_t - alpha mu_k)),
with r_k the component responsibilities. That is the exact (Bayes-optimal) x0-denoiser, so sampling
with it separates a sampler's error from a network's training error.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .gaussian import GaussianDiffusion, ModelFn
from .params import target


@dataclass(frozen=True)
class GaussianMixture:
    weights: torch.Tensor  # (K,)
    means: torch.Tensor  # (K, D)
    stds: torch.Tensor  # (K,) isotropic standard deviations

    def __post_init__(self):
        k = len(self.weights)
        if self.means.shape[0] != k or self.stds.shape != (k,):
            raise ValueError("weights (K,), means (K, D) and stds (K,) must agree on K")
        if abs(float(self.weights.sum()) - 1) > 1e-9 or bool((self.stds <= 0).any()):
            raise ValueError("weights must sum to 1 and stds be positive")

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    def sample(self, n: int, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """(n, D) float64 draws."""
        k = torch.multinomial(self.weights.double(), n, replacement=True, generator=generator)
        noise = torch.randn(n, self.dim, generator=generator, dtype=torch.float64)
        return self.means.double()[k] + self.stds.double()[k, None] * noise

    def assign(self, x: torch.Tensor) -> torch.Tensor:
        """(n,) index of the most probable component of each point (its mode)."""
        ones = torch.ones(1, 1, dtype=torch.float64, device=x.device)
        return self._log_resp(x.double(), alpha=ones, sigma2=0.0).argmax(1)

    def _on(self, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(weights, means, stds) as float64 on `device`."""
        return tuple(p.to(device=device, dtype=torch.float64) for p in (self.weights, self.means, self.stds))

    def _log_resp(self, x: torch.Tensor, *, alpha: torch.Tensor, sigma2) -> torch.Tensor:
        weights, means, stds = self._on(x.device)
        var = alpha ** 2 * stds[None, :] ** 2 + sigma2  # (B, K)
        d2 = ((x[:, None, :] - alpha[..., None] * means[None]) ** 2).sum(-1)  # (B, K)
        log_p = torch.log(weights)[None] - 0.5 * self.dim * torch.log(var) - 0.5 * d2 / var
        return log_p - torch.logsumexp(log_p, dim=1, keepdim=True)

    def posterior_mean(self, x_t: torch.Tensor, alpha: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """E[x0 | x_t] for x_t (B, D), alpha and sigma (B, 1); float64, on x_t's device."""
        x = x_t.double()
        resp = self._log_resp(x, alpha=alpha, sigma2=sigma ** 2).exp()  # (B, K)
        _, means, stds = self._on(x.device)
        s2 = stds[None, :] ** 2  # (1, K)
        gain = alpha * s2 / (alpha ** 2 * s2 + sigma ** 2)  # (B, K)
        means = means[None]  # (1, K, D)
        per_k = means + gain[..., None] * (x[:, None, :] - alpha[..., None] * means)  # (B, K, D)
        return (resp[..., None] * per_k).sum(1)

    def sliced_w1(self, x: torch.Tensor, *, projections: int = 64, grid: int = 4096, seed: int = 0) -> float:
        """Sliced 1-Wasserstein distance between the samples x (n, D) and this mixture itself (not a draw
        of it): for random unit directions theta the projected mixture is the 1-D mixture
        sum_k w_k N(theta . mu_k, s_k^2) with a closed-form CDF F, and W1 = integral |F_n(y) - F(y)| dy
        (Rabin et al. 2011; Vallender 1974), integrated on a grid. Free of a reference sample's noise."""
        g = torch.Generator().manual_seed(seed)
        theta = torch.randn(self.dim, projections, generator=g, dtype=torch.float64)
        theta /= theta.norm(dim=0, keepdim=True)
        proj = torch.sort(x.double().cpu() @ theta, dim=0).values  # (n, P)
        centres = self.means.double() @ theta  # (K, P)
        stds = self.stds.double()[:, None]  # (K, 1)
        lo = torch.minimum(proj[0], (centres - 8 * stds).min(0).values)  # (P,)
        hi = torch.maximum(proj[-1], (centres + 8 * stds).max(0).values)
        steps = torch.linspace(0, 1, grid, dtype=torch.float64)[:, None]
        y = lo + steps * (hi - lo)  # (G, P)
        z = (y[:, None, :] - centres[None]) / stds[None]  # (G, K, P)
        cdf = (self.weights.double()[None, :, None] * 0.5 * (1 + torch.erf(z / 2 ** 0.5))).sum(1)  # (G, P)
        empirical = torch.stack([torch.searchsorted(proj[:, p].contiguous(), y[:, p].contiguous(), right=True)
                                 for p in range(projections)], dim=1).double() / len(x)  # (G, P)
        gap = (empirical - cdf).abs()
        w1 = ((gap[1:] + gap[:-1]) / 2 * (y[1:] - y[:-1])).sum(0)  # trapezoid rule, (P,)
        return float(w1.mean())

    def exact_denoiser(self, diffusion: GaussianDiffusion) -> ModelFn:
        """A model_fn that outputs the exact E[x0 | x_t] in the diffusion's parameterisation."""

        def model_fn(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            x64 = x_t.double()
            alpha, sigma = diffusion.alpha_sigma(t, x64)  # (B, 1) each
            x0 = self.posterior_mean(x64, alpha, sigma)
            eps = (x64 - alpha * x0) / sigma
            return target(diffusion.config.prediction, x0, eps, alpha, sigma).to(x_t.dtype)

        return model_fn


def ring_mixture(k: int = 8, radius: float = 2.0, std: float = 0.15, *, uneven: bool = True) -> GaussianMixture:
    """K components on a circle in 2-D; with `uneven`, weights rise linearly so mode weights are tested too."""
    angles = torch.arange(k, dtype=torch.float64) * (2 * torch.pi / k)
    means = radius * torch.stack([angles.cos(), angles.sin()], dim=1)
    weights = torch.arange(1, k + 1, dtype=torch.float64) if uneven else torch.ones(k, dtype=torch.float64)
    stds = torch.full((k,), std, dtype=torch.float64)
    return GaussianMixture(weights=weights / weights.sum(), means=means, stds=stds)


def two_wide_gaussians() -> GaussianMixture:
    """Two broad, overlapping 2-D Gaussians: a smooth, well-conditioned probability-flow ODE."""
    f64 = dict(dtype=torch.float64)
    weights, stds = torch.tensor([0.3, 0.7], **f64), torch.tensor([0.6, 0.8], **f64)
    return GaussianMixture(weights=weights, means=torch.tensor([[-1.0, 0.0], [1.0, 0.5]], **f64), stds=stds)
