import math

import numpy as np
import pytest

from unclip.world.geometry import AREA, CENTROID_DY, coverage, inside
from unclip.world.vocab import SHAPES


def _grid(n=1201):
    t = (np.arange(n) + 0.5) / n - 0.5  # cell centres covering the unit box [-1/2, 1/2]
    return t[None, :], t[:, None]


@pytest.mark.parametrize("shape", SHAPES)
def test_closed_form_area_and_centroid_match_integration(shape):
    u, v = _grid()
    mask = inside(shape, u, v)
    area = mask.mean()
    assert area == pytest.approx(AREA[shape], abs=2e-3)
    ys = np.broadcast_to(v, mask.shape)[mask]
    xs = np.broadcast_to(u, mask.shape)[mask]
    assert ys.mean() == pytest.approx(CENTROID_DY[shape], abs=2e-3)
    assert xs.mean() == pytest.approx(0.0, abs=2e-3)  # every shape is left-right symmetric


def test_shapes_follow_world_md_geometry():
    pt = lambda shape, u, v: bool(inside(shape, np.array(u), np.array(v)))  # noqa: E731
    # Triangle: apex at the top centre, base of width 1 at height sqrt(3)/2, centred vertically.
    h = math.sqrt(3) / 2
    assert pt("triangle", 0.0, -h / 2 + 0.01) and not pt("triangle", 0.0, -h / 2 - 0.01)
    assert pt("triangle", 0.49, h / 2 - 0.001) and not pt("triangle", 0.0, h / 2 + 0.01)
    # Star: one point straight up at radius 1/2; the inner vertices at radius 0.382/2.
    assert pt("star", 0.0, -0.49) and not pt("star", 0.0, -0.51)
    r_in = 0.382 / 2
    a = math.radians(-90 + 36)  # first inner vertex, clockwise from the top point
    assert pt("star", 0.97 * r_in * math.cos(a), 0.97 * r_in * math.sin(a))
    assert not pt("star", 1.05 * r_in * math.cos(a), 1.05 * r_in * math.sin(a))
    # Cross: bars of thickness 1/3.
    assert pt("cross", 0.49, 0.16) and not pt("cross", 0.49, 0.18) and not pt("cross", 0.3, 0.3)
    # Diamond: vertices at the edge midpoints.
    assert pt("diamond", 0.49, 0.0) and not pt("diamond", 0.26, 0.26)
    with pytest.raises(ValueError, match="hexagon"):
        inside("hexagon", np.zeros(1), np.zeros(1))


@pytest.mark.parametrize("shape", SHAPES)
def test_coverage_is_a_fraction_whose_mass_is_the_area(shape):
    s = 13.7
    alpha = coverage(shape, cx=10.3, cy=11.6, s=s, x0=0, y0=0, width=24, height=24, supersample=8)
    assert alpha.min() >= 0 and alpha.max() <= 1
    assert alpha.sum() == pytest.approx(AREA[shape] * s * s, rel=0.02)
    assert 0 < ((alpha > 0) & (alpha < 1)).sum()  # anti-aliased edge pixels exist
