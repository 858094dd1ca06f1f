"""Corruptions the scorer must survive (WORLD.md: a Gaussian blur of 1 px, noise of sigma 10/255)."""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def _to_uint8(array: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(array), 0, 255).astype(np.uint8)


def gaussian_blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """Blur an (H, W, 3) uint8 image with a Gaussian of standard deviation `sigma` pixels."""
    if sigma < 0:
        raise ValueError(f"blur sigma must be >= 0, got {sigma}")
    return _to_uint8(ndimage.gaussian_filter(image.astype(np.float64), sigma=(sigma, sigma, 0), mode="nearest"))


def gaussian_noise(image: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Add i.i.d. Gaussian noise of standard deviation `sigma` (in 0..255 units) to an (H, W, 3) uint8 image."""
    if sigma < 0:
        raise ValueError(f"noise sigma must be >= 0, got {sigma}")
    return _to_uint8(image.astype(np.float64) + rng.normal(0.0, sigma, size=image.shape))
