"""The three parameterisations of a denoiser's output, and the conversions between them, in one place.

With x_t = alpha * x0 + sigma * eps, alpha = sqrt(alpha_bar_t), sigma = sqrt(1 - alpha_bar_t):
- eps: the noise (Ho et al. 2020);
- x0:  the clean sample (the unCLIP prior predicts x0 directly, Ramesh et al. 2022 §2.2);
- v:   alpha * eps - sigma * x0 (Salimans & Ho 2022, "Progressive Distillation" §4), defined at
       zero SNR (alpha = 0), where eps-prediction cannot recover x0 (Lin et al. 2024 §3.2).
Networks never see these: the diffusion turns their raw output into (x0, eps) here.
"""

from __future__ import annotations

import torch

PREDICTIONS = ("eps", "x0", "v")


def to_x0_eps(prediction: str, out: torch.Tensor, x_t: torch.Tensor, alpha: torch.Tensor, sigma: torch.Tensor):
    """(x0, eps) from a network output `out` in the given parameterisation; alpha, sigma broadcast to x_t."""
    if prediction == "eps":
        return (x_t - sigma * out) / alpha, out
    if prediction == "x0":
        return out, (x_t - alpha * out) / sigma
    if prediction == "v":
        # alpha^2 + sigma^2 = 1: x0 = alpha x_t - sigma v, eps = sigma x_t + alpha v.
        return alpha * x_t - sigma * out, sigma * x_t + alpha * out
    raise ValueError(f"unknown prediction {prediction!r}: expected one of {', '.join(PREDICTIONS)}")


def target(prediction: str, x0: torch.Tensor, eps: torch.Tensor, alpha: torch.Tensor, sigma: torch.Tensor):
    """What a network in the given parameterisation should output for this (x0, eps)."""
    if prediction == "eps":
        return eps
    if prediction == "x0":
        return x0
    if prediction == "v":
        return alpha * eps - sigma * x0
    raise ValueError(f"unknown prediction {prediction!r}: expected one of {', '.join(PREDICTIONS)}")


def eps_from_x0(x0: torch.Tensor, x_t: torch.Tensor, alpha: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    return (x_t - alpha * x0) / sigma


def min_snr_weight(prediction: str, snr: torch.Tensor, gamma: float) -> torch.Tensor:
    """Min-SNR-gamma loss weights (Hang et al. 2023, eq. 9 and its eps/v forms), per sample.

    The loss on x0 is weighted min(SNR, gamma); the same weighting expressed on an eps loss is
    min(SNR, gamma) / SNR and on a v loss min(SNR, gamma) / (SNR + 1). At zero SNR (the last step of a
    zero-terminal-SNR schedule) the v weight would be 0; it is set to 1 there, as diffusers does, so
    that step is still trained (eps takes its limit, 1). The x0 weight keeps the paper's 0 there.
    """
    clipped = torch.clamp(snr, max=gamma)
    if prediction == "x0":
        return clipped
    if prediction == "eps":  # min(SNR, gamma) / SNR -> 1 as SNR -> 0
        return torch.where(snr == 0, torch.ones_like(snr), clipped / snr)
    if prediction == "v":
        return torch.where(snr == 0, torch.ones_like(snr), clipped / (snr + 1))
    raise ValueError(f"unknown prediction {prediction!r}: expected one of {', '.join(PREDICTIONS)}")
