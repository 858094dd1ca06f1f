"""The decoder's own caption encoder: GLIDE's text transformer (Nichol et al. 2021 §2.2), trained with the decoder.

unCLIP §2.1 conditions its decoder on "the sequence of outputs from the GLIDE text encoder", a transformer that
GLIDE trains jointly with its diffusion model, so the denoising loss itself teaches it which words decide the
picture. A decoder without one reads the frozen CLIP's token states instead; those only learn what the
contrastive loss asks of them, and the tiny Shapes CLIP's barely tell "left" from "right" (cosine 0.99 between
the two tokens' states) or a star from a triangle (0.95): docs/decoder-learning.md.

As in GLIDE, the transformer is bidirectional and its outputs are the attention layers' context tokens. Where
GLIDE lets padding through as learned padding embeddings, here padding is masked out of attention (the same
mask the UNet's attention layers then use), so a caption's states do not depend on the context length.

`CaptionAdapter` is the same transformer beside the CLIP rather than in its place: it also reads the CLIP's token
states and adds its output to them, starting from zero, so it can be grown onto a decoder trained on those states.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace

import torch
from torch import nn

from ..nn.transformer import Transformer
from ..tokenizer import real_token_mask


@dataclass(frozen=True)
class CaptionEncoderConfig:
    vocab_size: int = 768  # the CLIP tokenizer's: the decoder reads the same token ids the CLIP does
    context_length: int = 24
    width: int = 128
    layers: int = 3
    heads: int = 4

    def __post_init__(self):
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"CaptionEncoderConfig.{f.name} must be a positive integer, got {value!r}")
        if self.width % self.heads:
            raise ValueError(f"caption encoder width {self.width} is not divisible by {self.heads} heads")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> CaptionEncoderConfig:
        known = {f.name for f in fields(cls)}
        if set(data) - known:
            raise ValueError(f"unknown CaptionEncoderConfig keys: {sorted(set(data) - known)}")
        return cls(**data)

    def with_(self, **changes) -> CaptionEncoderConfig:
        return replace(self, **changes)


def _check_tokens(tokens: torch.Tensor, cfg: CaptionEncoderConfig, what: str) -> None:
    """Refuse token ids that are not (B, T) integers, run past the context, or lie outside the vocabulary."""
    if tokens.ndim != 2 or tokens.dtype not in (torch.int32, torch.int64):
        raise ValueError(f"tokens must be a (B, T) integer tensor, got {tokens.dtype} {tuple(tokens.shape)}")
    if tokens.shape[1] > cfg.context_length:
        raise ValueError(f"{tokens.shape[1]} tokens exceed the {what}'s context of {cfg.context_length}")
    if len(tokens) and (int(tokens.min()) < 0 or int(tokens.max()) >= cfg.vocab_size):
        raise ValueError(f"token ids must lie in [0, {cfg.vocab_size}), got {int(tokens.min())}.."
                         f"{int(tokens.max())}: the {what} was built for another tokenizer")


class CaptionEncoder(nn.Module):
    """Token ids (B, T) as the CLIP tokenizer writes them ([SOT] ... [EOT], zero-padded) -> states (B, T, W)."""

    def __init__(self, cfg: CaptionEncoderConfig):
        super().__init__()
        self.config = cfg
        self.token_embedding = nn.Embedding(cfg.vocab_size, cfg.width)
        self.positional_embedding = nn.Parameter(0.01 * torch.randn(cfg.context_length, cfg.width))
        self.transformer = Transformer(cfg.width, cfg.layers, cfg.heads)
        self.ln_final = nn.LayerNorm(cfg.width)  # GLIDE's xf_final_ln
        nn.init.normal_(self.token_embedding.weight, std=0.02)

    def forward(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T) token ids -> states (B, T, W) and the (B, T) bool mask of real positions (SOT through EOT)."""
        _check_tokens(tokens, self.config, "caption encoder")
        mask = real_token_mask(tokens)  # (B, T)
        x = self.token_embedding(tokens) + self.positional_embedding[: tokens.shape[1]]  # (B, T, W)
        # every query may attend to every real key (GLIDE's transformer is bidirectional); padding is no key
        x = self.transformer(x, mask=mask[:, None, None, :])  # (B, T, W)
        return self.ln_final(x), mask


class CaptionAdapter(nn.Module):
    """A caption encoder grown onto a decoder that reads the frozen CLIP's token states: a bidirectional transformer
    over the token ids (embedded, with positions) plus the CLIP states (projected), whose output joins those states
    through a zero-initialised projection: states + proj(transformer(...)). At initialisation the decoder reads
    exactly the CLIP's states, so it grows onto a trained decoder without changing what that computes (`--init-from`
    loads the old weights and the adapter starts from zero, as grow.py does for channels), and then the denoising
    loss teaches it what the CLIP's causal states merged: GLIDE's text transformer (§2.2) beside CLIP's."""

    def __init__(self, cfg: CaptionEncoderConfig):
        super().__init__()
        self.config = cfg
        self.token_embedding = nn.Embedding(cfg.vocab_size, cfg.width)
        self.positional_embedding = nn.Parameter(0.01 * torch.randn(cfg.context_length, cfg.width))
        self.state_proj = nn.Linear(cfg.width, cfg.width)  # the CLIP's token states, read alongside the words
        self.transformer = Transformer(cfg.width, cfg.layers, cfg.heads)
        self.ln_final = nn.LayerNorm(cfg.width)
        self.out_proj = nn.Linear(cfg.width, cfg.width)
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.zeros_(self.out_proj.weight)
        nn.init.zeros_(self.out_proj.bias)

    def forward(self, tokens: torch.Tensor, states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, T) token ids, the CLIP's (B, T, W) token states for them and their (B, T) mask -> (B, T, W) states."""
        cfg = self.config
        _check_tokens(tokens, cfg, "caption adapter")
        if tuple(states.shape) != (*tokens.shape, cfg.width) or tuple(mask.shape) != tuple(tokens.shape):
            raise ValueError(f"the CLIP states {tuple(states.shape)} and mask {tuple(mask.shape)} do not match the "
                             f"tokens {tuple(tokens.shape)} (width {cfg.width}): encode the same token ids")
        x = self.token_embedding(tokens) + self.positional_embedding[: tokens.shape[1]]  # (B, T, W)
        x = x + self.state_proj(states.to(x.dtype))
        # bidirectional, padding no key; a fully masked row (an empty caption) would make attention NaN, so every
        # row keeps its first position as a key (its output is masked out of the UNet's attention anyway)
        keys = mask.clone()
        keys[:, 0] = True
        x = self.ln_final(self.transformer(x, mask=keys[:, None, None, :]))  # (B, T, W)
        return states + self.out_proj(x)
