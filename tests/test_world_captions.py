import pytest

from unclip.world import parse_caption
from unclip.world.captions import ObjectSpec


def test_parses_every_part_of_the_grammar():
    spec = parse_caption("a picture of a small red circle in the top left on a black background")
    assert spec.form == "single" and spec.prefix == "a picture of"
    assert spec.objects == (ObjectSpec("red", "circle", "small"),)
    assert spec.position == "in the top left" and spec.background == "black"
    assert spec.skills == ("single", "position", "background", "colors")

    spec = parse_caption("an orange star to the right of a large blue triangle")
    assert spec.form == "pair" and spec.relation == "to the right of"
    assert spec.objects == (ObjectSpec("orange", "star"), ObjectSpec("blue", "triangle", "large"))
    assert spec.skills == ("relation", "colors", "heldout")  # blue triangle is held out

    spec = parse_caption("three large yellow crosses on a white background")
    assert spec.form == "count" and spec.objects == (ObjectSpec("yellow", "cross", "large"),) * 3
    assert spec.skills == ("counting", "background", "colors", "heldout")

    spec = parse_caption("an image of a cyan diamond and a pink square and a green circle")
    assert spec.form == "list" and len(spec.objects) == 3 and spec.skills == ("two", "colors")


@pytest.mark.parametrize("caption, bad_word", [
    ("a red blob", "'blob'"),
    ("a orange circle", "'a'"),
    ("an red circle", "'an'"),
    ("A red circle", "'A'"),
    ("a red circle.", "'circle.'"),
    ("two red circle", "'circle'"),
    ("four red circles", "'four'"),
    ("a red circle next to a blue square", "'next'"),
    ("a red circle on a grey background", "'on'"),
    ("two red circles in the center", "'in'"),
    ("a red circle on a white background in the center", "'in'"),
    ("a red circle in the center in the center", "'in'"),
    ("a red circle and a blue square and a green star and a pink cross", "'and'"),
    ("a small red circle and a small red circle", "not already in the list"),
    ("a picture of", "ends too early"),
    ("a red circle to the left of", "ends too early"),
])
def test_text_outside_the_grammar_names_the_bad_word(caption, bad_word):
    with pytest.raises(ValueError, match=bad_word.replace(".", r"\.")):
        parse_caption(caption)


@pytest.mark.parametrize("caption", ["", " a red circle", "a red circle ", "a  red circle"])
def test_empty_and_badly_spaced_captions_are_refused(caption):
    with pytest.raises(ValueError, match="empty|space"):
        parse_caption(caption)


def test_non_string_caption_is_refused():
    with pytest.raises(ValueError, match="string"):
        parse_caption(None)
