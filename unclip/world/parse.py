"""Read the objects back out of any image (WORLD.md "Scoring a generated image against its caption").

The parser works on an image as a mix of a background colour B and palette colours C: every
pixel p is modelled as B + alpha * (C - B). Steps:
1. Background: the median colour of the border ring; named white or black when within
   BACKGROUND_TOLERANCE of one, otherwise unnamed (None), and then no stated background holds.
2. Foreground: a pixel belongs to an object when the palette colour that explains it best covers
   more than half of it (alpha > 0.5). Connected components (4-neighbour) of each colour's pixels
   under 0.3% of the image are ignored; touching objects of different colours stay apart.
3. Colour: the palette colour whose mixing line B -> C explains the component's pixels best
   (least squared distance), so anti-aliased or blurred edges vote for the right colour.
4. Shape, size and centre: alpha maps are blur-invariant in their mass and centroid, so for each
   shape the closed-form area and centroid offset (geometry.py) give its box side s and centre;
   the shape's coverage, blurred by each of a few widths, is compared with the measured alpha,
   and the best fit names the shape. s decides the size class (small when s < 0.27).

Decisions where WORLD.md is silent: images larger than WORK_SIZE are area-downsampled to it
first (the contract's geometry is resolution-free); a component whose best fit leaves more than
MAX_FIT_ERROR of its energy unexplained gets shape None, so a shapeless blob never counts as a shape;
one whose pixels lie further than MAX_COLOUR_RMS from every palette colour's mixing line gets colour
None (brown is not red). Touching objects of one colour merge into one component, which then
fits no shape.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image
from scipy import ndimage

from .geometry import AREA, CENTROID_DY, coverage
from .vocab import BACKGROUNDS, COLOURS, SHAPES, SIZE_THRESHOLD

WORK_SIZE = 128  # larger images are area-downsampled to this side before parsing
BACKGROUND_TOLERANCE = 64.0  # RGB distance within which a border colour counts as white or black
FOREGROUND_ALPHA = 0.5
MIN_COMPONENT_FRACTION = 0.003  # WORLD.md: ignore components under 0.3% of the image
REGION_RADIUS = 3.0  # pixels around a component whose alpha counts towards its mass
BLUR_SIGMAS = (0.0, 0.6, 1.0, 1.5)  # pixel widths the shape templates are tried at
MAX_COLOUR_RMS = 40.0  # RGB distance (RMS over the component) from its colour's mixing line; beyond it, no colour
MAX_FIT_ERROR = 0.1  # relative squared error above which a component is no shape (renders: <= 0.04)

_PALETTE_NAMES = tuple(COLOURS)
_PALETTE = np.array([COLOURS[c] for c in _PALETTE_NAMES], dtype=np.float64)  # (K, 3)


@dataclass(frozen=True)
class ParsedObject:
    colour: str | None  # None when no palette colour explains the component (see MAX_COLOUR_RMS)
    shape: str | None  # None when no shape fits (see MAX_FIT_ERROR)
    size: str  # "small" | "large"
    s: float  # fitted box side, unit coordinates
    cx: float  # fitted box centre, unit coordinates
    cy: float
    fit_error: float  # relative squared error of the best shape fit


@dataclass(frozen=True)
class ParsedImage:
    background: str | None  # "white", "black", or None when the border is far from both
    background_rgb: tuple[float, float, float]
    objects: tuple[ParsedObject, ...]


def as_rgb_array(image) -> np.ndarray:
    """A PIL image or an (H, W, 3) array as a square float64 RGB array in 0..255."""
    if isinstance(image, Image.Image):
        if image.mode in ("I", "F") or image.mode.startswith("I;"):
            raise ValueError(f"image mode {image.mode!r} is not an 8-bit image; convert it to RGB first")
        array = np.asarray(image.convert("RGB"), dtype=np.float64)
    else:
        array = np.asarray(image)
        if array.ndim != 3 or array.shape[2] != 3:
            raise ValueError(f"expected an (H, W, 3) RGB array, got shape {array.shape}")
        if array.dtype != np.uint8:
            raise ValueError(f"expected a uint8 array with values 0..255, got dtype {array.dtype}")
        array = array.astype(np.float64)
    height, width = array.shape[:2]
    if height != width:
        raise ValueError(f"Shapes world images are square; got {width}x{height}")
    if height < 16:
        raise ValueError(f"image side {height} is below the world's minimum of 16 pixels")
    return array


def _downsample(array: np.ndarray) -> np.ndarray:
    if array.shape[0] <= WORK_SIZE:
        return array
    image = Image.fromarray(np.clip(np.rint(array), 0, 255).astype(np.uint8), mode="RGB")
    return np.asarray(image.resize((WORK_SIZE, WORK_SIZE), Image.Resampling.BOX), dtype=np.float64)


def _background(array: np.ndarray) -> tuple[str | None, np.ndarray]:
    ring = max(1, array.shape[0] // 32)
    border = np.concatenate([
        array[:ring].reshape(-1, 3), array[-ring:].reshape(-1, 3),
        array[:, :ring].reshape(-1, 3), array[:, -ring:].reshape(-1, 3),
    ])
    rgb = np.median(border, axis=0)
    for name, ref in BACKGROUNDS.items():
        if np.linalg.norm(rgb - np.array(ref)) <= BACKGROUND_TOLERANCE:
            return name, rgb
    return None, rgb


def _fit_shape(alpha: np.ndarray, region: np.ndarray, mass: float, mx: float, my: float):
    """Best (shape, s, cx, cy, relative error) for an alpha map restricted to `region`."""
    ys, xs = np.nonzero(region)
    pad = int(np.ceil(3 * max(BLUR_SIGMAS))) + 1
    y0, x0 = ys.min() - pad, xs.min() - pad
    height, width = ys.max() + pad + 1 - y0, xs.max() + pad + 1 - x0
    target = alpha[ys, xs]
    energy = max(float(np.sum(target ** 2)), 1e-9)
    best = None
    for shape in SHAPES:
        s = float(np.sqrt(max(mass, 1e-9) / AREA[shape]))
        cx, cy = mx, my - CENTROID_DY[shape] * s
        sharp = coverage(shape, cx=cx, cy=cy, s=s, x0=x0, y0=y0, width=width, height=height)
        for sigma in BLUR_SIGMAS:
            template = ndimage.gaussian_filter(sharp, sigma, mode="constant") if sigma > 0 else sharp
            error = float(np.sum((template[ys - y0, xs - x0] - target) ** 2)) / energy
            if best is None or error < best[4]:
                best = (shape, s, cx, cy, error)
    return best


def parse_image(image) -> ParsedImage:
    """Find the background and every object (colour, shape, size, centre) in a square RGB image."""
    array = _downsample(as_rgb_array(image))
    side = array.shape[0]
    background, b_rgb = _background(array)
    offset = array - b_rgb  # (H, W, 3)
    direction = _PALETTE - b_rgb  # (K, 3)
    norm2 = np.maximum(np.sum(direction ** 2, axis=1), 1e-9)  # (K,)
    alpha = np.einsum("hwc,kc->hwk", offset, direction) / norm2  # (H, W, K)
    clipped = np.clip(alpha, 0.0, 1.0)
    residual2 = np.sum((offset[:, :, None, :] - clipped[..., None] * direction) ** 2, axis=-1)  # (H, W, K)
    best_k = np.argmin(residual2, axis=-1)  # (H, W)
    strength = np.take_along_axis(clipped, best_k[..., None], axis=-1)[..., 0]  # (H, W)
    # Label each colour's pixels apart, so that touching objects of different colours stay two objects.
    foreground = strength > FOREGROUND_ALPHA
    labels, n = ndimage.label(foreground & (best_k == 0))
    for k in range(1, len(_PALETTE)):
        labels_k, n_k = ndimage.label(foreground & (best_k == k))
        labels = np.where(labels_k > 0, labels_k + n, labels)
        n += n_k
    sizes = ndimage.sum_labels(np.ones_like(strength), labels, index=np.arange(1, n + 1))
    keep = [i + 1 for i in range(n) if sizes[i] >= MIN_COMPONENT_FRACTION * side * side]
    if not keep:
        return ParsedImage(background=background, background_rgb=tuple(b_rgb.tolist()), objects=())
    kept = np.isin(labels, keep)
    distance, (iy, ix) = ndimage.distance_transform_edt(~kept, return_indices=True)
    nearest = labels[iy, ix]  # (H, W): the kept component nearest to each pixel
    grid_y, grid_x = np.mgrid[0:side, 0:side] + 0.5  # pixel centres
    objects = []
    for label in keep:
        component = labels == label
        fit = residual2[component].mean(axis=0)  # (K,) mean squared distance to each mixing line
        k = int(np.argmin(fit))
        colour = _PALETTE_NAMES[k] if np.sqrt(fit[k]) <= MAX_COLOUR_RMS else None
        region = (nearest == label) & (distance <= REGION_RADIUS)
        a = np.where(region, np.clip(alpha[..., k], -0.5, 1.5), 0.0)
        mass = float(a.sum())
        if mass <= 0:
            continue
        mx, my = float((a * grid_x).sum() / mass), float((a * grid_y).sum() / mass)
        shape, s, cx, cy, error = _fit_shape(a, region, mass, mx, my)
        s_unit = s / side
        objects.append(ParsedObject(
            colour=colour, shape=shape if error <= MAX_FIT_ERROR else None,
            size="small" if s_unit < SIZE_THRESHOLD else "large",
            s=s_unit, cx=cx / side, cy=cy / side, fit_error=error,
        ))
    return ParsedImage(background=background, background_rgb=tuple(b_rgb.tolist()), objects=tuple(objects))
