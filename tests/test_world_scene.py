import hashlib
import subprocess
import sys
from collections import Counter
from itertools import combinations

import numpy as np
import pytest

from unclip.world import HELD_OUT, caption_holds, format_caption, parse_caption, sample_scene
from unclip.world.scene import BOX_GAP, BOX_MARGIN, LINE_MARGIN, PAIR_MARGIN, Scene
from unclip.world.vocab import SIZE_RANGES

N = 1500


@pytest.fixture(scope="module")
def train_scenes():
    return [sample_scene("train", i) for i in range(N)]


def test_same_split_and_index_give_the_same_scene():
    assert sample_scene("val", 17) == sample_scene("val", 17)
    assert Scene.from_dict(sample_scene("val", 17).to_dict()) == sample_scene("val", 17)
    assert sample_scene("train", 17) != sample_scene("test", 17)


def test_scenes_are_pinned():
    """The world is a pure function of (split, index) that runs, models and benchmarks depend on: a digest of
    200 scenes of each split, taken from the code before its layout sampler was sped up, holds them fixed."""
    digest = hashlib.sha256()
    for split in ("train", "val", "test", "novel"):
        for i in range(200):
            digest.update(sample_scene(split, i).to_json().encode())
    assert digest.hexdigest() == "8f43b575bac618fa41f178e61509034de284268c67f3e2235e7866e75aaf3ba7"


def test_png_bytes_are_identical_across_processes(tmp_path):
    code = (
        "import sys, io; from unclip.world import sample_scene, render\n"
        "buf = io.BytesIO(); render(sample_scene('novel', 5), 96).save(buf, format='PNG')\n"
        "sys.stdout.buffer.write(buf.getvalue())\n"
    )
    runs = [subprocess.run([sys.executable, "-c", code], capture_output=True, check=True).stdout for _ in range(2)]
    assert runs[0] == runs[1] and runs[0].startswith(b"\x89PNG")


@pytest.mark.parametrize("bad", ["training", "", "TEST"])
def test_unknown_split_is_refused(bad):
    with pytest.raises(ValueError, match="unknown split"):
        sample_scene(bad, 0)


@pytest.mark.parametrize("bad", [-1, 1.5, "3"])
def test_bad_index_is_refused(bad):
    with pytest.raises(ValueError, match="index"):
        sample_scene("train", bad)


@pytest.mark.parametrize("split", ["train", "novel"])
def test_forms_counts_and_sizes_keep_their_probabilities(split):
    # The forms are equally likely in every split, lists and counts hold 2 or 3 objects with p=1/2,
    # and redrawing layouts must not thin out large objects in crowded scenes.
    scenes = [sample_scene(split, i) for i in range(N)]
    forms = Counter(s.form for s in scenes)
    for form in ("single", "pair", "list", "count"):
        assert forms[form] / N == pytest.approx(0.25, abs=0.035), forms
    groups = [s for s in scenes if s.form in ("list", "count")]
    assert sum(len(s.objects) == 3 for s in groups) / len(groups) == pytest.approx(0.5, abs=0.05)
    crowded = [o for s in scenes if len(s.objects) == 3 for o in s.objects]
    assert sum(o.size == "large" for o in crowded) / len(crowded) == pytest.approx(0.5, abs=0.05)


def test_background_and_prefix_frequencies(train_scenes):
    assert sum(s.background == "white" for s in train_scenes) / N == pytest.approx(0.5, abs=0.04)
    specs = [parse_caption(s.caption) for s in train_scenes]
    assert sum(sp.prefix is None for sp in specs) / N == pytest.approx(0.5, abs=0.04)
    assert sum(sp.background is not None for sp in specs) / N == pytest.approx(0.5, abs=0.04)
    singles = [sp for sp in specs if sp.form == "single"]
    assert sum(sp.position is not None for sp in singles) / len(singles) == pytest.approx(0.5, abs=0.08)


def test_captions_parse_round_trip_and_are_true(train_scenes):
    for scene in train_scenes:
        spec = parse_caption(scene.caption)
        assert format_caption(spec) == scene.caption
        assert spec.form == scene.form and len(spec.objects) == len(scene.objects)
        assert caption_holds(spec, scene), scene


def test_layout_constraints(train_scenes):
    for scene in train_scenes:
        for o in scene.objects:
            lo, hi = SIZE_RANGES[o.size]
            assert lo <= o.s <= hi
            assert o.cx - o.s / 2 >= BOX_MARGIN - 1e-12 and o.cx + o.s / 2 <= 1 - BOX_MARGIN + 1e-12
            assert o.cy - o.s / 2 >= BOX_MARGIN - 1e-12 and o.cy + o.s / 2 <= 1 - BOX_MARGIN + 1e-12
            assert all(abs(c - line) >= LINE_MARGIN for c in (o.cx, o.cy) for line in (1 / 3, 2 / 3))
        for a, b in combinations(scene.objects, 2):
            reach = (a.s + b.s) / 2 + BOX_GAP
            assert abs(a.cx - b.cx) >= reach - 1e-12 or abs(a.cy - b.cy) >= reach - 1e-12
        if scene.form == "pair":
            a, b = scene.objects
            dx, dy = abs(a.cx - b.cx), abs(a.cy - b.cy)
            assert max(dx, dy) >= min(dx, dy) + PAIR_MARGIN
            assert a.identity != b.identity
        if scene.form == "count":
            assert len({o.identity for o in scene.objects}) == 1 and len(scene.objects) in (2, 3)
        if scene.form == "list":
            assert len({o.identity for o in scene.objects}) == len(scene.objects) in (2, 3)


@pytest.mark.parametrize("split", ["train", "val", "test", "novel"])
def test_held_out_pairs_by_split(split):
    for i in range(400):
        pairs = {(o.colour, o.shape) for o in sample_scene(split, i).objects}
        assert bool(pairs & HELD_OUT) == (split == "novel")


def test_block_uniforms_leave_the_generator_where_single_draws_would():
    """The layout sampler draws its numbers in blocks (scene._Uniforms); the numbers and the generator's state
    after close() must be those of drawing them one at a time, across block boundaries."""
    from unclip.world.scene import _Uniforms

    blocked, single = np.random.default_rng(3), np.random.default_rng(3)
    u = _Uniforms(blocked)
    got = [u.uniform(0.2, 0.7) for _ in range(2 * _Uniforms.BLOCK + 5)]
    u.close()
    want = [float(single.uniform(0.2, 0.7)) for _ in range(2 * _Uniforms.BLOCK + 5)]
    assert got == want
    assert blocked.random() == single.random()
