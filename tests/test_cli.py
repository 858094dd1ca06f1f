import json

import numpy as np
import pytest
from PIL import Image

from unclip.cli import main
from unclip.world import render_array, sample_scene


def _last_json(capsys):
    out = capsys.readouterr().out.strip().splitlines()
    return json.loads(out[-1]), "\n".join(out)


def test_sample_then_score_round_trip(tmp_path, capsys):
    assert main(["world", "sample", "--split", "novel", "--n", "12", "--size", "64", "--out", str(tmp_path),
                 "--start", "5", "--quiet"]) == 0
    lines = [json.loads(line) for line in (tmp_path / "prompts.jsonl").read_text().splitlines()]
    assert [line["file"] for line in lines] == [f"{k:06d}.png" for k in range(12)]
    assert lines[0]["caption"] == sample_scene("novel", 5).caption and lines[0]["index"] == 5
    assert np.array_equal(np.asarray(Image.open(tmp_path / "000003.png")), render_array(sample_scene("novel", 8), 64))
    capsys.readouterr()
    assert main(["world", "score", str(tmp_path), "--quiet"]) == 0
    summary, text = _last_json(capsys)
    assert summary["n"] == 12 and summary["overall"] == 1.0 and summary["errors"] == 0
    assert summary["skills"]["heldout"] == 1.0 and "colors" in text


def test_score_reports_bad_files_and_scores_the_rest(tmp_path, capsys):
    main(["world", "sample", "--n", "4", "--size", "32", "--out", str(tmp_path), "--quiet"])
    (tmp_path / "000001.png").unlink()
    (tmp_path / "000002.png").write_bytes(b"not a png at all")
    with open(tmp_path / "prompts.jsonl", "a") as f:
        f.write("{broken json\n")
        f.write(json.dumps({"file": "000000.png", "caption": "a red blob"}) + "\n")
    capsys.readouterr()
    assert main(["world", "score", str(tmp_path), "--quiet"]) == 0
    captured = capsys.readouterr()
    summary = json.loads(captured.out.strip().splitlines()[-1])
    assert summary["n"] == 2 and summary["errors"] == 4
    assert "missing image" in captured.err and "000002.png" in captured.err
    assert "unreadable manifest line" in captured.err and "'blob'" in captured.err


def test_wrong_images_are_scored_wrong(tmp_path, capsys):
    main(["world", "sample", "--n", "3", "--size", "64", "--out", str(tmp_path), "--quiet"])
    Image.new("RGB", (64, 64), "white").save(tmp_path / "000000.png")
    capsys.readouterr()
    main(["world", "score", str(tmp_path), "--quiet", "--show-failures", "5"])
    summary, text = _last_json(capsys)
    assert summary["n"] == 3 and summary["overall"] == pytest.approx(2 / 3)
    assert "wrong: 000000.png" in text


def test_show_writes_a_grid(tmp_path, capsys):
    out = tmp_path / "g" / "grid.png"
    assert main(["world", "show", "--split", "test", "--n", "6", "--size", "32", "--out", str(out)]) == 0
    grid = Image.open(out)
    assert grid.width > 3 * 100 and grid.height > 2 * 100


def test_bad_input_exits_with_a_clear_message(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["world", "sample", "--n", "2", "--size", "2000", "--out", str(tmp_path)])
    assert exit_info.value.code == 2 and "2000" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["world", "sample", "--split", "bogus", "--n", "2", "--out", str(tmp_path)])
    assert "bogus" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["world", "score", str(tmp_path / "nowhere")])
    assert exit_info.value.code == 2 and "no manifest" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:  # refused before any image or model is read
        main(["vary", str(tmp_path / "nowhere.png"), "--eta", "-0.5", "--out", str(tmp_path / "v")])
    assert exit_info.value.code == 2 and "-0.5" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="--init-from is for the priors"):  # refused before the CLIP is read
        main(["train", "clip", "--run-dir", str(tmp_path / "c"), "--init-from", str(tmp_path / "nowhere")])


def test_demo_writes_a_scored_grid(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path), "--n", "4", "--model", str(tmp_path / "no-model")]) == 0
    assert (tmp_path / "shapes_grid.png").is_file() and (tmp_path / "world" / "prompts.jsonl").is_file()
    assert "overall" in capsys.readouterr().out


def _commands(parser, prefix=()):
    """Every command line that reaches a parser: () for the top one, then ("world",), ("world", "sample"), ..."""
    import argparse
    yield prefix
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _commands(sub, prefix + (name,))


def test_every_command_explains_itself(capsys):
    """`--help` works for every verb: argparse %-formats help strings, so one stray "%" breaks it for the whole verb."""
    from unclip.cli import build_parser
    commands = list(_commands(build_parser()))
    assert ("train",) in commands and ("world", "sample") in commands
    for command in commands:
        with pytest.raises(SystemExit) as exit_:
            main([*command, "--help"])
        assert exit_.value.code == 0
        assert capsys.readouterr().out.startswith("usage: ")


def test_list_presets_names_every_recipe_and_marks_what_train_all_uses(tmp_path, capsys):
    from unclip.decoder.train import STAGE_OF
    from unclip.train_all import PRESETS

    assert main(["train", "decoder", "--list-presets"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "decoder:"
    listed = [line.split()[0] for line in lines[1:]]
    assert listed == [name for name, stage in STAGE_OF.items() if stage == "decoder"]
    cycles = (PRESETS["shapes-tiny"].decoder, *PRESETS["shapes-tiny"].decoder_finetunes)
    last = next(line for line in lines if line.split()[0] == cycles[-1])
    assert f"[shapes-tiny, cycle {len(cycles)} of {len(cycles)}]" in last
    assert "[" not in next(line for line in lines if line.split()[0] == "tiny-16-rb1-glide")  # used by no preset
    assert main(["train", "all", "--list-presets"]) == 0
    out = capsys.readouterr().out
    for heading in ("all (unclip train all):", "clip:", "prior:", "ar-prior:", "decoder:", "upsampler:",
                    "decoder-distill:", "judge:"):
        assert heading in out.splitlines()
    assert "  tiny-tok-wide  [shapes-tiny]" in out.splitlines()
    judge = out.splitlines()[out.splitlines().index("judge:") + 1:]
    assert judge[0] == "  tiny  [shapes-tiny]"  # the judge recipe shapes-tiny trains and ships
    with pytest.raises(SystemExit, match="--run-dir DIR is required"):  # without --list-presets a run needs a place
        main(["train", "decoder", "--clip", str(tmp_path)])
