"""Attention masks for the priors' decoder-only transformers."""

from __future__ import annotations

import torch


def causal_prefix_mask(text_mask: torch.Tensor, extra: int) -> torch.Tensor:
    """(B, T) bool of real text positions -> (B, 1, L, L) bool attention mask, L = T + extra, True = may attend.

    Position i attends to position j <= i (causal, unCLIP §2.2), and never to padding after a caption's
    end-of-text token. Every row keeps at least position 0 (the start token, always real).
    """
    b, t = text_mask.shape
    length = t + extra
    keys = torch.cat([text_mask, text_mask.new_ones(b, extra)], dim=1)  # (B, L)
    causal = torch.ones(length, length, dtype=torch.bool, device=text_mask.device).tril()  # (L, L)
    return (causal[None] & keys[:, None, :])[:, None]  # (B, 1, L, L)
