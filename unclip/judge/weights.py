"""Saving and loading a judge: a directory with model.safetensors + judge_config.json naming its kind and config,
loaded strictly (train/checkpoint.py's save_stage / load_stage, as the decoder's and the priors' are)."""

from __future__ import annotations

import os

import torch

from ..train.checkpoint import load_stage, save_stage
from .config import JudgeConfig
from .model import Judge

KINDS = {"judge": (Judge, JudgeConfig)}
CONFIG_FILE = "judge_config.json"


def save_judge(directory: str | os.PathLike, model: Judge) -> None:
    save_stage(directory, model, kind="judge", config_file=CONFIG_FILE)


def load_judge(directory: str | os.PathLike, *, device: str | torch.device = "cpu") -> Judge:
    return load_stage(directory, KINDS, config_file=CONFIG_FILE, what="judge").to(device)
