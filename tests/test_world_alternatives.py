"""Near-miss captions read from a caption alone (unclip/world/alternatives.py)."""

from __future__ import annotations

import pytest

from unclip.world import render, sample_scene
from unclip.world.alternatives import caption_alternatives
from unclip.world.captions import parse_caption
from unclip.world.score import caption_holds, score_image


def test_a_relation_has_its_converse_its_swap_and_every_other_relation():
    alts = caption_alternatives("a red circle to the left of a blue square")
    assert "a red circle to the right of a blue square" in alts
    assert "a blue square to the left of a red circle" in alts  # the objects swapped
    assert "a blue circle to the left of a red square" in alts  # the colours swapped
    assert {"a red circle above a blue square", "a red circle below a blue square"} <= set(alts)
    # every other colour and shape of each object: 7 + 5 per object, 2 objects; 2 swaps; 3 relations
    assert len(alts) == 2 * (7 + 5) + 2 + 3


def test_only_stated_attributes_change():
    alts = caption_alternatives("three yellow diamonds")
    assert "two yellow diamonds" in alts
    assert not any("background" in a or "small" in a or "large" in a for a in alts)  # unstated: any value holds
    assert len(alts) == 7 + 5 + 1
    single = caption_alternatives("a small red star in the top left on a white background")
    assert "a large red star in the top left on a white background" in single
    assert "a small red star in the center on a white background" in single
    assert "a small red star in the top left on a black background" in single


def test_a_reordered_list_is_not_an_alternative():
    alts = caption_alternatives("a large pink star and a large red star")
    assert "a large red star and a large pink star" not in alts  # the same scene: a list has no order
    assert len(set(alts)) == len(alts)


@pytest.mark.parametrize("index", range(40))
def test_every_alternative_parses_and_is_false_of_a_true_scene(index):
    scene = sample_scene("test", index)
    alts = caption_alternatives(scene.caption)
    assert alts, scene.caption
    for alt in alts:
        parse_caption(alt)
        assert not caption_holds(alt, scene), (scene.caption, alt)
    # and the scorer agrees on the rendered scene: the caption holds, none of its alternatives does
    image = render(scene, 64)
    assert score_image(image, scene.caption).correct
    assert not any(score_image(image, alt).correct for alt in alts[:5])


def test_a_caption_outside_the_grammar_has_none():
    assert caption_alternatives("a photograph of a cat") == []
    assert caption_alternatives("") == []
