"""Gaussian KL and log-likelihood terms of the variational bound (DDPM eq. 5; Improved DDPM §3.1)."""

from __future__ import annotations

import math

import torch


def normal_kl(mean1, logvar1, mean2, logvar2) -> torch.Tensor:
    """KL(N(mean1, exp(logvar1)) || N(mean2, exp(logvar2))) elementwise, in nats."""
    return 0.5 * (-1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * torch.exp(-logvar2))


def _approx_standard_normal_cdf(x: torch.Tensor) -> torch.Tensor:
    # The tanh approximation of Phi used by DDPM and Improved DDPM (Page 1977).
    return 0.5 * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


def discretized_gaussian_log_likelihood(
    x: torch.Tensor, *, mean: torch.Tensor, log_scale: torch.Tensor
) -> torch.Tensor:
    """log p(x) for images in [-1, 1] quantised to 256 levels under N(mean, exp(log_scale)^2) (DDPM §3.3).

    Returns elementwise log-likelihoods in nats; clamped so that no bin's probability is below 1e-12.
    """
    centred = x - mean
    inv_std = torch.exp(-log_scale)
    cdf_plus = _approx_standard_normal_cdf(inv_std * (centred + 1.0 / 255.0))
    cdf_min = _approx_standard_normal_cdf(inv_std * (centred - 1.0 / 255.0))
    log_cdf_plus = torch.log(cdf_plus.clamp(min=1e-12))
    log_one_minus_cdf_min = torch.log((1.0 - cdf_min).clamp(min=1e-12))
    log_delta = torch.log((cdf_plus - cdf_min).clamp(min=1e-12))
    return torch.where(x < -0.999, log_cdf_plus, torch.where(x > 0.999, log_one_minus_cdf_min, log_delta))


def gaussian_log_likelihood(x: torch.Tensor, *, mean: torch.Tensor, log_var: torch.Tensor) -> torch.Tensor:
    """Continuous log N(x; mean, exp(log_var)) elementwise, in nats: the decoder term for embeddings."""
    return -0.5 * (math.log(2 * math.pi) + log_var + (x - mean) ** 2 * torch.exp(-log_var))
