"""Saving and loading CLIP: unclip's own directories, and real OpenAI / open_clip weights from a local file.

unclip's format is a directory: model.safetensors + clip_config.json + tokenizer/. Real weights are read
from a safetensors file holding OpenAI's or open_clip's state dict (the same key names for the ViT
models: visual.conv1.weight, ..., text_projection, logit_scale; open_clip may add a "module." prefix);
the architecture is read off the tensor shapes, as OpenAI's build_model does. Pickled .pt/.bin files
are refused: convert them once with `safetensors.torch.save_file(torch.load(f, weights_only=True), out)`
(for OpenAI's TorchScript files: `torch.jit.load(f).state_dict()`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from ..tokenizer import Tokenizer
from ..train.checkpoint import load_model_tensors, model_tensors, read_tensors, write_tensors
from .config import OPENAI_MEAN, OPENAI_STD, CLIPConfig
from .model import CLIP

IGNORED_KEYS = ("input_resolution", "context_length", "vocab_size", "attn_mask", "visual.attn_mask")


def save_clip(directory: str | os.PathLike, model: CLIP) -> None:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    write_tensors(directory / "model.safetensors", model_tensors(model))
    (directory / "clip_config.json").write_text(json.dumps(model.config.to_dict(), indent=1))
    if model.tokenizer is not None:
        model.tokenizer.save(directory / "tokenizer")


def load_clip(directory: str | os.PathLike, *, device: str | torch.device = "cpu") -> CLIP:
    directory = Path(directory)
    config = CLIPConfig.from_dict(json.loads((directory / "clip_config.json").read_text()))
    model = CLIP(config)
    load_model_tensors(model, read_tensors(directory / "model.safetensors"), source=str(directory))
    if (directory / "tokenizer").is_dir():
        model.tokenizer = Tokenizer.load(directory / "tokenizer")
    return model.to(device).eval()


def _count_layers(tensors: dict[str, torch.Tensor], prefix: str) -> int:
    blocks = {k[len(prefix):].split(".")[0] for k in tensors if k.startswith(prefix)}
    return len(blocks)


def config_from_openai(tensors: dict[str, torch.Tensor]) -> CLIPConfig:
    """Infer the architecture of an OpenAI-layout ViT CLIP from its tensor shapes."""
    if "visual.conv1.weight" not in tensors:
        raise ValueError("not an OpenAI/open_clip ViT state dict: no visual.conv1.weight (ResNet CLIPs and "
                         "custom-text towers are not supported)")
    vision_width, _, patch, _ = tensors["visual.conv1.weight"].shape
    grid = round((tensors["visual.positional_embedding"].shape[0] - 1) ** 0.5)
    text_width = tensors["ln_final.weight"].shape[0]
    return CLIPConfig(
        embed_dim=tensors["text_projection"].shape[1], image_size=patch * grid, patch_size=patch,
        vision_width=vision_width, vision_layers=_count_layers(tensors, "visual.transformer.resblocks."),
        vision_heads=vision_width // 64, context_length=tensors["positional_embedding"].shape[0],
        vocab_size=tensors["token_embedding.weight"].shape[0], text_width=text_width,
        text_layers=_count_layers(tensors, "transformer.resblocks."), text_heads=text_width // 64,
        activation="quick_gelu", image_mean=OPENAI_MEAN, image_std=OPENAI_STD,
    )


def load_openai_state_dict(tensors: dict[str, torch.Tensor], *, tokenizer: Tokenizer | None = None,
                           config: CLIPConfig | None = None) -> CLIP:
    """A CLIP holding an OpenAI/open_clip state dict, every key mapped (strict). Heads default to width/64."""
    tensors = {(k[len("module."):] if k.startswith("module.") else k): v for k, v in tensors.items()}
    tensors = {k: v for k, v in tensors.items() if k not in IGNORED_KEYS}
    model = CLIP(config or config_from_openai(tensors))
    load_model_tensors(model, {k: v.float() for k, v in tensors.items()}, source="the OpenAI/open_clip state dict")
    model.tokenizer = tokenizer
    return model.eval()


def load_pretrained(path: str | os.PathLike, *, bpe_vocab: str | os.PathLike | None = None) -> CLIP:
    """Real CLIP weights from a local safetensors file (plus CLIP's BPE vocabulary file for the text side)."""
    tokenizer = Tokenizer.from_clip_bpe(bpe_vocab) if bpe_vocab is not None else None
    return load_openai_state_dict(read_tensors(path), tokenizer=tokenizer)
