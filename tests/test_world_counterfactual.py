"""world/counterfactual.py: a scene changed in one way so that its own caption is false (a hard-negative image)."""

import numpy as np
import pytest

from unclip.world import render_array, sample_scene, score_image
from unclip.world.counterfactual import CHANGES, counterfactual
from unclip.world.scene import BOX_MARGIN, LINE_MARGIN, _separated


def test_every_change_renders_an_image_the_scorer_rejects_for_the_true_caption():
    """The symbolic check inside counterfactual() agrees with the pixel scorer on the rendered change: the true caption
    is wrong of the changed image (and was right of the original)."""
    rng = np.random.default_rng(0)
    tried, rejected = dict.fromkeys(CHANGES, 0), dict.fromkeys(CHANGES, 0)
    for i in range(120):
        scene = sample_scene("test", i)
        assert score_image(render_array(scene, 64), scene.caption).correct
        for change in CHANGES:
            other = counterfactual(scene, change, rng)
            if other is None:
                continue
            assert other.caption == scene.caption
            tried[change] += 1
            rejected[change] += not score_image(render_array(other, 64), scene.caption).correct
    for change in CHANGES:
        assert tried[change] > 10, (change, tried)
        assert rejected[change] / tried[change] >= 0.98, (change, rejected, tried)


def test_a_layout_change_moves_the_objects_by_a_symmetry_of_the_square_and_keeps_the_worlds_rules():
    """Mirrors, rotations and the transposition keep boxes inside the margin, apart, and their centres off the
    thirds' lines; objects keep their colour, shape and size, only their centres move."""
    rng = np.random.default_rng(1)
    moved = 0
    for i in range(200):
        scene = sample_scene("train", i)
        other = counterfactual(scene, "layout", rng)
        if other is None:
            assert scene.form in ("list", "count", "single")  # only a pair's relation or a stated position can fail
            continue
        moved += 1
        for a, b in zip(scene.objects, other.objects):
            assert (a.colour, a.shape, a.size, a.s) == (b.colour, b.shape, b.size, b.s)
            assert abs((a.cx - 0.5) ** 2 + (a.cy - 0.5) ** 2 - (b.cx - 0.5) ** 2 - (b.cy - 0.5) ** 2) < 1e-12
            for v in (b.cx, b.cy):
                assert BOX_MARGIN + b.s / 2 - 1e-9 <= v <= 1 - BOX_MARGIN - b.s / 2 + 1e-9
                assert abs(v - 1 / 3) >= LINE_MARGIN - 1e-9 and abs(v - 2 / 3) >= LINE_MARGIN - 1e-9
        boxes = [(o.cx, o.cy, o.s) for o in other.objects]
        assert all(_separated(p, q) for k, p in enumerate(boxes) for q in boxes[k + 1:])
    assert moved > 40


def test_changes_that_cannot_falsify_a_caption_give_none_and_draws_are_seeded():
    list_scene = next(s for s in map(lambda i: sample_scene("train", i), range(100)) if s.form == "list")
    assert counterfactual(list_scene, "layout", np.random.default_rng(0)) is None  # a list states no layout
    single = next(s for s in map(lambda i: sample_scene("train", i), range(100)) if s.form == "single")
    assert counterfactual(single, "drop", np.random.default_rng(0)) is None  # nothing to leave out
    unstated = next(s for s in map(lambda i: sample_scene("train", i), range(100)) if "background" not in s.caption)
    assert counterfactual(unstated, "background", np.random.default_rng(0)) is None
    pair = next(s for s in map(lambda i: sample_scene("train", i), range(100)) if s.form == "pair"
                and s.objects[0].colour != s.objects[1].colour and s.objects[0].shape != s.objects[1].shape)
    traded = counterfactual(pair, "binding", np.random.default_rng(5))
    assert [o.colour for o in traded.objects] == [o.colour for o in reversed(pair.objects)]
    assert traded == counterfactual(pair, "binding", np.random.default_rng(5))


def test_an_unknown_change_is_named():
    with pytest.raises(ValueError, match="'flip'"):
        counterfactual(sample_scene("train", 0), "flip", np.random.default_rng(0))
