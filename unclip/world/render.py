"""Anti-aliased rendering of a scene at any size (WORLD.md "Canvas" and "Objects")."""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

from .geometry import coverage
from .scene import Scene
from .vocab import BACKGROUNDS, COLOURS, check_image_size

SUPERSAMPLE = 4  # WORLD.md: supersample at least 4x, then downsample with a box filter


def render_array(scene: Scene, size: int) -> np.ndarray:
    """Render `scene` as a (size, size, 3) uint8 array; byte-identical on every call and machine."""
    check_image_size(size)
    background = np.array(BACKGROUNDS[scene.background], dtype=np.float64)
    image = np.broadcast_to(background, (size, size, 3)).copy()
    for obj in scene.objects:
        cx, cy, s = obj.cx * size, obj.cy * size, obj.s * size
        x0, y0 = max(int(math.floor(cx - s / 2)), 0), max(int(math.floor(cy - s / 2)), 0)
        x1, y1 = min(int(math.ceil(cx + s / 2)), size), min(int(math.ceil(cy + s / 2)), size)
        alpha = coverage(obj.shape, cx=cx, cy=cy, s=s, x0=x0, y0=y0, width=x1 - x0, height=y1 - y0,
                         supersample=SUPERSAMPLE)[..., None]  # (h, w, 1)
        colour = np.array(COLOURS[obj.colour], dtype=np.float64)
        window = image[y0:y1, x0:x1]
        image[y0:y1, x0:x1] = window + alpha * (colour - window)
    return np.rint(image).astype(np.uint8)


def render(scene: Scene, size: int) -> Image.Image:
    """Render `scene` as an RGB PIL image of side `size` (16..1024)."""
    return Image.fromarray(render_array(scene, size), mode="RGB")
