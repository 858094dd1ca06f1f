import numpy as np
import pytest

from unclip.world import render, render_array, sample_scene
from unclip.world.geometry import AREA
from unclip.world.vocab import BACKGROUNDS, COLOURS


@pytest.mark.parametrize("size", [15, 1025, 0, 64.0, True])
def test_size_outside_range_is_refused(size):
    with pytest.raises(ValueError, match="outside 16..1024"):
        render_array(sample_scene("train", 0), size)


@pytest.mark.parametrize("size", [16, 33, 64, 1024])
def test_render_colours_and_mass(size):
    scene = sample_scene("train", 2)
    image = render_array(scene, size)
    assert image.shape == (size, size, 3) and image.dtype == np.uint8
    background = np.array(BACKGROUNDS[scene.background])
    assert (image[0] == background).all() and (image[:, -1] == background).all()  # boxes keep off the border
    for obj in scene.objects:
        if obj.s * size >= 8:  # every shape covers its box centre (a whole pixel of it once s >= 8 px)
            assert tuple(image[int(obj.cy * size), int(obj.cx * size)]) == COLOURS[obj.colour]
    # Anti-aliasing conserves area: the object's alpha mass is its shape's area (to rounding and sampling).
    colour = np.array(COLOURS[scene.objects[0].colour], float)
    direction = colour - background
    alpha = ((image - background) @ direction) / (direction @ direction)
    total = sum(AREA[o.shape] * (o.s * size) ** 2 for o in scene.objects if o.colour == scene.objects[0].colour)
    if len({o.colour for o in scene.objects}) == 1:
        # 4x4 supersampling of a few-pixel shape errs by up to ~10% at 16 px; it converges with size.
        assert alpha.sum() == pytest.approx(total, rel=0.1 if size < 32 else 0.05 if size < 64 else 0.01)


def test_render_returns_rgb_pil_image():
    image = render(sample_scene("test", 1), 48)
    assert image.mode == "RGB" and image.size == (48, 48)
    assert np.array_equal(np.asarray(image), render_array(sample_scene("test", 1), 48))
