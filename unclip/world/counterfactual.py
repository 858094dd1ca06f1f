"""Scenes that differ from a true scene in one way that makes its caption false: the image side of a hard negative.

world/perturb.py changes a caption and keeps the image; this changes the image and keeps the caption. A re-ranker
compares several images for one caption, so the negatives that teach it most are images a decoder might draw
instead: the right objects in the wrong layout, colours bound to the wrong shapes, an object missing.

Every scene returned is false of the true caption, checked symbolically (score.caption_holds), and stays inside the
world's rules for boxes: the layout changes are the square's symmetries about its centre (mirrors, the transposition,
rotations), which keep every box inside the canvas, boxes apart and centres off the thirds' lines.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from .captions import parse_caption
from .perturb import pick_other
from .scene import Scene
from .score import caption_holds
from .vocab import BACKGROUNDS, COLOURS, SHAPES

CHANGES: tuple[str, ...] = ("layout", "colour", "shape", "binding", "drop", "background")

# The seven symmetries of the square other than the identity, as maps of a centre (x, y) in unit coordinates.
_SYMMETRIES = (
    lambda x, y: (1 - x, y), lambda x, y: (x, 1 - y), lambda x, y: (1 - x, 1 - y), lambda x, y: (y, x),
    lambda x, y: (1 - y, 1 - x), lambda x, y: (1 - y, x), lambda x, y: (y, 1 - x),
)


def _candidate(scene: Scene, change: str, rng: np.random.Generator) -> Scene | None:
    objects = list(scene.objects)
    k = int(rng.integers(len(objects)))
    if change == "layout":
        move = _SYMMETRIES[int(rng.integers(len(_SYMMETRIES)))]
        moved = [move(o.cx, o.cy) for o in objects]
        objects = [replace(o, cx=float(x), cy=float(y)) for o, (x, y) in zip(objects, moved)]
    elif change == "colour":
        objects[k] = replace(objects[k], colour=pick_other(rng, tuple(COLOURS), objects[k].colour))
    elif change == "shape":
        objects[k] = replace(objects[k], shape=pick_other(rng, SHAPES, objects[k].shape))
    elif change == "binding":  # two objects trade colours: each colour now sits on the other's shape
        pairs = [(i, j) for i in range(len(objects)) for j in range(i + 1, len(objects))
                 if objects[i].colour != objects[j].colour and objects[i].shape != objects[j].shape]
        if not pairs:
            return None
        i, j = pairs[int(rng.integers(len(pairs)))]
        objects[i], objects[j] = replace(objects[i], colour=objects[j].colour), replace(objects[j],
                                                                                        colour=objects[i].colour)
    elif change == "drop":
        if len(objects) < 2:
            return None
        del objects[k]
    elif change == "background":
        return replace(scene, background=pick_other(rng, tuple(BACKGROUNDS), scene.background))
    else:
        raise ValueError(f"unknown scene change {change!r}: expected one of {', '.join(CHANGES)}")
    return replace(scene, objects=tuple(objects))


def counterfactual(scene: Scene, change: str, rng: np.random.Generator, *, tries: int = 8) -> Scene | None:
    """`scene` changed by `change` (one of CHANGES) so that its caption is false of it; None if no such change
    was found in `tries` draws (a layout change leaves a list's caption true, a background change an unstated
    background's). The returned scene keeps the true caption in its `caption` field."""
    spec = parse_caption(scene.caption)
    for _ in range(tries):
        other = _candidate(scene, change, rng)
        if other is None:
            return None
        if not caption_holds(spec, other):
            return other
    return None
