"""PCA of CLIP image embeddings (unCLIP §2.2: the AR prior models the top principal components of z_i)."""

from __future__ import annotations

import torch
from torch import nn


class PCA(nn.Module):
    """Mean, principal directions and their variances as buffers, so they save with the model's weights."""

    def __init__(self, dim: int, components: int):
        super().__init__()
        if not 1 <= components <= dim:
            raise ValueError(f"components must be in [1, {dim}], got {components}")
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("components", torch.eye(dim)[:components])  # (K, D): rows are unit directions
        self.register_buffer("variance", torch.ones(components))  # (K,) variance along each direction

    @staticmethod
    def fit(data: torch.Tensor, *, variance_kept: float = 0.99, max_components: int | None = None) -> PCA:
        """Fit on (N, D) data, keeping the fewest components whose variance reaches `variance_kept` of the total."""
        if data.ndim != 2 or len(data) < 2:
            raise ValueError(f"PCA needs (N >= 2, D) data, got shape {tuple(data.shape)}")
        x = data.double()
        mean = x.mean(0)
        eigvals, eigvecs = torch.linalg.eigh(torch.cov((x - mean).t()))  # ascending
        eigvals, eigvecs = eigvals.flip(0).clamp(min=0), eigvecs.flip(1)  # descending, (D,), (D, D)
        share = eigvals.cumsum(0) / eigvals.sum()
        k = int((share < variance_kept - 1e-12).sum()) + 1
        k = min(k, max_components or data.shape[1], data.shape[1])
        pca = PCA(data.shape[1], k)
        pca.mean.copy_(mean.float())
        pca.components.copy_(eigvecs[:, :k].t().float())
        pca.variance.copy_(eigvals[:k].float())
        return pca

    @property
    def num_components(self) -> int:
        return self.components.shape[0]

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        """(N, D) -> (N, K) coordinates along the principal directions."""
        return (x - self.mean) @ self.components.t()

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        """(N, K) -> (N, D): the point of the principal subspace with these coordinates."""
        return y @ self.components + self.mean
