"""Exponential moving average of a model's weights (the paper keeps EMA weights, decay 0.999-0.9999)."""

from __future__ import annotations

import copy

import torch


class EMA:
    """shadow <- decay * shadow + (1 - decay) * weights after every optimizer step; buffers are copied."""

    def __init__(self, model: torch.nn.Module, decay: float):
        if not 0 <= decay < 1:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.decay = decay
        self.shadow = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: torch.nn.Module, *, step: int | None = None) -> None:
        """One update; with `step` (0 for the first), the decay warms up as min(decay, (1 + step) / (10 + step))."""
        decay = self.decay if step is None else min(self.decay, (1 + step) / (10 + step))
        for shadow, live in zip(self.shadow.parameters(), model.parameters()):
            shadow.lerp_(live.detach(), 1 - decay)
        for shadow, live in zip(self.shadow.buffers(), model.buffers()):
            shadow.copy_(live)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.shadow.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.shadow.load_state_dict(state, strict=True)
