"""Loading user images safely and turning them into model tensors."""

from __future__ import annotations

import io
import os
import warnings

import numpy as np
import torch
from PIL import Image

# Pillow warns past MAX_IMAGE_PIXELS and raises past twice that; unclip raises at the limit itself.
MAX_IMAGE_PIXELS = 64 * 1024 * 1024


def load_image(source: str | os.PathLike | bytes) -> Image.Image:
    """Open a file path or encoded bytes as an RGB image; transparent pixels are laid on white.

    Raises ValueError for anything that is not a readable image, and for decompression bombs
    (more than MAX_IMAGE_PIXELS pixels), as an error rather than Pillow's warning.
    """
    name = "<bytes>" if isinstance(source, bytes) else str(source)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as image:
                if image.width * image.height > MAX_IMAGE_PIXELS:
                    raise ValueError(f"{name} is {image.width}x{image.height}, over the {MAX_IMAGE_PIXELS} pixel limit")
                image.load()
                if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
                    rgba = image.convert("RGBA")
                    canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                    return Image.alpha_composite(canvas, rgba).convert("RGB")
                return image.convert("RGB")
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as error:
        raise ValueError(f"{name} looks like a decompression bomb: {error}") from None
    except (OSError, SyntaxError) as error:  # Pillow raises these for truncated or non-image data
        raise ValueError(f"{name} is not a readable image: {error}") from None


def to_tensor(image: Image.Image, size: int) -> torch.Tensor:
    """Centre-crop to a square, resize to `size` (Lanczos down, bicubic up); (3, size, size) float32 in [-1, 1]."""
    side = min(image.size)
    left, top = (image.width - side) // 2, (image.height - side) // 2
    square = image.crop((left, top, left + side, top + side))
    if side != size:
        resample = Image.Resampling.LANCZOS if side > size else Image.Resampling.BICUBIC
        square = square.resize((size, size), resample)
    pixels = np.asarray(square.convert("RGB"), dtype=np.float32)  # (H, W, 3)
    return torch.from_numpy(pixels.transpose(2, 0, 1).copy()) / 127.5 - 1.0


def to_pil(x: torch.Tensor) -> Image.Image:
    """(3, S, S) in [-1, 1] -> an RGB PIL image (rounded to the nearest 8-bit level)."""
    array = ((x.detach().float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).cpu().numpy()  # (S, S, 3)
    return Image.fromarray(array, mode="RGB")
