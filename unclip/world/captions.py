"""A strict parser of the Shapes world's caption grammar (WORLD.md "Captions").

`parse_caption` turns a caption into a `CaptionSpec` (what the image must show) and raises
`ValueError` naming the first word outside the grammar. `format_caption` writes a spec back, so
parse and format round-trip exactly on every caption the generator writes.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from .vocab import (
    BACKGROUNDS, COLOURS, COUNT_WORDS, HELD_OUT, PLURALS, POSITIONS, PREFIXES, RELATIONS, SHAPES, SIZES, article,
)

_SINGULAR = {plural: shape for shape, plural in PLURALS.items()}
_PHRASES_AFTER_OBJECTS = {p: "position" for p in POSITIONS} | {
    f"on a {b} background": "background" for b in BACKGROUNDS
}


@dataclass(frozen=True)
class ObjectSpec:
    colour: str
    shape: str
    size: str | None = None  # None: the caption does not say


@dataclass(frozen=True)
class CaptionSpec:
    form: str  # "single" | "pair" | "list" | "count"
    objects: tuple[ObjectSpec, ...]  # a count of n repeats its object n times
    relation: str | None = None  # pair only: objects[0] <relation> objects[1]
    position: str | None = None  # single only
    background: str | None = None
    prefix: str | None = None

    @property
    def skills(self) -> tuple[str, ...]:
        """WORLD.md skill tags, in a fixed order."""
        tags = {"single": ["single"], "list": ["two"], "count": ["counting"], "pair": ["relation"]}[self.form]
        if self.position is not None:
            tags.append("position")
        if self.background is not None:
            tags.append("background")
        tags.append("colors")
        if any((o.colour, o.shape) in HELD_OUT for o in self.objects):
            tags.append("heldout")
        return tuple(tags)

    def with_(self, **changes) -> CaptionSpec:
        return replace(self, **changes)


SKILLS: tuple[str, ...] = ("single", "two", "counting", "relation", "position", "background", "colors", "heldout")


class _Words:
    """A cursor over a caption's words that reports the first word it cannot accept."""

    def __init__(self, caption: str):
        if not isinstance(caption, str):
            raise ValueError(f"caption must be a string, got {type(caption).__name__}")
        self.caption = caption
        if caption == "":
            raise ValueError("caption is empty")
        self.words = caption.split(" ")
        for i, word in enumerate(self.words):
            if word == "":
                raise ValueError(
                    f"caption {caption!r}: extra space near word {i} (words are separated by single spaces)")
        self.i = 0

    def peek(self, k: int = 0) -> str | None:
        j = self.i + k
        return self.words[j] if j < len(self.words) else None

    def at(self, phrase: str) -> bool:
        words = phrase.split(" ")
        return self.words[self.i:self.i + len(words)] == words

    def take(self, phrase: str) -> None:
        self.i += len(phrase.split(" "))

    def fail(self, expected: str):
        word = self.peek()
        where = f"unexpected word {word!r} (word {self.i + 1})" if word is not None else "it ends too early"
        raise ValueError(f"caption {self.caption!r}: {where}; expected {expected}")

    def one_of(self, options, expected: str) -> str:
        word = self.peek()
        if word not in options:
            self.fail(expected)
        self.i += 1
        return word


def _noun_phrase(w: _Words) -> ObjectSpec:
    start = w.i
    art = w.one_of(("a", "an"), "'a' or 'an'")
    size = w.peek() if w.peek() in SIZES else None
    if size is not None:
        w.take(size)
    colour = w.one_of(COLOURS, "a colour (" + ", ".join(COLOURS) + ")")
    if art != article(size or colour):
        w.i = start
        w.fail(f"the article {article(size or colour)!r} before {size or colour!r}")
    shape = w.one_of(SHAPES, "a shape (" + ", ".join(SHAPES) + ")")
    return ObjectSpec(colour=colour, shape=shape, size=size)


def _count_phrase(w: _Words) -> tuple[ObjectSpec, ...]:
    n = COUNT_WORDS[w.one_of(COUNT_WORDS, "'two' or 'three'")]
    size = w.peek() if w.peek() in SIZES else None
    if size is not None:
        w.take(size)
    colour = w.one_of(COLOURS, "a colour (" + ", ".join(COLOURS) + ")")
    shape = _SINGULAR[w.one_of(_SINGULAR, "a plural shape (" + ", ".join(_SINGULAR) + ")")]
    return (ObjectSpec(colour=colour, shape=shape, size=size),) * n


def parse_caption(caption: str) -> CaptionSpec:
    """Parse a caption of the Shapes world; raise ValueError naming the first word outside the grammar."""
    w = _Words(caption)
    prefix = next((p for p in PREFIXES if w.at(p)), None)
    if prefix is not None:
        w.take(prefix)
    relation = None
    if w.peek() in COUNT_WORDS:
        form, objects = "count", _count_phrase(w)
    else:
        objects = (_noun_phrase(w),)
        relation = next((r for r in RELATIONS if w.at(r)), None)
        if relation is not None:
            w.take(relation)
            form, objects = "pair", objects + (_noun_phrase(w),)
        elif w.peek() == "and":
            form = "list"
            while w.peek() == "and" and len(objects) < 3:
                w.take("and")
                start = w.i
                objects += (_noun_phrase(w),)
                if objects[-1].size is not None and objects[-1] in objects[:-1]:
                    w.i = start  # WORLD.md: a list never holds two identical objects
                    w.fail("an object not already in the list (identical objects take a count: 'two ...')")
        else:
            form = "single"
    found: dict[str, str] = {}
    while w.peek() is not None:
        phrase = next((p for p in _PHRASES_AFTER_OBJECTS if w.at(p) and _PHRASES_AFTER_OBJECTS[p] not in found), None)
        misplaced_position = phrase is not None and _PHRASES_AFTER_OBJECTS[phrase] == "position" and (
            "background" in found or form != "single")
        if phrase is None or misplaced_position:
            allowed = "a position (single objects only), " if form == "single" and not found else ""
            w.fail(allowed + "'on a white background', 'on a black background' or the end")
        found[_PHRASES_AFTER_OBJECTS[phrase]] = phrase
        w.take(phrase)
    background = found.get("background")
    return CaptionSpec(
        form=form, objects=objects, relation=relation, position=found.get("position"),
        background=background.split(" ")[2] if background else None, prefix=prefix,
    )


def _format_np(o: ObjectSpec) -> str:
    words = ([o.size] if o.size else []) + [o.colour, o.shape]
    return f"{article(words[0])} {' '.join(words)}"


def format_caption(spec: CaptionSpec) -> str:
    """Write a spec as a caption; the inverse of `parse_caption`."""
    if spec.form == "count":
        o = spec.objects[0]
        count_word = {n: w for w, n in COUNT_WORDS.items()}[len(spec.objects)]
        text = " ".join([count_word] + ([o.size] if o.size else []) + [o.colour, PLURALS[o.shape]])
    elif spec.form == "pair":
        text = f"{_format_np(spec.objects[0])} {spec.relation} {_format_np(spec.objects[1])}"
    else:
        text = " and ".join(_format_np(o) for o in spec.objects)
    if spec.position:
        text += " " + spec.position
    if spec.background:
        text += f" on a {spec.background} background"
    return (spec.prefix + " " if spec.prefix else "") + text
