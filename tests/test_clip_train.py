"""`unclip train clip`: the loss falls, and a run split across invocations equals one run (issue 4's check)."""

import json
import math
import subprocess
import sys

import torch

from unclip.train import read_tensors


def _train(run_dir, steps):
    cmd = [sys.executable, "-m", "unclip.cli", "train", "clip", "--preset", "tiny", "--run-dir", str(run_dir),
           "--max-steps", str(steps), "--threads", "1"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return read_tensors(run_dir / "model" / "model.safetensors")


def test_split_cli_runs_end_with_identical_weights(tmp_path):
    whole = _train(tmp_path / "a", 4)
    _train(tmp_path / "b", 2)
    split = _train(tmp_path / "b", 4)
    assert whole.keys() == split.keys() and all(torch.equal(whole[k], split[k]) for k in whole)
    log = [json.loads(line) for line in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert log[-1]["step"] == 4 and (tmp_path / "b" / "model" / "tokenizer" / "tokenizer.json").is_file()
    # the tiny recipe starts its temperature at 30, not CLIP's 1 / 0.07; four steps at lr <= 4e-5 move
    # log-scale by well under 0.01
    assert abs(float(whole["logit_scale"]) - math.log(30.0)) < 0.01
    config = json.loads((tmp_path / "b" / "config.json").read_text())["model"]
    assert config["initial_logit_scale"] == 30.0 and len(config["negative_weights"]) == 7
