"""An image-text matching head on the pipeline's frozen CLIP: does this caption describe this image?

A dual encoder compares two embeddings made apart, and the pipeline's CLIP makes nearly the same text embedding
for "A to the left of B" and "B to the left of A" (docs/clip.md), although its token states and its image grid
still hold the words and the places. This reads both together: the caption's token states and the image tower's
output states (class token and grid) enter one small transformer with a match token, whose output gives one logit,
so each word can attend to where things are. It is the image-text matching head of ALBEF and BLIP (Li et al. 2021
§3.2; Li et al. 2022 §3.1) on frozen unimodal encoders, trained as they train it, on hard negatives: the world's
captions with one attribute made false (judge/train.py). The pipeline keeps the candidate image with the highest
logit (rerank.py).
"""

from __future__ import annotations

import torch
from torch import nn

from ..clip import CLIP
from ..nn.transformer import Transformer
from ..tokenizer import real_token_mask
from .config import JudgeConfig


class Judge(nn.Module):
    def __init__(self, cfg: JudgeConfig):
        super().__init__()
        self.config = cfg
        self.text_in = nn.Linear(cfg.text_width, cfg.width)
        self.image_in = nn.Linear(cfg.vision_width, cfg.width)
        # where each colour is, exactly: the CLIP's output states blur it (docs/reranking.md)
        self.pixel_in = nn.Linear(3 * cfg.patch ** 2, cfg.width) if cfg.patch else None
        self.kinds = nn.Parameter(0.02 * torch.randn(3, cfg.width))  # the match token, caption states, image states
        self.transformer = Transformer(cfg.width, cfg.layers, cfg.heads)
        self.ln_final = nn.LayerNorm(cfg.width)
        self.head = nn.Linear(cfg.width, 1)

    def forward(self, *, image_states: torch.Tensor, text_states: torch.Tensor, text_mask: torch.Tensor,
                image_index: torch.Tensor | None = None, patches: torch.Tensor | None = None) -> torch.Tensor:
        """Match logits (M,) of M (image, caption) pairs from the CLIP's image tower states (N, L, vision_width) and
        caption token states (M, T, text_width) with their (M, T) bool mask; pair m reads image image_index[m]
        (default: image m, M = N), so an image's states are computed once however many captions it meets. With
        config.patch, `patches` (N, L - 1, 3 * patch ** 2) are the images' pixels under each grid state."""
        m = len(text_states)
        if image_index is None:
            if len(image_states) != m:
                raise ValueError(f"{len(image_states)} images but {m} captions: pass image_index")
            image_index = torch.arange(m, device=text_states.device)
        if (patches is None) != (self.pixel_in is None):
            raise ValueError(f"this judge reads {'pixel patches' if self.pixel_in else 'no pixels'}, got "
                             f"{'none' if patches is None else 'patches'}")
        image = self.image_in(image_states)  # (N, L, W)
        if patches is not None:  # the class state has no patch
            image = image + nn.functional.pad(self.pixel_in(patches), (0, 0, 1, 0))
        text = self.text_in(text_states) + self.kinds[1]  # (M, T, W)
        image = image[image_index] + self.kinds[2]  # (M, L, W)
        x = torch.cat([self.kinds[0].expand(m, 1, -1), text, image], dim=1)  # (M, 1 + T + L, W)
        keep = torch.cat([text_mask.new_ones(m, 1), text_mask, text_mask.new_ones(m, image.shape[1])], dim=1)
        x = self.transformer(x, mask=keep[:, None, None, :])  # padding hidden from every query; (M, 1 + T + L, W)
        return self.head(self.ln_final(x[:, 0])).squeeze(-1)  # (M,)

    def check_clip(self, clip: CLIP) -> None:
        cfg, c = self.config, clip.config
        if (cfg.vision_width, cfg.text_width) != (c.vision_width, c.text_width):
            raise ValueError(f"the judge reads a CLIP of widths {cfg.vision_width} (image) and {cfg.text_width} "
                             f"(text), the CLIP has {c.vision_width} and {c.text_width}")

    def score(self, clip: CLIP, *, images: torch.Tensor, tokens: torch.Tensor,
              image_index: torch.Tensor | None = None) -> torch.Tensor:
        """Match logits (M,) for images (N, 3, S, S) in [-1, 1] at the CLIP's size and caption token ids (M, T) as
        the CLIP's tokenizer writes them, read through the frozen `clip` (no gradient reaches it)."""
        self.check_clip(clip)
        if tokens.ndim != 2:
            raise ValueError(f"tokens must be (M, T), got {tuple(tokens.shape)}")
        width = int(real_token_mask(tokens).sum(dim=1).max())  # the text tower is causal: cutting the padding is exact
        with torch.no_grad():
            states, mask = clip.encode_text_sequence(tokens[:, :width])  # (M, t, text_width), (M, t)
            grid = clip.encode_image_tokens(images)  # (N, 1 + g*g, vision_width)
        patches = None
        if self.config.patch:
            p = self.config.patch
            patches = nn.functional.unfold(images, kernel_size=p, stride=p).transpose(1, 2)  # (N, g*g, 3 p p)
            if patches.shape[1] != grid.shape[1] - 1:
                raise ValueError(f"the judge's {p} px patches make {patches.shape[1]} of {tuple(images.shape[2:])} "
                                 f"images, the CLIP's grid has {grid.shape[1] - 1} states")
        return self(image_states=grid, text_states=states, text_mask=mask, image_index=image_index, patches=patches)
