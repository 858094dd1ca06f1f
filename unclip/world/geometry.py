"""Shape geometry shared by the renderer and the parser: inside tests and pixel coverage.

WORLD.md "Objects": each shape is drawn filled, axis-aligned, centred in a square box of side s.
All tests work in box-relative coordinates u = (x - cx) / s, v = (y - cy) / s (y grows downwards),
so the same function serves every size and position.
"""

from __future__ import annotations

import math

import numpy as np

from .vocab import SHAPES

_SQRT3 = math.sqrt(3.0)
_STAR_INNER = 0.382  # inner radius as a fraction of the outer radius (WORLD.md)


def _star_inside(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Five-pointed star, one point straight up, outer radius 1/2, inner radius 0.382 * 1/2."""
    outer, inner = 0.5, 0.5 * _STAR_INNER
    # Angle measured from the upward point, clockwise on screen (y down): atan2(u, -v).
    theta = np.arctan2(u, -v)
    sector = 2 * math.pi / 5
    # Fold every direction into [0, 36 deg]: between an outer point (0) and an inner vertex (36 deg).
    phi = np.abs(np.mod(theta + sector / 2, sector) - sector / 2)
    rho = np.hypot(u, v)
    px, py = rho * np.cos(phi), rho * np.sin(phi)
    # Edge from the outer point (outer, 0) to the inner vertex (inner cos36, inner sin36):
    # the point is inside when it lies on the centre's side of that edge.
    ax, ay = outer, 0.0
    bx, by = inner * math.cos(sector / 2), inner * math.sin(sector / 2)
    cross_point = (bx - ax) * (py - ay) - (by - ay) * (px - ax)
    cross_centre = (bx - ax) * (0 - ay) - (by - ay) * (0 - ax)
    return cross_point * cross_centre >= 0


def inside(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Boolean mask: is the box-relative point (u, v) inside `shape`? The box is [-1/2, 1/2]^2."""
    if shape == "circle":
        return u * u + v * v <= 0.25
    if shape == "square":
        return (np.abs(u) <= 0.5) & (np.abs(v) <= 0.5)
    if shape == "diamond":
        return np.abs(u) + np.abs(v) <= 0.5
    if shape == "cross":
        # Two bars of length s and thickness s/3 crossing at the centre.
        au, av = np.abs(u), np.abs(v)
        return ((au <= 0.5) & (av <= 1 / 6)) | ((au <= 1 / 6) & (av <= 0.5))
    if shape == "triangle":
        # Equilateral, pointing up, width 1, height sqrt(3)/2, centred vertically in the box.
        half_h = _SQRT3 / 4
        depth = v + half_h  # 0 at the apex, 2 * half_h at the base
        return (depth >= 0) & (v <= half_h) & (np.abs(u) <= depth / _SQRT3)
    if shape == "star":
        return _star_inside(u, v)
    raise ValueError(f"unknown shape {shape!r}: expected one of {', '.join(SHAPES)}")


# Closed forms per unit box side: area / s^2 and the centroid's downward offset from the box centre / s.
# The parser turns a measured mass and centroid into (s, centre) with these; tests check them by integration.
AREA: dict[str, float] = {
    "circle": math.pi / 4,
    "square": 1.0,
    "diamond": 0.5,
    "cross": 5 / 9,
    "triangle": _SQRT3 / 4,
    "star": 5 * 0.5 * (0.5 * _STAR_INNER) * math.sin(math.radians(36)),
}
CENTROID_DY: dict[str, float] = {shape: 0.0 for shape in SHAPES} | {"triangle": _SQRT3 / 12}


def coverage(
    shape: str, *, cx: float, cy: float, s: float, x0: int, y0: int, width: int, height: int, supersample: int = 4
) -> np.ndarray:
    """Fraction of each pixel covered by the shape, on the pixel window [y0, y0+height) x [x0, x0+width).

    Coordinates are in pixels: (cx, cy) is the box centre, s its side. Each pixel is sampled on a
    supersample x supersample grid and the samples are averaged (WORLD.md: a box filter).
    Returns (height, width) float64 in [0, 1].
    """
    offsets = (np.arange(supersample) + 0.5) / supersample
    xs = (x0 + np.arange(width)[:, None] + offsets[None, :]).reshape(-1)  # (width * ss,)
    ys = (y0 + np.arange(height)[:, None] + offsets[None, :]).reshape(-1)  # (height * ss,)
    u = (xs[None, :] - cx) / s
    v = (ys[:, None] - cy) / s
    hit = inside(shape, u, v).astype(np.float64)  # (height * ss, width * ss)
    return hit.reshape(height, supersample, width, supersample).mean(axis=(1, 3))
