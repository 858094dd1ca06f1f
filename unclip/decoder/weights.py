"""Saving and loading a decoder or an upsampler: a directory with model.safetensors + decoder_config.json naming
its kind ("decoder" or "upsampler") and config, loaded strictly."""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch

from ..train.checkpoint import load_stage, save_stage
from .config import DecoderConfig, UpsamplerConfig, network_config
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


def average_decoders(directories: Sequence[str | os.PathLike], *,
                     device: str | torch.device = "cpu") -> Decoder | Upsampler:
    """One decoder (or upsampler) whose every weight is the mean of the saved ones' (a uniform "model soup",
    Wortsman et al. 2022): fine-tunes of one model, trained on different data from the same weights, usually sit in
    one basin of the loss, where their mean is at least as good as each. They must describe the same network
    (config.network_config: training-only settings such as conditioning dropout may differ, and the result keeps the
    first's); buffers that are not floating point (step counters) are taken from the first."""
    if not directories:
        raise ValueError("average_decoders needs at least one directory")
    models = [load_decoder(d) for d in directories]
    for directory, model in zip(directories[1:], models[1:]):
        if type(model) is not type(models[0]) or network_config(model.config) != network_config(models[0].config):
            raise ValueError(f"cannot average {directory} with {directories[0]}: they describe different networks")
    states = [m.state_dict() for m in models]
    mean = {name: (torch.stack([s[name].float() for s in states]).mean(0).to(value.dtype)
                   if value.is_floating_point() else value)
            for name, value in states[0].items()}
    models[0].load_state_dict(mean)
    return models[0].to(device)
