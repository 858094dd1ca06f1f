"""`unclip train --set KEY=VALUE` (unclip/train/overrides.py) and `--max-minutes`: typed parsing, clear errors, the
change reaching the run's TrainConfig, a resume with other changes refused, a time-boxed run writing its model."""

import dataclasses
import json
import re

import pytest

from unclip.cli import main
from unclip.decoder import UNetConfig
from unclip.decoder import train as decoder_train
from unclip.train import TrainConfig
from unclip.train.overrides import parse_train_changes, with_train_changes

from test_decoder_train import UNET, _saved_micro_clip


def test_values_are_parsed_by_the_field_type():
    changes = parse_train_changes(["batch_size=256", "lr=7e-4", "precision=bf16", "grad_clip=none", "ema_warmup=yes",
                                   "betas=0.9,0.99", "num_workers= 12"])
    assert changes == {"batch_size": 256, "lr": 7e-4, "precision": "bf16", "grad_clip": None, "ema_warmup": True,
                       "betas": (0.9, 0.99), "num_workers": 12}
    config = with_train_changes(TrainConfig(steps=10), changes)
    assert (config.steps, config.batch_size, config.grad_clip, config.betas) == (10, 256, None, (0.9, 0.99))
    assert with_train_changes(config, {}) is config


@pytest.mark.parametrize("pair, message", [
    ("batch_size", "expected KEY=VALUE"),
    ("=3", "expected KEY=VALUE"),
    ("batch=3", "'batch' is not a training setting; expected one of steps, batch_size"),
    ("batch_size=many", "--set batch_size=many: batch_size takes int"),
    ("lr=fast", "--set lr=fast: lr takes float"),
    ("ema_warmup=maybe", "ema_warmup takes bool: one of true, 1, yes, false, 0, no"),
    ("betas=0.9", "betas takes tuple"),
    ("steps=none", "steps takes int"),
])
def test_bad_pairs_are_named(pair, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        parse_train_changes([pair])


def test_bad_values_and_repeats_are_refused():
    with pytest.raises(ValueError, match="batch_size must be >= 1, got 0"):
        with_train_changes(TrainConfig(), parse_train_changes(["batch_size=0"]))
    with pytest.raises(ValueError, match="precision must be 'fp32' or 'bf16', got 'fp16'"):
        with_train_changes(TrainConfig(), parse_train_changes(["precision=fp16"]))
    with pytest.raises(ValueError, match="--set lr is given twice"):
        parse_train_changes(["lr=1e-3", "lr=2e-3"])


@pytest.mark.parametrize("pair, message", [
    # each of these trained without an error before: a negative clip norm flips the gradient, hook_every -1 ran the
    # hooks every step, and so on
    ("grad_clip=-1", "grad_clip must be a finite number > 0 or None"),
    ("grad_clip=0", "grad_clip must be a finite number > 0 or None"),
    ("lr=nan", "lr must be a finite number > 0, got nan"),
    ("lr=-1e-3", "lr must be a finite number > 0"),
    ("min_lr_ratio=3", r"min_lr_ratio must be in \[0, 1\], got 3.0"),
    ("warmup_steps=-5", "warmup_steps must be >= 0, got -5"),
    ("hook_every=-1", "hook_every must be >= 0, got -1"),
    ("num_workers=-2", "num_workers must be >= 0, got -2"),
    ("weight_decay=-1", "weight_decay must be a finite number >= 0"),
    ("betas=2,3", r"betas must be two numbers in \[0, 1\), got \(2.0, 3.0\)"),
])
def test_values_that_would_train_wrongly_are_refused_naming_the_setting(pair, message):
    with pytest.raises(ValueError, match=f"^--set: {message}"):
        with_train_changes(TrainConfig(), parse_train_changes([pair]))


def _micro_tiny_recipe(monkeypatch, *, steps: int, batch_size: int) -> None:
    """The decoder preset "tiny" shrunk to a 16 px UNet and `steps` steps of `batch_size`, for this test only."""
    base = decoder_train.RECIPES["tiny"]
    model = base.model.with_(unet=UNetConfig(image_size=16, attention_resolutions=(8,), **UNET))
    train = dataclasses.replace(base.train, steps=steps, batch_size=batch_size, warmup_steps=1, hook_every=0)
    monkeypatch.setitem(decoder_train.RECIPES, "tiny", decoder_train.DecoderRecipe(model=model, train=train,
                                                                                   sample_steps=2))


def test_cli_set_reaches_the_run_and_a_resume_must_repeat_it(tmp_path, monkeypatch, capsys):
    _saved_micro_clip(tmp_path)
    _micro_tiny_recipe(monkeypatch, steps=3, batch_size=4)
    run = ["train", "decoder", "--preset", "tiny", "--clip", str(tmp_path / "clip"), "--run-dir", str(tmp_path / "r")]
    assert main(run + ["--set", "batch_size=2", "--set", "steps=2", "--max-steps", "1"]) == 0
    recorded = json.loads((tmp_path / "r" / "config.json").read_text())["train"]
    assert (recorded["batch_size"], recorded["steps"]) == (2, 2)
    _refused(run, r"another train config \(differs in \['batch_size', 'steps'\]\)", capsys)
    # refused before anything is loaded: with the CLIP gone, the config is still what the error names
    no_clip = [str(tmp_path / "gone") if a == str(tmp_path / "clip") else a for a in run]
    _refused(no_clip + ["--set", "batch_size=3", "--set", "steps=2"], r"another train config \(differs in "
             r"\['batch_size'\]\)", capsys)
    assert main(run + ["--set", "steps=2", "--set", "batch_size=2"]) == 0  # resumed to the end
    assert json.loads((tmp_path / "r" / "metrics.jsonl").read_text().splitlines()[-1])["step"] == 2
    # how often to log or checkpoint may change between sittings; what is trained may not
    assert main(run + ["--set", "steps=2", "--set", "batch_size=2", "--set", "log_every=7",
                       "--set", "checkpoint_every=5"]) == 0
    _refused(run + ["--set", "lr"], "unclip train decoder: --set 'lr': expected KEY=VALUE", capsys)
    _refused(run + ["--set", "batch_size=0"], "batch_size must be >= 1, got 0", capsys)
    _refused(["train", "all", "--run-dir", str(tmp_path / "all"), "--set", "lr=1e-3"],
             "unclip train all: --set and --max-minutes are for one stage", capsys)
    _refused(run + ["--max-minutes", "0"], "--max-minutes must be > 0, got 0.0", capsys)
    _refused(run + ["--set", "precision=bf16"], "--set precision=bf16 is for --device cuda \\(got --device cpu\\)",
             capsys)


def test_cli_max_minutes_stops_the_run_early_and_writes_its_model(tmp_path, monkeypatch):
    _saved_micro_clip(tmp_path)
    _micro_tiny_recipe(monkeypatch, steps=50, batch_size=2)
    run = ["train", "decoder", "--preset", "tiny", "--clip", str(tmp_path / "clip"), "--run-dir", str(tmp_path / "r")]
    assert main(run + ["--max-minutes", "1e-9"]) == 0
    log = [json.loads(x) for x in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert log[-1] == {"step": 1, "stopped": "time limit (max_seconds)"}
    assert (tmp_path / "r" / "model" / "model.safetensors").is_file()


def _refused(argv, message, capsys):
    """The CLI exits non-zero and says `message` (a regex) on stderr or in its SystemExit."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code != 0
    assert re.search(message, str(exit_info.value.code) + capsys.readouterr().err), message


@pytest.mark.parametrize("stage", ["decoder", "prior"])
def test_a_resume_with_other_settings_is_refused_before_the_clip_loads(tmp_path, stage):
    """The stored training config is compared first: the CLIP named here does not exist, and the error is still the
    config's (a prior would otherwise embed its 100,000 pairs first, minutes on this CPU)."""
    from unclip.prior import train as prior_train

    recipe = decoder_train.RECIPES["tiny"] if stage == "decoder" else prior_train.RECIPES["diffusion"]["tiny"]
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"train": recipe.train.to_dict() | {"steps": 7}}))
    kwargs = dict(run_dir=run, clip_dir=tmp_path / "no-clip", train_changes={"log_every": 3})  # bookkeeping may differ
    with pytest.raises(ValueError, match=r"another train config \(differs in \['steps'\]\)"):
        if stage == "decoder":
            decoder_train.train_decoder(preset_name="tiny", **kwargs)
        else:
            prior_train.train_prior(kind="diffusion", preset_name="tiny", **kwargs)
