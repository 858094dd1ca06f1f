"""The scorer against WORLD.md's robustness targets (CI counts; benchmarks/scorer.py runs the full ones)."""

import numpy as np
import pytest
from PIL import Image, ImageDraw

from unclip.world import ATTRIBUTES, parse_image, perturb, render_array, sample_scene, score_image
from unclip.world.corrupt import gaussian_blur, gaussian_noise
from unclip.world.vocab import BACKGROUNDS, COLOURS, SHAPES

N = 250


def _accuracy(size, corrupt=None, split="test", n=N):
    rng = np.random.default_rng(0)
    right = 0
    for i in range(n):
        scene = sample_scene(split, i)
        image = render_array(scene, size)
        if corrupt == "blur":
            image = gaussian_blur(image, 1.0)
        elif corrupt == "noise":
            image = gaussian_noise(image, 10.0, rng)
        right += score_image(image, scene.caption).correct
    return right / n


@pytest.mark.parametrize("size, corrupt, target", [
    (64, None, 0.995), (128, None, 0.995), (32, None, 0.97), (64, "blur", 0.95), (64, "noise", 0.95),
])
def test_scorer_accepts_true_renders(size, corrupt, target):
    assert _accuracy(size, corrupt) >= target


def test_scorer_accepts_novel_renders():
    assert _accuracy(64, split="novel", n=100) >= 0.995


def test_scorer_rejects_captions_with_one_attribute_changed():
    rng = np.random.default_rng(1)
    tried, rejected = {a: 0 for a in ATTRIBUTES}, {a: 0 for a in ATTRIBUTES}
    for i in range(150):
        scene = sample_scene("test", i)
        image = render_array(scene, 64)
        for attribute in ATTRIBUTES:
            wrong = perturb(scene, attribute, rng)
            if wrong is None:
                continue
            tried[attribute] += 1
            rejected[attribute] += not score_image(image, wrong).correct
    for attribute in ATTRIBUTES:
        assert tried[attribute] > 10, attribute
        assert rejected[attribute] / tried[attribute] >= 0.99, (attribute, rejected, tried)


def test_parsed_objects_match_the_scene():
    scene = sample_scene("test", 3)
    parsed = parse_image(render_array(scene, 128))
    assert parsed.background == scene.background
    assert len(parsed.objects) == len(scene.objects)
    for truth in scene.objects:
        got = min(parsed.objects, key=lambda o: (o.cx - truth.cx) ** 2 + (o.cy - truth.cy) ** 2)
        assert (got.colour, got.shape, got.size) == truth.identity
        assert got.cx == pytest.approx(truth.cx, abs=0.01) and got.cy == pytest.approx(truth.cy, abs=0.01)
        assert got.s == pytest.approx(truth.s, rel=0.03)


def _independent_render(scene, size, factor=4):
    """A second implementation of WORLD.md's drawing rules with Pillow polygons (not the project's renderer)."""
    big = size * factor
    image = Image.new("RGB", (big, big), BACKGROUNDS[scene.background])
    draw = ImageDraw.Draw(image)
    for o in scene.objects:
        cx, cy, s = o.cx * big, o.cy * big, o.s * big
        fill = COLOURS[o.colour]
        if o.shape == "circle":
            draw.ellipse((cx - s / 2, cy - s / 2, cx + s / 2, cy + s / 2), fill=fill)
        elif o.shape == "square":
            draw.rectangle((cx - s / 2, cy - s / 2, cx + s / 2, cy + s / 2), fill=fill)
        elif o.shape == "diamond":
            draw.polygon([(cx, cy - s / 2), (cx + s / 2, cy), (cx, cy + s / 2), (cx - s / 2, cy)], fill=fill)
        elif o.shape == "cross":
            draw.rectangle((cx - s / 2, cy - s / 6, cx + s / 2, cy + s / 6), fill=fill)
            draw.rectangle((cx - s / 6, cy - s / 2, cx + s / 6, cy + s / 2), fill=fill)
        elif o.shape == "triangle":
            h = s * 3 ** 0.5 / 2
            draw.polygon([(cx, cy - h / 2), (cx + s / 2, cy + h / 2), (cx - s / 2, cy + h / 2)], fill=fill)
        elif o.shape == "star":
            points = []
            for k in range(10):
                r = s / 2 if k % 2 == 0 else 0.382 * s / 2
                a = np.radians(-90 + 36 * k)
                points.append((cx + r * np.cos(a), cy + r * np.sin(a)))
            draw.polygon(points, fill=fill)
    return image.resize((size, size), Image.Resampling.BOX)


def test_scorer_agrees_with_an_independent_renderer_of_the_contract():
    right = sum(
        score_image(_independent_render(sample_scene("val", i), 64), sample_scene("val", i).caption).correct
        for i in range(150)
    )
    assert right / 150 >= 0.99


def test_empty_and_off_palette_images():
    white = np.full((64, 64, 3), 255, np.uint8)
    assert parse_image(white).objects == () and parse_image(white).background == "white"
    assert not score_image(white, "a red circle").correct
    grey = np.full((64, 64, 3), 128, np.uint8)
    parsed = parse_image(grey)
    assert parsed.background is None
    assert not score_image(grey, "a red circle").correct  # no objects either way


def test_stated_background_must_hold():
    scene = sample_scene("test", 0)
    image = render_array(scene, 64)
    other = "black" if scene.background == "white" else "white"
    assert score_image(image, f"{scene.caption.split(' on a ')[0]} on a {scene.background} background").correct
    assert not score_image(image, f"{scene.caption.split(' on a ')[0]} on a {other} background").correct


def test_extra_object_fails_and_blobs_are_no_shape():
    image = np.full((64, 64, 3), 255, np.uint8)
    yy, xx = np.mgrid[0:64, 0:64]
    disc = (xx - 16) ** 2 + (yy - 16) ** 2 <= 36
    image[disc] = COLOURS["red"]
    assert score_image(image, "a small red circle").correct
    image[40:52, 40:52] = COLOURS["blue"]
    assert not score_image(image, "a small red circle").correct
    # Shapeless components (an elongated ellipse, two stacked discs): found, coloured, but no shape.
    for blob in [((xx - 32) / 14) ** 2 + ((yy - 32) / 6) ** 2 <= 1,
                 ((xx - 32) ** 2 + (yy - 26) ** 2 <= 36) | ((xx - 32) ** 2 + (yy - 38) ** 2 <= 81)]:
        image = np.full((64, 64, 3), 255, np.uint8)
        image[blob] = COLOURS["blue"]
        objects = parse_image(image).objects
        assert len(objects) == 1 and objects[0].colour == "blue" and objects[0].shape is None
        assert not any(score_image(image, f"a blue {shape}").correct for shape in SHAPES)


def _draw(background, *objects):
    """A 64 px image with (colour, shape, size_px, cx_px, cy_px) objects, drawn by the project's geometry."""
    from unclip.world.geometry import coverage
    image = np.full((64, 64, 3), BACKGROUNDS[background], np.float64)
    for colour, shape, s, cx, cy in objects:
        alpha = coverage(shape, cx=cx, cy=cy, s=s, x0=0, y0=0, width=64, height=64)[..., None]
        image += alpha * (np.array(COLOURS[colour] if isinstance(colour, str) else colour) - image)
    return np.rint(image).astype(np.uint8)


def test_counts_need_identical_objects_and_pairs_and_lists_distinct_ones():
    mixed = _draw("white", ("red", "circle", 12, 32, 12), ("red", "circle", 23, 32, 44))
    assert not score_image(mixed, "two red circles").correct  # one small, one large: not identical
    assert score_image(mixed, "a small red circle and a large red circle").correct
    assert score_image(mixed, "a red circle above a red circle").correct  # sizes differ: a pair is fine
    same = _draw("white", ("red", "circle", 12, 32, 12), ("red", "circle", 12, 32, 44))
    assert score_image(same, "two small red circles").correct
    assert not score_image(same, "a red circle above a red circle").correct
    assert not score_image(same, "a red circle and a red circle").correct


def test_touching_objects_of_different_colours_stay_two_objects():
    touching = _draw("white", ("red", "square", 16, 24, 32), ("blue", "square", 16, 40, 32))  # edges meet
    assert score_image(touching, "a red square to the left of a blue square").correct
    merged = _draw("white", ("red", "square", 16, 24, 32), ("red", "square", 16, 40, 32))
    assert not score_image(merged, "two red squares").correct  # one colour: one blob, no shape


def test_off_palette_colours_are_no_colour():
    brown = _draw("white", ((120, 60, 20), "square", 20, 32, 32))
    objects = parse_image(brown).objects
    assert len(objects) == 1 and objects[0].colour is None and objects[0].shape == "square"
    assert not any(score_image(brown, f"{c} square").correct for c in ("a red", "an orange", "a yellow"))


def test_image_input_is_checked():
    with pytest.raises(ValueError, match="uint8"):
        parse_image(np.zeros((32, 32, 3), np.float32))
    with pytest.raises(ValueError, match="8-bit"):
        parse_image(Image.new("I;16", (32, 32)))
    with pytest.raises(ValueError, match="square"):
        parse_image(np.zeros((32, 48, 3), np.uint8))
    with pytest.raises(ValueError, match="RGB"):
        parse_image(np.zeros((32, 32), np.uint8))
    with pytest.raises(ValueError, match="blob"):
        score_image(np.zeros((32, 32, 3), np.uint8), "a red blob")
