"""Score an image against its caption, and aggregate accuracy by skill (WORLD.md "Scoring").

An image is correct when the parsed objects match the caption's objects one to one (colour,
shape, and size where stated; counts exactly; no extra objects) and every stated relation,
position and background holds.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from itertools import permutations

from .captions import SKILLS, CaptionSpec, ObjectSpec, parse_caption
from .parse import ParsedImage, ParsedObject, parse_image
from .scene import Scene
from .vocab import BACKGROUNDS, position_of, relation_holds


@dataclass(frozen=True)
class ScoreResult:
    correct: bool
    skills: tuple[str, ...]
    reason: str  # why it is wrong; "" when correct
    parsed: ParsedImage


def _matches(spec: ObjectSpec, obj: ParsedObject) -> bool:
    return (
        obj.colour == spec.colour and obj.shape == spec.shape and (spec.size is None or obj.size == spec.size)
    )


def _describe(obj: ParsedObject) -> str:
    return f"{obj.size} {obj.colour or 'off-palette'} {obj.shape or 'blob'} at ({obj.cx:.2f}, {obj.cy:.2f})"


def judge(spec: CaptionSpec, parsed: ParsedImage) -> str:
    """Why `parsed` fails `spec`, or "" when it shows exactly what the caption says."""
    if spec.background is not None and parsed.background != spec.background:
        return f"background is {parsed.background or 'neither white nor black'}, not {spec.background}"
    found = parsed.objects
    if len(found) != len(spec.objects):
        seen = "; ".join(_describe(o) for o in found) or "nothing"
        return f"expected {len(spec.objects)} object(s), found {len(found)}: {seen}"
    identities = {(o.colour, o.shape, o.size) for o in found}
    # WORLD.md "Meaning": a count is of identical objects (same size class too, stated or not), and two
    # or three identical objects are always captioned with a count, so a pair or list of them is false.
    if spec.form == "count" and len(identities) > 1:
        return "a count needs identical objects, found: " + "; ".join(_describe(o) for o in found)
    if spec.form in ("pair", "list") and len(identities) < len(found):
        return "identical objects are captioned with a count, not a " + spec.form
    for order in permutations(found):
        if not all(_matches(s, o) for s, o in zip(spec.objects, order)):
            continue
        if spec.relation is not None and not relation_holds(
            spec.relation, (order[0].cx, order[0].cy), (order[1].cx, order[1].cy)
        ):
            continue
        if spec.position is not None and position_of(order[0].cx, order[0].cy) != spec.position:
            continue
        return ""
    seen = "; ".join(_describe(o) for o in found)
    return f"no one-to-one match of the caption's objects (and stated relation/position) with: {seen}"


def scene_truth(scene: Scene) -> ParsedImage:
    """What a perfect parser would read from a render of `scene`."""
    objects = tuple(
        ParsedObject(colour=o.colour, shape=o.shape, size=o.size, s=o.s, cx=o.cx, cy=o.cy, fit_error=0.0)
        for o in scene.objects
    )
    return ParsedImage(background=scene.background, background_rgb=BACKGROUNDS[scene.background], objects=objects)


def caption_holds(caption: str | CaptionSpec, scene: Scene) -> bool:
    """Is the caption true of the scene, judged on the scene's exact objects (no image)?"""
    spec = caption if isinstance(caption, CaptionSpec) else parse_caption(caption)
    return judge(spec, scene_truth(scene)) == ""


def score_image(image, caption: str | CaptionSpec) -> ScoreResult:
    """Score one image (PIL image or (H, W, 3) array) against its caption."""
    spec = caption if isinstance(caption, CaptionSpec) else parse_caption(caption)
    parsed = parse_image(image)
    reason = judge(spec, parsed)
    return ScoreResult(correct=reason == "", skills=spec.skills, reason=reason, parsed=parsed)


def accuracy_by_skill(results: Iterable[tuple[bool, tuple[str, ...]]]) -> dict:
    """{"n", "overall", "skills": {tag: accuracy}, "counts": {tag: n}} over (correct, skills) pairs.

    Skills with no images are left out of "skills" (an accuracy of nothing is undefined).
    """
    total, right = 0, 0
    n_by = {tag: 0 for tag in SKILLS}
    right_by = {tag: 0 for tag in SKILLS}
    for correct, skills in results:
        total += 1
        right += bool(correct)
        for tag in skills:
            n_by[tag] += 1
            right_by[tag] += bool(correct)
    return {
        "n": total,
        "overall": right / total if total else None,
        "skills": {tag: right_by[tag] / n_by[tag] for tag in SKILLS if n_by[tag]},
        "counts": {tag: n_by[tag] for tag in SKILLS if n_by[tag]},
    }
