"""How close predicted image embeddings come to the true ones (issue 6; LAION's acceptance checks for a prior)."""

from __future__ import annotations

import numpy as np
import torch

from ..clip.zeroshot import recall_at_k


def prior_metrics(pred: torch.Tensor, true: torch.Tensor, z_t: torch.Tensor) -> dict[str, float]:
    """For unit-norm (N, E) predicted z_i, true z_i and caption z_t:

    cos_true        mean cos(predicted z_i, true z_i)
    cos_text        mean cos(predicted z_i, z_t); cos_text_gap: that minus mean cos(true z_i, z_t)
    cos_unrelated_text  mean cos(predicted z_i, the z_t of caption i + N/2)
    recall_at_1_among_100  the predicted z_i retrieves its own image among blocks of 100 (N >= 100)
    """
    n = len(pred)
    if not (pred.shape == true.shape == z_t.shape) or n < 2:
        raise ValueError(f"pred, true and z_t must share one (N >= 2, E) shape, got {tuple(pred.shape)}, "
                         f"{tuple(true.shape)}, {tuple(z_t.shape)}")
    unrelated = z_t.roll(n // 2, dims=0)
    out = {"cos_true": float((pred * true).sum(-1).mean()),
           "cos_text": float((pred * z_t).sum(-1).mean()),
           "cos_text_gap": float((pred * z_t).sum(-1).mean() - (true * z_t).sum(-1).mean()),
           "cos_unrelated_text": float((pred * unrelated).sum(-1).mean())}
    if n >= 100:
        out["recall_at_1_among_100"] = float(np.mean([recall_at_k(pred[s:s + 100], true[s:s + 100], k=1)
                                                      for s in range(0, n - 99, 100)]))
    return out
