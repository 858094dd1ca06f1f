"""The Shapes world's vocabulary: colours, shapes, sizes, relations, positions (shared/WORLD.md v1).

Everything the generator, the caption parser and the scorer must agree on lives here, once.
"""

from __future__ import annotations

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (230, 25, 25),
    "green": (30, 170, 60),
    "blue": (30, 70, 230),
    "yellow": (245, 215, 20),
    "purple": (150, 50, 200),
    "orange": (250, 130, 0),
    "cyan": (0, 200, 220),
    "pink": (240, 110, 180),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "cross", "diamond")
PLURALS: dict[str, str] = {shape: shape + ("es" if shape.endswith("ss") else "s") for shape in SHAPES}
SIZES: tuple[str, ...] = ("small", "large")
# WORLD.md "Sizes": side s of the object's square box, in unit coordinates.
SIZE_RANGES: dict[str, tuple[float, float]] = {"small": (0.16, 0.22), "large": (0.32, 0.40)}
SIZE_THRESHOLD = 0.27  # a parser calls an object small when s < 0.27
BACKGROUNDS: dict[str, tuple[int, int, int]] = {"white": (255, 255, 255), "black": (0, 0, 0)}
RELATIONS: tuple[str, ...] = ("to the left of", "to the right of", "above", "below")
RELATION_MIN = 0.15  # a relation holds when the centres differ by at least this along its axis
# WORLD.md "Meaning": the 3x3 cells, row by row from the top left.
POSITIONS: tuple[str, ...] = (
    "in the top left", "at the top", "in the top right",
    "on the left", "in the center", "on the right",
    "in the bottom left", "at the bottom", "in the bottom right",
)
PREFIXES: tuple[str, ...] = ("a picture of", "an image of", "a drawing of")
COUNT_WORDS: dict[str, int] = {"two": 2, "three": 3}
HELD_OUT: frozenset[tuple[str, str]] = frozenset({
    ("purple", "circle"), ("orange", "square"), ("blue", "triangle"),
    ("green", "star"), ("yellow", "cross"), ("red", "diamond"),
})
SPLITS: tuple[str, ...] = ("train", "val", "test", "novel")
MIN_SIZE_PX, MAX_SIZE_PX = 16, 1024


def article(word: str) -> str:
    """'an' before a vowel sound. Of the words that can follow an article only 'orange' takes 'an'."""
    return "an" if word[0] in "aeiou" else "a"


def check_split(split: str) -> str:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}: expected one of {', '.join(SPLITS)}")
    return split


def check_image_size(size: int) -> int:
    if isinstance(size, bool) or not isinstance(size, int) or not MIN_SIZE_PX <= size <= MAX_SIZE_PX:
        raise ValueError(f"image size {size!r} is outside {MIN_SIZE_PX}..{MAX_SIZE_PX} pixels")
    return size


def position_of(cx: float, cy: float) -> str:
    """The name of the 3x3 cell (thirds of the canvas) that holds the point (cx, cy)."""
    col = min(int(cx * 3), 2)
    row = min(int(cy * 3), 2)
    return POSITIONS[3 * max(row, 0) + max(col, 0)]


def relation_holds(relation: str, a: tuple[float, float], b: tuple[float, float]) -> bool:
    """WORLD.md: A 'to the left of' B when A's centre is left of B's by >= 0.15 and |dx| > |dy|, etc."""
    dx, dy = b[0] - a[0], b[1] - a[1]  # from A to B; y grows downwards
    if relation == "to the left of":
        return dx >= RELATION_MIN and abs(dx) > abs(dy)
    if relation == "to the right of":
        return -dx >= RELATION_MIN and abs(dx) > abs(dy)
    if relation == "above":
        return dy >= RELATION_MIN and abs(dy) > abs(dx)
    if relation == "below":
        return -dy >= RELATION_MIN and abs(dy) > abs(dx)
    raise ValueError(f"unknown relation {relation!r}")
