"""The decoder's conditioning (unCLIP §2.1): z_i and the caption, turned into what the UNet reads.

- z_i is projected and added to the timestep embedding, so every residual block sees it;
- z_i is also projected into `context_tokens` (four) extra tokens, concatenated to the caption's
  projected token states; the attention layers read this context as extra keys and values (GLIDE §2.2).
For classifier-free guidance, learned null embeddings replace z_i where `keep_image` is False and the
caption where `keep_text` is False; a dropped caption becomes one learned token and its length is forgotten.
No caption at all (text_states=None) reads as a dropped caption in every row: unCLIP §3 decodes image
variations from z_i alone. Likewise no z_i at all reads as the null z_i in every row: the decoder then draws
from the caption alone (the paper's no-prior ablation, prior kind "none").
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from .config import UNetConfig


class Context(NamedTuple):
    time: torch.Tensor | None  # (B, time_embed_dim) to add to the timestep embedding, or None
    tokens: torch.Tensor | None  # (B, L, context_width) tokens for the attention layers, or None
    mask: torch.Tensor | None  # (B, L) bool, True = a real token; None when every token is real


class Conditioning(nn.Module):
    def __init__(self, cfg: UNetConfig):
        super().__init__()
        self.config = cfg
        width = cfg.context_width
        if cfg.clip_dim is not None:
            self.image_to_time = nn.Linear(cfg.clip_dim, cfg.time_embed_dim)
            self.image_to_tokens = nn.Linear(cfg.clip_dim, cfg.context_tokens * width)
            # unCLIP §2.1: "randomly setting the CLIP embeddings to zero (or a learned embedding)": learned, from zero.
            self.null_image = nn.Parameter(torch.zeros(cfg.clip_dim))
            self.image_mlp = None
            if cfg.image_mlp_width is not None:  # UNetConfig.image_mlp_width: a non-linear path beside the two
                out = nn.Linear(cfg.image_mlp_width, cfg.time_embed_dim + cfg.context_tokens * width)
                nn.init.zeros_(out.weight), nn.init.zeros_(out.bias)  # starts as the paper's linear projections
                self.image_mlp = nn.Sequential(nn.Linear(cfg.clip_dim, cfg.image_mlp_width), nn.SiLU(), out)
        if cfg.text_width is not None:
            self.text_norm = nn.LayerNorm(cfg.text_width)  # CLIP's token states are not normalised
            self.text_proj = nn.Linear(cfg.text_width, width)
            self.null_text = nn.Parameter(0.02 * torch.randn(width))  # replaces a dropped caption
        if cfg.conditioned:
            self.context_norm = nn.LayerNorm(width)  # as GLIDE's text transformer ends with final_ln

    def forward(self, batch: int, *, image_embedding: torch.Tensor | None, text_states: torch.Tensor | None,
                text_mask: torch.Tensor | None, keep_image: torch.Tensor | None,
                keep_text: torch.Tensor | None) -> Context:
        cfg = self.config
        _check_unexpected("image_embedding", image_embedding, cfg.clip_dim, "clip_dim")
        _check_unexpected("text_states", text_states, cfg.text_width, "text_width")
        if text_mask is not None and text_states is None:
            raise ValueError("text_mask given without text_states")
        for name, keep, field in (("keep_image", keep_image, "clip_dim"), ("keep_text", keep_text, "text_width")):
            if keep is not None and getattr(cfg, field) is None:
                raise ValueError(f"{name} given, but this UNet has {field}=None: there is nothing to drop")
        parts, masks, time = [], [], None
        if cfg.text_width is not None:
            text, text_mask = self._caption(batch, text_states, text_mask, keep_text)
            parts.append(text)
            if text_mask is not None:
                masks.append(text_mask)
        if cfg.clip_dim is not None:
            time, tokens = self._image(batch, image_embedding, keep_image)
            parts.append(tokens)
            if masks:
                masks.append(torch.ones(batch, cfg.context_tokens, dtype=torch.bool, device=tokens.device))
        if not parts:
            return Context(time=None, tokens=None, mask=None)
        tokens = self.context_norm(torch.cat(parts, dim=1))  # (B, L, W)
        mask = torch.cat(masks, dim=1) if masks else None  # (B, L)
        return Context(time=time, tokens=tokens, mask=mask)

    def _caption(self, batch: int, states: torch.Tensor | None, mask: torch.Tensor | None,
                 keep: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The caption's context tokens (B, T, W) and their mask (B, T), or (B, 1, W) null tokens without one."""
        if states is None:  # no caption: every row reads the null caption, as a dropped one does
            return self.null_text.expand(batch, 1, -1), None  # (B, 1, W): one real token, no mask needed
        width = self.config.text_width
        if states.ndim != 3 or states.shape[0] != batch or states.shape[2] != width:
            raise ValueError(f"text_states must be (B={batch}, T, text_width={width}), got {tuple(states.shape)}")
        length = states.shape[1]
        if mask is None:
            mask = torch.ones(batch, length, dtype=torch.bool, device=states.device)
        elif mask.shape != (batch, length) or mask.dtype != torch.bool:
            raise ValueError(f"text_mask must be bool of shape {(batch, length)}, got {mask.dtype} {tuple(mask.shape)}")
        text = self.text_proj(self.text_norm(states))  # (B, T, W)
        if keep is not None:
            k = _check_keep("keep_text", keep, batch).to(text.device)
            first = torch.arange(length, device=text.device) == 0  # (T,)
            text = torch.where(k[:, None, None], text, self.null_text.to(text.dtype).expand_as(text))
            mask = torch.where(k[:, None], mask, first[None])  # a dropped caption: one null token, no length
        return text, mask

    def _image(self, batch: int, z: torch.Tensor | None,
               keep: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """z_i (B, clip_dim) -> (its addition to the timestep embedding (B, E), its context tokens (B, 4, W))."""
        cfg = self.config
        if z is not None and z.shape != (batch, cfg.clip_dim):
            raise ValueError(f"image_embedding must be (B={batch}, clip_dim={cfg.clip_dim}), got {tuple(z.shape)}")
        if z is None:  # no z_i: every row reads the null embedding, as a dropped one does
            z = self.null_image.expand(batch, -1)
        elif keep is not None:
            k = _check_keep("keep_image", keep, batch).to(z.device)
            z = torch.where(k[:, None], z, self.null_image.to(z.dtype).expand_as(z))
        time = self.image_to_time(z)  # unCLIP §2.1: projected and added to the timestep embedding (B, E)
        tokens = self.image_to_tokens(z)  # unCLIP §2.1: projected into four extra tokens of context (B, 4 W)
        if self.image_mlp is not None:
            extra_time, extra_tokens = self.image_mlp(z).split([time.shape[1], tokens.shape[1]], dim=1)
            time, tokens = time + extra_time, tokens + extra_tokens
        return time, tokens.reshape(batch, cfg.context_tokens, -1)  # (B, E), (B, 4, W)


def _check_unexpected(name: str, value: torch.Tensor | None, size: int | None, field: str) -> None:
    if value is not None and size is None:
        raise ValueError(f"{name} given of shape {tuple(value.shape)}, but this UNet has {field}=None")


def _check_keep(name: str, keep: torch.Tensor, batch: int) -> torch.Tensor:
    if keep.shape != (batch,) or keep.dtype != torch.bool:
        raise ValueError(f"{name} must be a bool tensor of shape ({batch},), got {keep.dtype} {tuple(keep.shape)}")
    return keep
