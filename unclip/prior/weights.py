"""Saving and loading a prior: a directory with model.safetensors + prior_config.json naming its kind."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from ..train.checkpoint import load_model_tensors, model_tensors, read_tensors, write_tensors
from .autoregressive import ARPrior
from .config import ARPriorConfig, DiffusionPriorConfig
from .diffusion import DiffusionPrior

KINDS = {"diffusion": (DiffusionPrior, DiffusionPriorConfig), "autoregressive": (ARPrior, ARPriorConfig)}


def prior_kind(prior: torch.nn.Module) -> str:
    for kind, (cls, _) in KINDS.items():
        if isinstance(prior, cls):
            return kind
    raise TypeError(f"not a prior: {type(prior).__name__}")


def save_prior(directory: str | os.PathLike, prior: DiffusionPrior | ARPrior) -> None:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / "model.safetensors.tmp"
    write_tensors(tmp, model_tensors(prior))
    os.replace(tmp, directory / "model.safetensors")
    record = {"kind": prior_kind(prior), "config": prior.config.to_dict()}
    (directory / "prior_config.json").write_text(json.dumps(record, indent=1))


def load_prior(directory: str | os.PathLike, *, device: str | torch.device = "cpu") -> DiffusionPrior | ARPrior:
    directory = Path(directory)
    config_path = directory / "prior_config.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"{directory} holds no prior_config.json: not a prior directory")
    record = json.loads(config_path.read_text())
    if record.get("kind") not in KINDS:
        raise ValueError(f"{config_path}: unknown prior kind {record.get('kind')!r}; expected one of {list(KINDS)}")
    cls, config_cls = KINDS[record["kind"]]
    prior = cls(config_cls.from_dict(record["config"]))
    load_model_tensors(prior, read_tensors(directory / "model.safetensors"), source=str(directory))
    return prior.to(device).eval()
