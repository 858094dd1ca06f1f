"""The diffusion upsamplers (unCLIP §2.1): 64 -> 256 and 256 -> 1024 in the paper, ADM UNets without attention
conditioned on the low-res image only (no caption, no z_i, no guidance).

Training (unCLIP §2.1 and Appendix C): the low-res image is slightly corrupted (Gaussian blur for the first
upsampler, BSR degradation for the second), a random crop of a quarter of the output side is cut from the
target and the matching low-res region, and the low-res crop, upsampled bicubically to the crop size, is
concatenated to the noised input (SR3, Saharia et al. 2021). The network is fully convolutional, so
sampling runs directly at the full output size.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..diffusion import GaussianDiffusion, ModelFn
from .config import UpsamplerConfig
from .decoder import run_sampler
from .degrade import bsr_degrade, random_blur, random_crop, resize
from .unet import UNet


def upsample_bicubic(low_res: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The conditioning input: (B, C, h, w) -> (B, C, *size), bicubic, clamped to the image range [-1, 1]."""
    return resize(low_res, size, "bicubic").clamp(-1, 1)


def downsample_bicubic(images: torch.Tensor, size: int) -> torch.Tensor:
    """(B, C, S, S) -> (B, C, size, size) with an antialiased bicubic filter, clamped to [-1, 1]."""
    return resize(images, (size, size), "bicubic").clamp(-1, 1)


class Upsampler(nn.Module):
    """The UNet plus its diffusion; `loss` on random crops, `sample` at full size."""

    def __init__(self, cfg: UpsamplerConfig):
        super().__init__()
        self.config = cfg
        self.net = UNet(cfg.unet)
        self.diffusion = GaussianDiffusion(cfg.diffusion)

    def degrade(self, low_res: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """The training-time corruption of the conditioning image, per the config (unCLIP §2.1)."""
        kind = self.config.degradation
        if kind == "blur":
            return random_blur(low_res, sigma_range=self.config.blur_sigma, generator=generator)
        if kind == "bsr":
            return bsr_degrade(low_res, generator)
        return low_res

    def loss(self, *, images: torch.Tensor, low_res: torch.Tensor | None = None,
             generator: torch.Generator | None = None) -> torch.Tensor:
        """Mean diffusion loss on random crops of the targets images (B, C, S, S), S = image_size, conditioned on
        low_res (B, C, s, s), s = low_res_size (by default the targets downsampled bicubically)."""
        cfg = self.config
        c, s, small = cfg.unet.in_channels, cfg.image_size, cfg.low_res_size
        if images.ndim != 4 or tuple(images.shape[1:]) != (c, s, s):
            raise ValueError(f"images must be (B, {c}, {s}, {s}), got {tuple(images.shape)}")
        if low_res is None:
            low_res = downsample_bicubic(images, small)
        elif tuple(low_res.shape) != (len(images), c, small, small):
            raise ValueError(f"low_res must be {(len(images), c, small, small)}, got {tuple(low_res.shape)}")
        low_res = self.degrade(low_res, generator)  # whole images, so the blur never sees a crop's edge
        # unCLIP Appendix C: crops a quarter of the output side
        target, low_crop = random_crop(images, low_res, cfg.crop_size, generator=generator)
        cond = upsample_bicubic(low_crop, (cfg.crop_size, cfg.crop_size))  # (B, C, crop, crop)
        b, device = len(images), images.device
        t = self.diffusion.sample_timesteps(b, generator=generator, device=device)
        noise = torch.randn(target.shape, generator=generator, device=device, dtype=target.dtype)

        def model_fn(x: torch.Tensor, tt: torch.Tensor) -> torch.Tensor:
            return self.net(x, tt, low_res=cond)

        return self.diffusion.training_losses(model_fn, target, t, noise)["loss"].mean()

    def output_size(self, low_res: torch.Tensor) -> tuple[int, int]:
        """(H, W) of the upsampled output for a low-res batch (B, C, h, w): the scale factor times (h, w)."""
        cfg = self.config
        if low_res.ndim != 4 or low_res.shape[1] != cfg.unet.in_channels:
            raise ValueError(f"low_res must be (B, {cfg.unet.in_channels}, h, w), got {tuple(low_res.shape)}")
        h, w = (side * cfg.factor for side in low_res.shape[-2:])
        if h % cfg.unet.divisor or w % cfg.unet.divisor:
            raise ValueError(f"low-res {tuple(low_res.shape[-2:])} upsamples to {h}x{w}, not a multiple of the "
                             f"UNet's divisor {cfg.unet.divisor}")
        return h, w

    def denoiser(self, *, low_res: torch.Tensor) -> ModelFn:
        """model_fn(x_t, t) conditioned on low_res (B, C, h, w), upsampled bicubically to the output size."""
        cond = upsample_bicubic(low_res, self.output_size(low_res))

        def model_fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            return self.net(x, t, low_res=cond.to(x.dtype))

        return model_fn

    @torch.no_grad()
    def sample(self, *, low_res: torch.Tensor, steps: int | str | Sequence[int] | None = 27, sampler: str = "ddim",
               eta: float = 0.0, threshold: str | None = "static",
               generator: torch.Generator | Sequence[torch.Generator] | None = None,
               x_T: torch.Tensor | None = None) -> torch.Tensor:
        """Upsample low_res (B, C, h, w) in [-1, 1] to (B, C, f h, f w), f = image_size / low_res_size, at full size.

        No corruption is applied at sampling. unCLIP samples its upsamplers with DDIM in 27 (64 -> 256) and
        15 (256 -> 1024) steps (Appendix C).
        """
        h, w = self.output_size(low_res)
        shape = (len(low_res), self.config.unet.in_channels, h, w)
        dtype = next(self.net.parameters()).dtype
        return run_sampler(self.denoiser(low_res=low_res.to(dtype)), self.diffusion, shape, sampler=sampler, x_T=x_T,
                           steps=steps, eta=eta, threshold=threshold, generator=generator, device=low_res.device,
                           dtype=dtype)
