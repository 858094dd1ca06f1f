"""Saving and loading a judge: a directory of model.safetensors + judge_config.json."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from ..atomic import write_text_atomically
from ..train.checkpoint import load_model_tensors, model_tensors, read_tensors, write_tensors
from .config import JudgeConfig
from .model import Judge


def save_judge(directory: str | os.PathLike, model: Judge) -> None:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    write_tensors(directory / "model.safetensors", model_tensors(model))
    write_text_atomically(directory / "judge_config.json", json.dumps(model.config.to_dict(), indent=1))


def load_judge(directory: str | os.PathLike, *, device: str | torch.device = "cpu") -> Judge:
    directory = Path(directory)
    config_file = directory / "judge_config.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"{directory} is not a judge directory: no judge_config.json")
    model = Judge(JudgeConfig.from_dict(json.loads(config_file.read_text())))
    load_model_tensors(model, read_tensors(directory / "model.safetensors"), source=str(directory))
    return model.to(device).eval()
