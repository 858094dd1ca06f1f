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


def test_one_text_pass_for_true_and_negative_captions_gives_the_two_pass_loss():
    """clip_loss runs true and hard-negative captions through the text tower together (for speed): the loss and
    its gradients are those of encoding them separately, as the contrastive loss is written."""
    from unclip.clip import CLIP, preset
    from unclip.clip.model import contrastive_loss
    from unclip.clip.train import SHAPES_TOKENIZER, clip_loss
    from unclip.data import collate_image_caption
    from unclip.data.sources import ShapesItems
    from unclip.tokenizer import Tokenizer

    tokenizer = Tokenizer.load(SHAPES_TOKENIZER)
    torch.manual_seed(0)
    model = CLIP(preset("tiny").with_(vocab_size=tokenizer.vocab_size, vision_layers=1, text_layers=2))
    data = ShapesItems("train", size=32, negatives=2)
    batch = collate_image_caption([data[i] for i in range(40)])  # 80 negatives: several length groups
    merged = clip_loss(tokenizer)(model, batch, None)["loss"]
    grads = torch.autograd.grad(merged, [model.token_embedding.weight, model.visual.proj])
    image, text, scale = model(batch["image"], tokenizer(batch["caption"]))
    extra = torch.nn.functional.normalize(model.encode_text_tokens(tokenizer(batch["negatives"])), dim=-1)
    separate = contrastive_loss(image, text, scale, extra_text=extra)
    reference = torch.autograd.grad(separate, [model.token_embedding.weight, model.visual.proj])
    torch.testing.assert_close(merged, separate, rtol=1e-5, atol=1e-5)
    for got, want in zip(grads, reference):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)
