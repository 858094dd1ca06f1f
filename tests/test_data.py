"""Every data source on tiny generated fixtures, corrupt files included."""

import io
import json
import tarfile

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from unclip.data import (
    CaptionFolder, EmbeddingShards, EmojiDataset, TarShards, collate_embeddings, collate_image_caption, load_image,
    make_dataset, to_tensor,
)
from unclip.data.emoji import emoji_catalogue
from unclip.world import render, sample_scene


def _png(i, size=40):
    buf = io.BytesIO()
    render(sample_scene("test", i), size).save(buf, format="PNG")
    return buf.getvalue()


def test_load_image_refuses_non_images_and_bombs(tmp_path, monkeypatch):
    (tmp_path / "bad.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(ValueError, match="not a readable image"):
        load_image(tmp_path / "bad.png")
    big = tmp_path / "big.png"
    Image.new("RGB", (300, 300)).save(big)
    monkeypatch.setattr("unclip.data.images.MAX_IMAGE_PIXELS", 10_000)
    with pytest.raises(ValueError, match="pixel limit|decompression bomb"):
        load_image(big)


def test_to_tensor_crops_resizes_and_lays_transparency_on_white():
    rgba = Image.new("RGBA", (80, 40), (255, 0, 0, 0))  # fully transparent red: white once composited
    buf = io.BytesIO()
    rgba.save(buf, format="PNG")
    tensor = to_tensor(load_image(buf.getvalue()), 16)
    assert tensor.shape == (3, 16, 16) and torch.allclose(tensor, torch.ones_like(tensor))


def test_caption_folder_skips_corrupt_and_missing_images(tmp_path):
    for i in range(3):
        (tmp_path / f"{i}.png").write_bytes(_png(i))
    (tmp_path / "corrupt.png").write_bytes(b"garbage")
    lines = [{"file": f"{i}.png", "caption": sample_scene("test", i).caption} for i in range(3)]
    lines += [{"file": "corrupt.png", "caption": "x"}, {"file": "missing.png", "caption": "y"}]
    (tmp_path / "captions.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n{not json\n")
    ds = CaptionFolder(tmp_path, size=32)
    assert len(ds) == 5 and len(ds.bad_lines) == 1
    batch = next(iter(DataLoader(ds, batch_size=5, collate_fn=collate_image_caption)))
    assert batch["image"].shape == (3, 3, 32, 32) and batch["skipped"] == 2
    assert batch["caption"][1] == sample_scene("test", 1).caption
    with pytest.raises(FileNotFoundError, match="captions.jsonl"):
        CaptionFolder(tmp_path / "nowhere", size=32)


def _write_shard(path, keys, corrupt_image=None):
    with tarfile.open(path, "w") as tar:
        for key in keys:
            for ext, data in (("png", b"broken" if key == corrupt_image else _png(key)),
                              ("txt", sample_scene("test", key).caption.encode())):
                info = tarfile.TarInfo(f"{key:09d}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))


def test_tar_shards_skip_corrupt_shards_and_images(tmp_path):
    _write_shard(tmp_path / "000000.tar", [0, 1, 2])
    _write_shard(tmp_path / "000001.tar", [3, 4], corrupt_image=4)
    (tmp_path / "000002.tar").write_bytes(b"this is not a tar file at all" * 50)
    ds = TarShards(tmp_path, size=24)
    assert len(ds) == 5 and len(ds.bad_shards) == 1 and "000002.tar" in ds.bad_shards[0]
    assert ds[3]["caption"] == sample_scene("test", 3).caption and ds[4] is None
    loader = DataLoader(ds, batch_size=5, collate_fn=collate_image_caption, num_workers=2)
    batch = next(iter(loader))
    assert batch["image"].shape == (4, 3, 24, 24) and batch["skipped"] == 1


def test_embedding_shards_pair_up_and_skip_bad_ones(tmp_path):
    (tmp_path / "img_emb").mkdir()
    (tmp_path / "text_emb").mkdir()
    rng = np.random.default_rng(0)
    for k, n in enumerate((3, 4)):
        np.save(tmp_path / "img_emb" / f"img_emb_{k}.npy", rng.normal(size=(n, 8)).astype(np.float16))
        np.save(tmp_path / "text_emb" / f"text_emb_{k}.npy", rng.normal(size=(n, 8)).astype(np.float32))
    np.save(tmp_path / "img_emb" / "img_emb_2.npy", np.zeros((5, 8)))
    (tmp_path / "text_emb" / "text_emb_2.npy").write_bytes(b"corrupt")
    ds = EmbeddingShards(tmp_path)
    assert len(ds) == 7 and ds.dim == 8 and len(ds.bad_shards) == 1
    second_shard_row = np.load(tmp_path / "img_emb" / "img_emb_1.npy")[1].astype(np.float32)
    assert torch.equal(ds[4]["image_embedding"], torch.from_numpy(second_shard_row))
    batch = collate_embeddings([ds[0], None, ds[6]])
    assert batch["text_embedding"].shape == (2, 8) and batch["skipped"] == 1


def test_emoji_catalogue_and_fixed_split():
    catalogue = emoji_catalogue()
    assert len(catalogue) > 3500  # ~3,700 with skin-tone variants
    names = {caption for _, caption, _ in catalogue}
    assert "grinning face" in names and "horse racing" in names
    train, test = EmojiDataset("train", size=32), EmojiDataset("test", size=32)
    assert len(train) + len(test) == len(catalogue) and 0.07 < len(test) / len(catalogue) < 0.13
    assert {p for _, p in train.items}.isdisjoint({p for _, p in test.items})
    item = test[0]
    assert item["image"].shape == (3, 32, 32) and item["image"].min() >= -1


def test_make_dataset_specs(tmp_path):
    shapes = make_dataset("shapes:novel", size=16)
    assert shapes[2]["caption"] == sample_scene("novel", 2).caption and shapes[2]["image"].shape == (3, 16, 16)
    assert len(make_dataset("emoji:test", size=16)) > 300
    for bad, match in [("pictures:x", "unknown data source"), ("folder", "needs a path"), ("shapes:dev", "split")]:
        with pytest.raises(ValueError, match=match):
            make_dataset(bad)


def test_shapes_negatives_follow_their_attribute_weights():
    from unclip.data.sources import ShapesItems
    from unclip.world import parse_caption
    from unclip.world.perturb import ATTRIBUTES

    def changed(item, scene):
        return "relation" if parse_caption(item["negatives"][0]).relation != parse_caption(scene.caption).relation \
            else "other"

    # Pair scenes can take a relation change; with the relation weight at 100x the rest, the first negative
    # is nearly always one (100 / 104 of the time: count and position do not apply and are skipped), where
    # equal weights give about 1 in 5.
    weights = tuple(100.0 if a == "relation" else 1.0 for a in ATTRIBUTES)
    heavy = ShapesItems("train", size=16, length=400, negatives=1, negative_weights=weights)
    plain = ShapesItems("train", size=16, length=400, negatives=1)
    pairs = [i for i in range(400) if sample_scene("train", i).form == "pair"][:40]
    share = lambda ds: np.mean([changed(ds[i], sample_scene("train", i)) == "relation" for i in pairs])
    assert share(heavy) > 0.85 and share(plain) < 0.5
    assert heavy[pairs[0]]["negatives"] == heavy[pairs[0]]["negatives"]  # seeded by the index
    with pytest.raises(ValueError, match="negative_weights"):
        ShapesItems("train", size=16, negatives=1, negative_weights=(1.0, 2.0))


def test_shapes_form_weights_draw_forms_in_proportion():
    from collections import Counter

    from unclip.data.sources import ShapesItems
    from unclip.world.scene import FORMS

    plain = ShapesItems("train", size=16, length=50)
    assert [plain[i]["caption"] for i in range(5)] == [sample_scene("train", i).caption for i in range(5)]
    # singles almost never: a known-answer mix far from the world's equal one
    items = ShapesItems("train", size=16, length=1200, form_weights=(0.05, 1.0, 1.0, 2.0))
    index = [items.world_index(i) for i in range(1200)]
    assert len(set(index)) == 1200  # no two items share a scene
    share = Counter(sample_scene("train", j).form for j in index)
    expected = np.array([0.05, 1.0, 1.0, 2.0]) / 4.05
    got = np.array([share[f] for f in FORMS]) / 1200
    assert np.abs(got - expected).max() < 0.05, (got, expected)
    again = ShapesItems("train", size=16, length=1200, form_weights=(0.05, 1.0, 1.0, 2.0))
    assert again[7]["caption"] == items[7]["caption"] == sample_scene("train", index[7]).caption  # seeded
    assert torch.equal(again[7]["image"], items[7]["image"])
    assert items[-1]["caption"] == items[1199]["caption"] and len(items) == 1200
    with pytest.raises(IndexError, match="1200"):
        items[1200]
    for bad in [(1.0, 2.0), (1.0, 0.0, 1.0, 1.0), (1.0, float("nan"), 1.0, 1.0)]:
        with pytest.raises(ValueError, match="form_weights"):
            ShapesItems("train", size=16, form_weights=bad)


def test_shapes_negative_images_follow_their_change_weights_and_are_false_of_the_caption():
    from unclip.data import collate_image_caption
    from unclip.data.sources import ShapesItems
    from unclip.world import score_image
    from unclip.world.counterfactual import CHANGES

    # with the layout change at 100x the rest, a pair's negative image is nearly always its objects moved (where the
    # relation can fail, every pair); with equal weights about 1 in 6
    heavy = ShapesItems("train", size=64, length=400, change_weights=tuple(100.0 if c == "layout" else 1.0
                                                                           for c in CHANGES))
    plain = ShapesItems("train", size=64, length=400, change_weights=(1.0,) * len(CHANGES))
    pairs = [i for i in range(400) if sample_scene("train", i).form == "pair"][:30]

    def moved(item, i):  # the same objects in the negative image (so the layout or the background changed)
        parsed = score_image(((item["negative_image"].permute(1, 2, 0) + 1) * 127.5).round().byte().numpy(),
                             item["caption"]).parsed
        truth = sample_scene("train", i)
        objects = lambda found: sorted((o.colour, o.shape) for o in found)
        return objects(parsed.objects) == objects(truth.objects) and parsed.background == truth.background

    for ds in (heavy, plain):
        for i in pairs[:10]:  # every negative image is one the scorer rejects for the item's caption
            item = ds[i]
            image = ((item["negative_image"].permute(1, 2, 0) + 1) * 127.5).round().byte().numpy()
            assert not score_image(image, item["caption"]).correct
    assert np.mean([moved(heavy[i], i) for i in pairs]) > 0.8 and np.mean([moved(plain[i], i) for i in pairs]) < 0.5
    assert torch.equal(heavy[pairs[0]]["negative_image"], heavy[pairs[0]]["negative_image"])  # seeded by the index
    batch = collate_image_caption([plain[i] for i in range(5)])
    assert batch["negative_image"].shape == (5, 3, 64, 64) and "negative_image" not in ShapesItems(
        "train", size=16, length=4)[0]
    for bad in [(1.0, 2.0), (1.0,) * (len(CHANGES) - 1) + (0.0,)]:
        with pytest.raises(ValueError, match="change_weights"):
            ShapesItems("train", size=16, change_weights=bad)
