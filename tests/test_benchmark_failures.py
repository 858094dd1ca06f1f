"""benchmarks/decoder.py's first_failure: each kind of mistake, drawn on purpose, is named as that kind."""

import dataclasses
import sys
from pathlib import Path

import pytest

from unclip.world import parse_image, render, sample_scene

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from decoder import first_failure  # noqa: E402


def _pair_of_different_shapes_and_colours():
    for index in range(200):
        scene = sample_scene("test", index)
        if scene.form == "pair":
            a, b = scene.objects
            if a.colour != b.colour and a.shape != b.shape:
                return scene
    raise AssertionError("no such scene in the first 200 test scenes")


def _drawn(scene, *objects):
    """What the parser reads from `scene` drawn with `objects` instead of its own."""
    return parse_image(render(dataclasses.replace(scene, objects=tuple(objects)), 64))


@pytest.mark.parametrize("kind", ["count", "colours", "shapes", "binding", "other"])
def test_first_failure_names_the_mistake_drawn(kind):
    scene = _pair_of_different_shapes_and_colours()
    a, b = scene.objects
    other_colour = next(c for c in ("red", "green", "blue", "yellow") if c not in (a.colour, b.colour))
    other_shape = next(s for s in ("circle", "square", "cross") if s not in (a.shape, b.shape))
    drawn = {
        "count": (a,),
        "colours": (dataclasses.replace(a, colour=other_colour), b),
        "shapes": (dataclasses.replace(a, shape=other_shape), b),
        "binding": (dataclasses.replace(a, colour=b.colour), dataclasses.replace(b, colour=a.colour)),
        "other": (dataclasses.replace(a, cx=b.cx, cy=b.cy), dataclasses.replace(b, cx=a.cx, cy=a.cy)),  # swapped places
    }[kind]
    assert first_failure(_drawn(scene, *drawn), scene) == kind
    assert first_failure(_drawn(scene, *scene.objects), scene) == "other"  # nothing but what the scorer alone judges
