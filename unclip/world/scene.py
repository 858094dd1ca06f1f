"""Scenes of the Shapes world as a pure function of (split, index) (shared/WORLD.md v1).

A scene is its objects, its background and its caption: the caption's random choices (prefix,
which size words are said, whether the position and background are stated) are part of the scene,
so the same (split, index) gives the same caption too.

Decisions where WORLD.md is silent (listed here so an independent implementation can follow them):
- Randomness: numpy's PCG64 seeded with SeedSequence([split code, index]); the split codes below
  make the four splits' streams disjoint. `novel` scenes are drawn by rejection: the same process
  as train, kept only when at least one object is a held-out pair.
- Every object's centre keeps at least 0.03 from the lines x, y = 1/3, 2/3 (not only single
  objects), so positions and relations never sit on a decision line.
- Pairs never hold two identical objects (same colour, shape and size class): such a scene is
  always captioned with a count (WORLD.md "Meaning"), so it is not drawn as a pair.
- A list holds 2 or 3 objects and a count 2 or 3, each with p=1/2. A layout is retried (up to 5,000
  times) for the same objects before they are redrawn, so large objects keep their p=1/2.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import numpy as np

from .vocab import (
    BACKGROUNDS, COLOURS, COUNT_WORDS, HELD_OUT, PLURALS, PREFIXES, RELATIONS, SHAPES,
    SIZE_RANGES, SIZES, article, check_split, position_of, relation_holds,
)

SPLIT_CODES = {"train": 0x7EA1, "val": 0x7A11, "test": 0x7E57, "novel": 0x0E1}
FORMS = ("single", "pair", "list", "count")
BOX_MARGIN = 0.04  # every box lies inside [0.04, 0.96]^2
BOX_GAP = 0.04  # boxes are separated by at least this along x or along y
LINE_MARGIN = 0.03  # centres keep this far from x, y = 1/3, 2/3
PAIR_MARGIN = 0.05  # pairs: |dx| >= |dy| + 0.05 (or the reverse)


@dataclass(frozen=True)
class WorldObject:
    colour: str
    shape: str
    size: str  # "small" | "large"
    s: float  # side of the square box, unit coordinates
    cx: float  # box centre, unit coordinates, x right
    cy: float  # box centre, unit coordinates, y down

    @property
    def identity(self) -> tuple[str, str, str]:
        return (self.colour, self.shape, self.size)


@dataclass(frozen=True)
class Scene:
    objects: tuple[WorldObject, ...]
    background: str  # "white" | "black"
    caption: str
    form: str  # "single" | "pair" | "list" | "count"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Scene:
        objects = tuple(WorldObject(**o) for o in data["objects"])
        return cls(objects=objects, background=data["background"], caption=data["caption"], form=data["form"])

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)


def _rng(split: str, index: int) -> np.random.Generator:
    if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or index < 0:
        raise ValueError(f"scene index must be a non-negative integer, got {index!r}")
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([SPLIT_CODES[check_split(split)], int(index)])))


def _pick(rng: np.random.Generator, options):
    return options[int(rng.integers(len(options)))]


def _identity(rng: np.random.Generator) -> tuple[str, str, str]:
    return (_pick(rng, tuple(COLOURS)), _pick(rng, SHAPES), _pick(rng, SIZES))


def _split_ok(split: str, identities: list[tuple[str, str, str]]) -> bool:
    held = any((colour, shape) in HELD_OUT for colour, shape, _ in identities)
    return held if split == "novel" else not held


def _off_lines(v: float) -> bool:
    return abs(v - 1 / 3) >= LINE_MARGIN and abs(v - 2 / 3) >= LINE_MARGIN


class _Uniforms:
    """The uniform doubles of `rng`'s stream, drawn in blocks: one numpy call per BLOCK numbers instead of one
    per number (layouts are redrawn tens of times a scene, and these calls were the largest part of the data
    time in training). `uniform(lo, hi)` is what `rng.uniform(lo, hi)` returns (numpy computes lo + (hi - lo) *
    next_double, the same two float operations); `close()` leaves `rng` exactly where drawing the numbers used
    one at a time would have: it restores the saved state and redraws that many. tests/test_world_scene.py pins
    a digest of the scenes from before this sampler."""

    BLOCK = 256

    def __init__(self, rng: np.random.Generator):
        self.rng, self.state = rng, rng.bit_generator.state
        self.block: list[float] = []
        self.pos = self.used = 0  # used: the numbers in the blocks before this one

    def uniform(self, lo: float, hi: float) -> float:
        if self.pos == len(self.block):
            self.used += self.pos
            self.block, self.pos = self.rng.random(self.BLOCK).tolist(), 0
        d = self.block[self.pos]
        self.pos += 1
        return lo + (hi - lo) * d

    def close(self) -> None:
        self.rng.bit_generator.state = self.state
        if self.used + self.pos:
            self.rng.random(self.used + self.pos)


def _centre(u: _Uniforms, s: float) -> tuple[float, float]:
    lo, hi = BOX_MARGIN + s / 2, 1 - BOX_MARGIN - s / 2
    uniform = u.uniform
    while True:
        x = uniform(lo, hi)
        y = uniform(lo, hi)
        if _off_lines(x) and _off_lines(y):
            return x, y


def _separated(a: tuple[float, float, float], b: tuple[float, float, float]) -> bool:
    (ax, ay, as_), (bx, by, bs) = a, b
    reach = (as_ + bs) / 2 + BOX_GAP
    return abs(ax - bx) >= reach or abs(ay - by) >= reach


def _pair_ok(relation: str, a: tuple[float, float], b: tuple[float, float]) -> bool:
    dx, dy = abs(b[0] - a[0]), abs(b[1] - a[1])
    horizontal = relation in ("to the left of", "to the right of")
    margin_ok = dx >= dy + PAIR_MARGIN if horizontal else dy >= dx + PAIR_MARGIN
    return margin_ok and relation_holds(relation, a, b)


def _place(rng, identities, relation, tries: int = 5000) -> list[WorldObject] | None:
    """Draw sizes and centres for the identities; None when no layout was found in `tries`."""
    u = _Uniforms(rng)
    try:
        for _ in range(tries):
            boxes: list[tuple[float, float, float]] = []
            for _colour, _shape, size in identities:
                s = u.uniform(*SIZE_RANGES[size])
                boxes.append((*_centre(u, s), s))
            if any(not _separated(a, b) for i, a in enumerate(boxes) for b in boxes[i + 1:]):
                continue
            if relation is not None and not _pair_ok(relation, boxes[0][:2], boxes[1][:2]):
                continue
            return [WorldObject(c, sh, sz, s=s, cx=x, cy=y) for (c, sh, sz), (x, y, s) in zip(identities, boxes)]
        return None
    finally:
        u.close()


def _noun_phrase(rng, obj: WorldObject) -> str:
    words = ([obj.size] if rng.random() < 0.5 else []) + [obj.colour, obj.shape]
    return f"{article(words[0])} {' '.join(words)}"


def _caption(rng, form: str, objects: list[WorldObject], relation: str | None, background: str) -> str:
    u = rng.random()  # WORLD.md: each prefix with p=1/6, none with p=1/2
    prefix = PREFIXES[int(u * 6)] + " " if u < 0.5 else ""
    if form == "count":
        first = objects[0]
        size = f"{first.size} " if rng.random() < 0.5 else ""
        count_word = {n: w for w, n in COUNT_WORDS.items()}[len(objects)]
        text = f"{count_word} {size}{first.colour} {PLURALS[first.shape]}"
    elif form == "pair":
        text = f"{_noun_phrase(rng, objects[0])} {relation} {_noun_phrase(rng, objects[1])}"
    else:
        text = " and ".join(_noun_phrase(rng, o) for o in objects)
    if form == "single" and rng.random() < 0.5:
        text += " " + position_of(objects[0].cx, objects[0].cy)
    if rng.random() < 0.5:
        text += f" on a {background} background"
    return prefix + text


def sample_scene(split: str, index: int) -> Scene:
    """The scene at `index` of `split`: the same on every machine, at every image size.

    The form, background, object count and relation are drawn once, so they keep the contract's
    probabilities; only identities (for the split's held-out rule and the no-identical-objects
    rule) and layouts are redrawn until they fit.
    """
    rng = _rng(split, index)
    form = _pick(rng, FORMS)
    background = _pick(rng, tuple(BACKGROUNDS))
    n = {"single": 1, "pair": 2}.get(form) or 2 + int(rng.integers(2))
    relation = _pick(rng, RELATIONS) if form == "pair" else None
    while True:
        if form == "count":
            identities = [_identity(rng)] * n
        else:
            identities = [_identity(rng) for _ in range(n)]
            if len(set(identities)) < n:
                continue  # identical objects are only ever drawn as a count
        if not _split_ok(split, identities):
            continue
        objects = _place(rng, identities, relation)
        if objects is None:
            continue
        caption = _caption(rng, form, objects, relation, background)
        return Scene(objects=tuple(objects), background=background, caption=caption, form=form)
