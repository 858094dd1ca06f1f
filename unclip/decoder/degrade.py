"""Corruptions of the upsamplers' conditioning images, and consistent random crops (unCLIP §2.1).

unCLIP slightly corrupts the low-res image an upsampler is conditioned on, so that it tolerates the
artefacts of the stage below: Gaussian blur for the first upsampler, and for the second the more
diverse "BSR" degradation (Zhang et al. 2021, BSRGAN §3; used by Rombach et al. 2022 for latent
super-resolution). Images are (B, C, H, W) in [-1, 1]; every random choice comes from a torch.Generator.
Written with torch, numpy and Pillow only.
"""

from __future__ import annotations

import io
import math

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

DOWNSAMPLE_MODES = ("bicubic", "bilinear", "area")
UPSAMPLE_MODES = ("bicubic", "bilinear")


def _device(generator: torch.Generator | None) -> torch.device | None:
    """Random draws happen on the generator's device (the CPU without one)."""
    return generator.device if generator is not None else None


def _uniform(n: int, low: float, high: float, generator: torch.Generator | None) -> torch.Tensor:
    """(n,) float64 draws from U(low, high)."""
    device = _device(generator)
    return low + (high - low) * torch.rand(n, generator=generator, device=device, dtype=torch.float64)


def _radius(sigma: float, size: int) -> int:
    """Kernel radius covering 3 sigma, at most size - 1 (reflect padding needs pad < side)."""
    return max(0, min(math.ceil(3 * sigma), size - 1))


def gaussian_blur(x: torch.Tensor, sigma: float | torch.Tensor) -> torch.Tensor:
    """Separable isotropic Gaussian blur with reflect padding; `sigma` in pixels, a number or (B,) per sample.

    Sigma 0 leaves a sample unchanged. All samples share the kernel radius ceil(3 * max sigma).
    """
    if x.ndim != 4:
        raise ValueError(f"expected images (B, C, H, W), got shape {tuple(x.shape)}")
    b, c, h, w = x.shape
    sigma = torch.as_tensor(sigma, dtype=torch.float64, device=x.device)
    if sigma.ndim == 0:
        sigma = sigma.expand(b)
    if sigma.shape != (b,):
        raise ValueError(f"sigma must be a number or of shape ({b},), got shape {tuple(sigma.shape)}")
    if bool((sigma < 0).any()):
        raise ValueError(f"blur sigma must be >= 0, got {sigma.tolist()}")
    r = _radius(float(sigma.max()), min(h, w))
    if r == 0:
        return x
    offsets = torch.arange(-r, r + 1, device=x.device, dtype=torch.float64)  # (K,)
    safe = sigma.clamp(min=1e-12)[:, None]  # (B, 1)
    kernel = torch.exp(-0.5 * (offsets[None] / safe) ** 2)  # (B, K)
    kernel = torch.where(sigma[:, None] > 0, kernel, (offsets == 0).to(kernel).expand_as(kernel))
    kernel = (kernel / kernel.sum(1, keepdim=True)).to(x.dtype).repeat_interleave(c, dim=0)  # (B*C, K)
    flat = x.reshape(1, b * c, h, w)  # (1, B*C, H, W): one group per (sample, channel)
    flat = F.conv2d(F.pad(flat, (0, 0, r, r), mode="reflect"), kernel[:, None, :, None], groups=b * c)  # vertical
    flat = F.conv2d(F.pad(flat, (r, r, 0, 0), mode="reflect"), kernel[:, None, None, :], groups=b * c)  # horizontal
    return flat.reshape(b, c, h, w)  # (B, C, H, W)


def random_blur(x: torch.Tensor, *, sigma_range: tuple[float, float], generator: torch.Generator | None = None):
    """unCLIP §2.1, first upsampler: Gaussian blur with sigma ~ U(sigma_range) drawn per sample."""
    low, high = sigma_range
    if not 0 <= low <= high:
        raise ValueError(f"sigma_range must satisfy 0 <= low <= high, got {sigma_range}")
    return gaussian_blur(x, _uniform(len(x), low, high, generator))


def anisotropic_kernel(sigma_x: float, sigma_y: float, theta: float, *, size: int) -> torch.Tensor:
    """(K, K) normalised Gaussian with principal stds (sigma_x, sigma_y) rotated by theta (BSRGAN §3.1)."""
    r = _radius(max(sigma_x, sigma_y), size)
    cos, sin = math.cos(theta), math.sin(theta)
    rot = torch.tensor([[cos, -sin], [sin, cos]], dtype=torch.float64)
    cov = rot @ torch.diag(torch.tensor([sigma_x ** 2, sigma_y ** 2], dtype=torch.float64)) @ rot.T
    offsets = torch.arange(-r, r + 1, dtype=torch.float64)
    grid = torch.stack(torch.meshgrid(offsets, offsets, indexing="ij"), dim=-1)  # (K, K, 2) as (row, col)
    quad = torch.einsum("ijk,kl,ijl->ij", grid, torch.linalg.inv(cov), grid)  # (K, K)
    kernel = torch.exp(-0.5 * quad)
    return kernel / kernel.sum()


def _blur_with(img: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Convolve one image (C, H, W) with a (K, K) kernel, reflect padding."""
    c, r = img.shape[0], kernel.shape[0] // 2
    weight = kernel.to(img).expand(c, 1, *kernel.shape)  # (C, 1, K, K)
    padded = F.pad(img[None], (r, r, r, r), mode="reflect")  # (1, C, H + 2r, W + 2r)
    return F.conv2d(padded, weight, groups=c)[0]


def resize(x: torch.Tensor, size: tuple[int, int], mode: str) -> torch.Tensor:
    """Resize (B, C, H, W) to `size` with 'bicubic', 'bilinear' (antialiased when shrinking) or 'area'."""
    if mode == "area":
        return F.interpolate(x, size=size, mode="area")
    if mode not in UPSAMPLE_MODES:
        raise ValueError(f"unknown interpolation {mode!r}: expected one of {', '.join(DOWNSAMPLE_MODES)}")
    shrink = size[0] < x.shape[-2] or size[1] < x.shape[-1]
    return F.interpolate(x, size=size, mode=mode, align_corners=False, antialias=shrink)


def jpeg_compress(x: torch.Tensor, quality: int | list[int]) -> torch.Tensor:
    """Encode and decode each image as JPEG with Pillow at `quality` (1-95; one int or one per sample)."""
    qualities = [quality] * len(x) if isinstance(quality, int) else list(quality)
    if len(qualities) != len(x) or not all(1 <= q <= 95 for q in qualities):
        raise ValueError(f"need one JPEG quality in 1..95 per image ({len(x)}), got {quality}")
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"JPEG needs (B, 1 or 3, H, W) images, got shape {tuple(x.shape)}")
    pixels = ((x.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1)  # (B,H,W,C)
    out = []
    for arr, q in zip(pixels.cpu().numpy(), qualities):
        buffer = io.BytesIO()
        Image.fromarray(arr[..., 0] if arr.shape[-1] == 1 else arr).save(buffer, format="JPEG", quality=int(q))
        buffer.seek(0)
        decoded = np.asarray(Image.open(buffer).convert("L" if arr.shape[-1] == 1 else "RGB"))
        out.append(torch.from_numpy(decoded.reshape(arr.shape).copy()))  # (H, W, C): grey images regain their C
    decoded = torch.stack(out).permute(0, 3, 1, 2)  # (B, C, H, W) uint8
    return (decoded.to(device=x.device, dtype=x.dtype) / 127.5 - 1).contiguous()


def _draw(choices, generator: torch.Generator | None):
    return choices[int(torch.randint(len(choices), (1,), generator=generator, device=_device(generator)))]


def bsr_degrade(x: torch.Tensor, generator: torch.Generator | None = None, *,
                blur_sigma: tuple[float, float] = (0.2, 2.0), scale: tuple[float, float] = (1.0, 2.0),
                noise_sigma: tuple[float, float] = (1 / 255, 25 / 255),
                jpeg_quality: tuple[int, int] = (30, 95)) -> torch.Tensor:
    """unCLIP §2.1, second upsampler: BSRGAN's randomly shuffled degradations (Zhang et al. 2021 §3.1-3.4).

    Per image, in a random order: a Gaussian blur (isotropic or anisotropic, principal stds ~ U(blur_sigma)
    pixels, random angle), a downscale by ~ U(scale) with a random interpolation (bicubic / bilinear / area),
    additive Gaussian noise (std ~ U(noise_sigma) in [0, 1] units, i.e. BSRGAN's levels 1..25 of 255);
    then a resize back to the input size (bicubic or bilinear) and JPEG compression at a quality
    ~ U{jpeg_quality}. Output: same shape as x, in [-1, 1], 8-bit levels.
    """
    if x.ndim != 4:
        raise ValueError(f"expected images (B, C, H, W), got shape {tuple(x.shape)}")
    _, _, h, w = x.shape
    out = []
    for img in x:  # (C, H, W)
        for op in torch.randperm(3, generator=generator, device=_device(generator)).tolist():
            if op == 0:
                s = _uniform(2, *blur_sigma, generator).tolist()
                if float(_uniform(1, 0, 1, generator)) < 0.5:  # isotropic half the time
                    s[1] = s[0]
                theta = float(_uniform(1, 0, math.pi, generator))
                img = _blur_with(img, anisotropic_kernel(s[0], s[1], theta, size=min(img.shape[1:])))
            elif op == 1:
                f = float(_uniform(1, *scale, generator))
                small = (max(1, round(img.shape[1] / f)), max(1, round(img.shape[2] / f)))
                img = resize(img[None], small, _draw(DOWNSAMPLE_MODES, generator))[0]
            else:
                sigma = 2 * float(_uniform(1, *noise_sigma, generator))  # [0, 1] units -> [-1, 1] units
                noise = torch.randn(img.shape, generator=generator, device=_device(generator), dtype=torch.float32)
                img = img + sigma * noise.to(img)
        if img.shape[1:] != (h, w):
            img = resize(img[None], (h, w), _draw(UPSAMPLE_MODES, generator))[0]
        quality = int(torch.randint(jpeg_quality[0], jpeg_quality[1] + 1, (1,), generator=generator,
                                    device=_device(generator)))
        out.append(jpeg_compress(img[None], quality)[0])
    return torch.stack(out)  # (B, C, H, W)


def random_crop(hi: torch.Tensor, lo: torch.Tensor, crop_size: int, *, generator: torch.Generator | None = None):
    """Crop the high-res targets (B, C, S, S) and the matching low-res regions (B, C', S/f, S/f) at one random
    place per sample; crops start on the low-res grid, so the low-res crop covers exactly the high-res one.
    Returns (hi crop (B, C, crop, crop), lo crop (B, C', crop / f, crop / f))."""
    if hi.ndim != 4 or lo.ndim != 4 or len(hi) != len(lo):
        raise ValueError(f"need two image batches of one size, got {tuple(hi.shape)} and {tuple(lo.shape)}")
    (h, w), (lh, lw) = hi.shape[-2:], lo.shape[-2:]
    factor = h // lh
    if factor < 1 or h != factor * lh or w != factor * lw:
        raise ValueError(f"high-res {h}x{w} is not an integer multiple of low-res {lh}x{lw}")
    if crop_size % factor or not 0 < crop_size <= min(h, w):
        raise ValueError(f"crop_size {crop_size} must be a multiple of the scale factor {factor} and fit in {h}x{w}")
    small = crop_size // factor
    top = torch.randint(0, lh - small + 1, (len(hi),), generator=generator, device=_device(generator)).tolist()
    left = torch.randint(0, lw - small + 1, (len(hi),), generator=generator, device=_device(generator)).tolist()
    his = [hi[i, :, t * factor:(t + small) * factor, s * factor:(s + small) * factor]
           for i, (t, s) in enumerate(zip(top, left))]
    los = [lo[i, :, t:t + small, s:s + small] for i, (t, s) in enumerate(zip(top, left))]
    return torch.stack(his), torch.stack(los)
