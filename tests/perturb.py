"""One helper for the decoder tests: trained-looking weights for a freshly built module."""

import torch


def perturb(module: torch.nn.Module, *, scale: float = 0.05,
            generator: torch.Generator | None = None) -> torch.nn.Module:
    """Add scale * N(0, 1) to every parameter, so the zero-initialised output layers are non-zero as training makes
    them and the outputs depend on every weight. Draws from `generator`, or from torch's global one when None."""
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn(p.shape, generator=generator, dtype=p.dtype, device=p.device))
    return module
