"""Captions that differ from a scene's true caption in exactly one attribute.

Used to check that the scorer rejects wrong captions, and later as hard negatives for CLIP
(pick the true caption among ones that each change one attribute). Every caption returned here
is false of its scene, checked symbolically against the scene's true objects.
"""

from __future__ import annotations

from dataclasses import replace
from functools import lru_cache

import numpy as np

from .captions import CaptionSpec, format_caption, parse_caption
from .scene import Scene
from .score import caption_holds
from .vocab import BACKGROUNDS, COLOURS, HELD_OUT, POSITIONS, RELATIONS, SHAPES, SIZES, position_of

ATTRIBUTES: tuple[str, ...] = ("colour", "shape", "size", "count", "relation", "position", "background")

# Training asks for several negatives of one scene in a row, each parsing its caption: parse it once (the specs
# are frozen dataclasses of tuples, safe to share).
_parsed = lru_cache(maxsize=256)(parse_caption)


def pick_other(rng: np.random.Generator, options, current):
    """One of `options` other than `current`, drawn uniformly."""
    choices = [o for o in options if o != current]
    return choices[int(rng.integers(len(choices)))]


def _candidate(scene: Scene, spec: CaptionSpec, attribute: str, rng: np.random.Generator) -> CaptionSpec | None:
    objects = list(spec.objects)
    # In a count every object is the same phrase, so a change applies to all of them at once.
    targets = range(len(objects)) if spec.form == "count" else [int(rng.integers(len(objects)))]
    if attribute in ("colour", "shape", "size"):
        first = objects[targets[0]]
        if attribute == "colour":
            new = replace(first, colour=pick_other(rng, tuple(COLOURS), first.colour))
        elif attribute == "shape":
            new = replace(first, shape=pick_other(rng, SHAPES, first.shape))
        else:
            true_size = scene.objects[targets[0]].size
            new = replace(first, size=pick_other(rng, SIZES, true_size))
        for t in targets:
            objects[t] = new
        return spec.with_(objects=tuple(objects))
    if attribute == "count":
        if spec.form == "count":
            return spec.with_(objects=(objects[0],) * (5 - len(objects)))  # two <-> three
        if spec.form == "single":
            return spec.with_(form="count", objects=(objects[0],) * 2, position=None)
        return None
    if attribute == "relation":
        return spec.with_(relation=pick_other(rng, RELATIONS, spec.relation)) if spec.form == "pair" else None
    if attribute == "position":
        if spec.form != "single":
            return None
        true_cell = position_of(scene.objects[0].cx, scene.objects[0].cy)
        return spec.with_(position=pick_other(rng, POSITIONS, true_cell))
    if attribute == "background":
        return spec.with_(background=pick_other(rng, tuple(BACKGROUNDS), scene.background))
    raise ValueError(f"unknown attribute {attribute!r}: expected one of {', '.join(ATTRIBUTES)}")


def _allowed(candidate: CaptionSpec, avoid_held_out: bool) -> bool:
    if avoid_held_out and any((o.colour, o.shape) in HELD_OUT for o in candidate.objects):
        return False
    # A list never names the same fully stated object twice (WORLD.md); the parser refuses such captions.
    stated = [o for o in candidate.objects if o.size is not None]
    return candidate.form != "list" or len(set(stated)) == len(stated)


def perturb(
    scene: Scene, attribute: str, rng: np.random.Generator, *, avoid_held_out: bool = False, tries: int = 20
) -> str | None:
    """A caption of `scene` with one `attribute` changed so that it is false; None if none applies.

    A stated attribute is changed; an unstated one (size, position, background) is stated wrongly.
    With `avoid_held_out` (for negatives shown in training) no held-out colour-shape pair is written.
    """
    spec = _parsed(scene.caption)
    for _ in range(tries):
        candidate = _candidate(scene, spec, attribute, rng)
        if candidate is None:
            return None
        if _allowed(candidate, avoid_held_out) and not caption_holds(candidate, scene):
            return format_caption(candidate)
    return None
