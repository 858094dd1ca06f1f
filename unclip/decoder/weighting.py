"""Per-pixel loss weights that favour the objects of a scene over its background (a training-only decoder setting).

Why: a Shapes scene is a uniform white or black background with objects on about 8% of its pixels at 32 px (a soft
mask's mean over 500 train scenes). Pixel MSE learns the background first and then sits on a plateau where the objects'
shapes are a small share of the loss (docs/decoder-learning.md, "Regressing the image on z_i is slow"), which is where
the two-hour pipeline's decoder stops: right colours in blobs, not shapes. `DecoderConfig.foreground_weight` λ makes an
object pixel count 1 + λ times a background pixel.

The mask is soft and read from the image alone, by the world's own rule for the background (WORLD.md: the colour of
the border pixels): m = max over channels of |x0 - border mean| / 2, in [0, 1] for images in [-1, 1], so an
anti-aliased edge counts in part. Each image's weights are divided by their mean over that image, so the loss keeps
the units (and the learning rate its meaning) of the unweighted one and each image its share of the batch; an image's
weights depend on that image alone, so gradient accumulation still equals a larger batch, and a run on N GPUs one on
one. (The runs measured in docs/pipeline.md divided by the batch's mean instead, at commit abc7133.)

The weights depend on x0, so the loss's minimiser is no longer E[v | x_t] but a mean tilted towards object
colours where x_t does not yet show where the objects are (high noise): the decoder draws objects too large, and too
many. Where x_t shows them, the tilt vanishes; `DecoderConfig.foreground_weight_below` keeps the weights to the
timesteps t < that fraction of T, where it is small.

Measured on the two-hour decoder (docs/pipeline.md, "Weighing the objects in the two-hour decoder's loss"): colours
came sooner, but after 7,500 steps neither λ = 4 nor λ = 4 below 0.6 T scored better than the unweighted loss, so no
shipped recipe uses it; it stays for the record and for larger budgets.
"""

from __future__ import annotations

import torch


def foreground_mask(images: torch.Tensor) -> torch.Tensor:
    """Soft object mask (B, 1, H, W) in [0, 1] of images (B, C, H, W) in [-1, 1]: each pixel's largest channel
    distance from the mean colour of the image's border pixels, halved."""
    if images.ndim != 4 or min(images.shape[-2:]) < 2:
        raise ValueError(f"images must be (B, C, H, W) with H, W >= 2, got {tuple(images.shape)}")
    border = torch.cat([images[..., 0, :], images[..., -1, :], images[..., 1:-1, 0], images[..., 1:-1, -1]], dim=-1)
    background = border.mean(dim=-1)[..., None, None]  # (B, C, 1, 1)
    return ((images - background).abs().amax(dim=1, keepdim=True) / 2).clamp_(0, 1)


def foreground_weights(images: torch.Tensor, weight: float, rows: torch.Tensor | None = None) -> torch.Tensor:
    """Loss weights (B, 1, H, W): 1 + weight * foreground_mask(images), divided by its mean over each image, in the
    rows where `rows` (B,) bool is True (every row without it); exactly 1 in the others."""
    if weight < 0:
        raise ValueError(f"foreground weight must be >= 0, got {weight}")
    w = 1 + weight * foreground_mask(images)
    w = w / w.mean(dim=(1, 2, 3), keepdim=True)
    if rows is not None:
        w = torch.where(rows[:, None, None, None], w, torch.ones_like(w))
    return w
