"""Every caption one edit away from a caption, read from the caption alone (no scene).

`perturb.py` changes a scene's caption so that it is false of that scene (it knows the scene's true sizes and
positions). At generation time there is no scene, only the caption asked for, so this module lists its near
misses: each stated attribute changed to every other value it can take (a colour, a shape, a size, a relation,
a position, a background, two <-> three), and the two edits that keep every word but bind them differently
(the colours of two objects swapped; the two objects of a relation swapped). A drawing that CLIP rates closer
to one of these than to the caption has most likely drawn the near miss: judging a candidate by that
(`benchmarks/rerank_rules.py`, the "contrast" and "margin" rules) is zero-shot classification among the caption
and its alternatives (CLIP, Radford et al. 2021, §3.1.2), the hard-negative test the CLIP was trained on
(`unclip/data/sources.py`). Measured, it chooses no better than the plain cosine the pipeline keeps (docs/reranking.md,
"How much a better judge could add").

Unstated attributes (an unstated size, position or background) are not edited: the caption allows any value.
A caption outside the world's grammar has no alternatives (an empty list).
"""

from __future__ import annotations

from dataclasses import replace

from .captions import CaptionSpec, format_caption, parse_caption
from .vocab import BACKGROUNDS, COLOURS, POSITIONS, RELATIONS, SHAPES, SIZES


def _object_edits(spec: CaptionSpec) -> list[CaptionSpec]:
    """Each object's colour, shape and stated size changed (in a count, every copy of the one object at once)."""
    every = list(range(len(spec.objects)))
    targets = [every] if spec.form == "count" else [[i] for i in every]
    out = []
    for indices in targets:
        first = spec.objects[indices[0]]
        changed = ([replace(first, colour=c) for c in COLOURS if c != first.colour]
                   + [replace(first, shape=s) for s in SHAPES if s != first.shape]
                   + ([replace(first, size=z) for z in SIZES if z != first.size] if first.size else []))
        for new in changed:
            objects = list(spec.objects)
            for i in indices:
                objects[i] = new
            out.append(spec.with_(objects=tuple(objects)))
    return out


def _binding_edits(spec: CaptionSpec) -> list[CaptionSpec]:
    """The same words bound otherwise: two objects' colours swapped; a relation's two objects swapped."""
    out = []
    if spec.form in ("pair", "list"):
        objects = spec.objects
        for i in range(len(objects)):
            for j in range(i + 1, len(objects)):
                if objects[i].colour != objects[j].colour:
                    swapped = list(objects)
                    swapped[i] = replace(objects[i], colour=objects[j].colour)
                    swapped[j] = replace(objects[j], colour=objects[i].colour)
                    out.append(spec.with_(objects=tuple(swapped)))
    if spec.form == "pair":
        out.append(spec.with_(objects=spec.objects[::-1]))  # "A left of B" -> "B left of A"
    return out


def _scene_edits(spec: CaptionSpec) -> list[CaptionSpec]:
    """The relation, the count, a stated position and a stated background changed."""
    out = []
    if spec.form == "pair":
        out += [spec.with_(relation=r) for r in RELATIONS if r != spec.relation]
    if spec.form == "count":
        out.append(spec.with_(objects=(spec.objects[0],) * (5 - len(spec.objects))))  # two <-> three
    if spec.position is not None:
        out += [spec.with_(position=p) for p in POSITIONS if p != spec.position]
    if spec.background is not None:
        out += [spec.with_(background=b) for b in BACKGROUNDS if b != spec.background]
    return out


def caption_alternatives(caption: str) -> list[str]:
    """The captions one edit from `caption` (module docstring), without repeats, in a fixed order; [] when the
    caption is not in the world's grammar. Every one parses, and none is the caption itself."""
    try:
        spec = parse_caption(caption)
    except ValueError:
        return []
    seen, out = {_meaning(spec)}, []
    for edited in _object_edits(spec) + _binding_edits(spec) + _scene_edits(spec):
        if edited.form == "list" and len(set(edited.objects)) < len(edited.objects):
            continue  # one object twice: refused where its size is stated, else written as a count
        if _meaning(edited) not in seen:  # "a pink star and a red star" is not an alternative to "a red star and ..."
            seen.add(_meaning(edited))
            out.append(format_caption(edited))
    return out


def _meaning(spec: CaptionSpec) -> CaptionSpec:
    """The spec with what does not change its meaning taken out: the prefix, and a list's order (the scorer matches
    a list's objects in any order)."""
    objects = tuple(sorted(spec.objects, key=repr)) if spec.form == "list" else spec.objects
    return spec.with_(objects=objects, prefix=None)

