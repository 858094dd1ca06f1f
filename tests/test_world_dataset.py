import torch
from torch.utils.data import DataLoader

import pytest

from unclip.world import ShapesDataset, collate, render_array, sample_scene


def test_items_are_images_in_minus_one_one_with_caption_and_scene():
    ds = ShapesDataset("val", size=32, length=5, start=10)
    image, caption, scene = ds[2]
    assert image.shape == (3, 32, 32) and image.dtype == torch.float32
    assert image.min() >= -1 and image.max() <= 1
    assert scene == sample_scene("val", 12) and caption == scene.caption
    expected = torch.from_numpy(render_array(scene, 32)).permute(2, 0, 1).float() / 127.5 - 1
    assert torch.equal(image, expected)
    assert len(ds) == 5
    with pytest.raises(IndexError):
        ds[5]


def test_loader_batches_with_collate():
    loader = DataLoader(ShapesDataset("train", size=16, length=6), batch_size=4, collate_fn=collate)
    images, captions, scenes = next(iter(loader))
    assert images.shape == (4, 3, 16, 16) and len(captions) == 4 and len(scenes) == 4
    assert captions[3] == sample_scene("train", 3).caption


@pytest.mark.parametrize("kwargs, match", [
    (dict(split="nope"), "unknown split"), (dict(size=8), "outside"), (dict(length=0), "length"),
])
def test_bad_arguments_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ShapesDataset(**kwargs)
