"""Saving and loading a prior: a directory with model.safetensors + prior_config.json naming its kind."""

from __future__ import annotations

import os

import torch

from ..train.checkpoint import load_stage, save_stage
from .autoregressive import ARPrior
from .config import ARPriorConfig, DiffusionPriorConfig
from .diffusion import DiffusionPrior

KINDS = {"diffusion": (DiffusionPrior, DiffusionPriorConfig), "autoregressive": (ARPrior, ARPriorConfig)}
CONFIG_FILE = "prior_config.json"


def prior_kind(prior: torch.nn.Module) -> str:
    for kind, (cls, _) in KINDS.items():
        if isinstance(prior, cls):
            return kind
    raise TypeError(f"not a prior: {type(prior).__name__}")


def save_prior(directory: str | os.PathLike, prior: DiffusionPrior | ARPrior) -> None:
    save_stage(directory, prior, kind=prior_kind(prior), config_file=CONFIG_FILE)


def load_prior(directory: str | os.PathLike, *, device: str | torch.device = "cpu") -> DiffusionPrior | ARPrior:
    return load_stage(directory, KINDS, config_file=CONFIG_FILE, what="prior").to(device)
