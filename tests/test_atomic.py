"""unclip/atomic.py: a file is replaced whole or not at all, and no temporary file is left behind."""

import pytest

from unclip.atomic import replace_atomically, write_text_atomically
from unclip.outputs import write_outputs
from unclip.world.manifest import write_world_samples


def test_write_replaces_the_file_and_leaves_nothing_beside_it(tmp_path):
    path = tmp_path / "a.json"
    path.write_text("old")
    assert write_text_atomically(path, "new") == path
    assert path.read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]


def test_a_write_that_fails_half_way_leaves_the_old_file_and_no_temporary_one(tmp_path):
    path = tmp_path / "prompts.jsonl"
    path.write_text("old\n")

    def half_then_fail(tmp):
        tmp.write_text("half of the ne")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        replace_atomically(path, half_then_fail)
    assert path.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["prompts.jsonl"]


@pytest.mark.parametrize("writer", ["outputs", "world"])
def test_the_manifest_writers_go_through_it(tmp_path, monkeypatch, writer):
    from PIL import Image
    import unclip.outputs
    import unclip.world.manifest

    module = unclip.outputs if writer == "outputs" else unclip.world.manifest
    failing = lambda path, text: replace_atomically(path, lambda tmp: (tmp.write_text(text[:5]), 1 / 0))
    monkeypatch.setattr(module, "write_text_atomically", failing)
    (tmp_path / "prompts.jsonl").write_text("kept\n")
    with pytest.raises(ZeroDivisionError):
        if writer == "outputs":
            write_outputs(tmp_path, [Image.new("RGB", (4, 4))], [{"caption": "a red circle"}])
        else:
            write_world_samples(tmp_path, split="test", n=1, size=16)
    assert (tmp_path / "prompts.jsonl").read_text() == "kept\n"
    assert not [p for p in tmp_path.iterdir() if ".tmp" in p.name]
