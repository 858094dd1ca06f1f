"""Distribution metrics on feature vectors (N, D): Fréchet distance, KID, k-NN precision/recall, diversity.

Features come from a separate evaluation encoder (issue 9), never the CLIP the decoder is conditioned on.
Everything is computed in float64 on the CPU.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg
import torch


def _as64(x) -> np.ndarray:
    array = x.detach().cpu().double().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, dtype=np.float64)
    if array.ndim != 2:
        raise ValueError(f"features must be (N, D), got shape {array.shape}")
    return array


def gaussian_frechet(mu1: np.ndarray, cov1: np.ndarray, mu2: np.ndarray, cov2: np.ndarray) -> float:
    """||mu1 - mu2||^2 + Tr(C1 + C2 - 2 (C1 C2)^{1/2}) (Dowson & Landau 1982; FID, Heusel et al. 2017).

    The matrix square root is scipy's (Schur-based) sqrtm; if it comes back singular, C1 and C2 are
    regularised by 1e-6 I, as the FID reference implementation does; tiny imaginary parts are dropped.
    """
    diff = mu1 - mu2
    covmean = scipy.linalg.sqrtm(cov1 @ cov2)
    if not np.isfinite(covmean).all():
        offset = np.eye(len(cov1)) * 1e-6
        covmean = scipy.linalg.sqrtm((cov1 + offset) @ (cov2 + offset))
    covmean = covmean.real
    return float(diff @ diff + np.trace(cov1) + np.trace(cov2) - 2 * np.trace(covmean))


def frechet_distance(x, y) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (N, D) and (M, D)."""
    a, b = _as64(x), _as64(y)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"feature sizes differ: {a.shape[1]} vs {b.shape[1]}")
    if len(a) < 2 or len(b) < 2:
        raise ValueError("need at least 2 samples on each side")
    return max(gaussian_frechet(a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False)), 0.0)


def kernel_inception_distance(x, y, *, subsets: int = 10, subset_size: int = 100, seed: int = 0) -> tuple[float,
                                                                                                          float]:
    """KID (Bińkowski et al. 2018): the unbiased MMD^2 with the cubic kernel (x.y / D + 1)^3, averaged over
    random subsets of both sets; returns (mean, std over subsets)."""
    a, b = _as64(x), _as64(y)
    m = min(subset_size, len(a), len(b))
    if m < 2:
        raise ValueError("need at least 2 samples on each side")
    d, rng, values = a.shape[1], np.random.default_rng(seed), []
    for _ in range(subsets):
        xa, yb = a[rng.choice(len(a), m, replace=False)], b[rng.choice(len(b), m, replace=False)]
        kxx, kyy, kxy = (xa @ xa.T / d + 1) ** 3, (yb @ yb.T / d + 1) ** 3, (xa @ yb.T / d + 1) ** 3
        mmd = ((kxx.sum() - np.trace(kxx)) + (kyy.sum() - np.trace(kyy))) / (m * (m - 1)) - 2 * kxy.mean()
        values.append(mmd)
    return float(np.mean(values)), float(np.std(values))


def _knn_radii(a: np.ndarray, k: int) -> np.ndarray:
    dist = np.sqrt(((a[:, None] - a[None]) ** 2).sum(-1))  # (N, N)
    return np.sort(dist, axis=1)[:, k]  # column 0 is the point itself


def precision_recall(real, fake, *, k: int = 3) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019): precision is the share of fake samples inside
    some real sample's k-NN ball; recall the share of real samples inside some fake sample's ball."""
    r, f = _as64(real), _as64(fake)
    if len(r) <= k or len(f) <= k:
        raise ValueError(f"need more than k={k} samples on each side, got {len(r)} and {len(f)}")
    cross = np.sqrt(((f[:, None] - r[None]) ** 2).sum(-1))  # (F, R)
    precision = (cross <= _knn_radii(r, k)[None]).any(axis=1).mean()
    recall = (cross.T <= _knn_radii(f, k)[None]).any(axis=1).mean()
    return float(precision), float(recall)


def mean_pairwise_distance(groups) -> float:
    """Mean Euclidean distance between distinct members of each group (G, K, D), averaged over groups: the
    diversity of K samples drawn for one caption or one z_i."""
    g = groups.detach().cpu().double().numpy() if isinstance(groups, torch.Tensor) else np.asarray(groups, float)
    if g.ndim != 3 or g.shape[1] < 2:
        raise ValueError(f"groups must be (G, K >= 2, D), got shape {g.shape}")
    k = g.shape[1]
    dist = np.sqrt(((g[:, :, None] - g[:, None]) ** 2).sum(-1))  # (G, K, K)
    return float(dist.sum(axis=(1, 2)).mean() / (k * (k - 1)))
