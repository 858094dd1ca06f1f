"""Saving and loading a decoder or an upsampler: a directory with model.safetensors + decoder_config.json naming
its kind ("decoder" or "upsampler") and config, loaded strictly."""

from __future__ import annotations

import os

import torch

from ..train.checkpoint import load_stage, save_stage
from .config import DecoderConfig, UpsamplerConfig
from .decoder import Decoder
from .upsampler import Upsampler

KINDS = {"decoder": (Decoder, DecoderConfig), "upsampler": (Upsampler, UpsamplerConfig)}
CONFIG_FILE = "decoder_config.json"


def stage_kind(model: torch.nn.Module) -> str:
    for kind, (cls, _) in KINDS.items():
        if isinstance(model, cls):
            return kind
    raise TypeError(f"not a decoder or an upsampler: {type(model).__name__}")


def save_decoder(directory: str | os.PathLike, model: Decoder | Upsampler) -> None:
    """Write the weights (atomically) and the config describing them into `directory`."""
    save_stage(directory, model, kind=stage_kind(model), config_file=CONFIG_FILE)


def load_decoder(directory: str | os.PathLike, *, device: str | torch.device = "cpu") -> Decoder | Upsampler:
    """The decoder or upsampler saved in `directory`, in eval mode."""
    return load_stage(directory, KINDS, config_file=CONFIG_FILE, what="decoder or upsampler").to(device)
