"""CLIP (Radford et al. 2021): a ViT image encoder and a causal text transformer, trained contrastively.

Module and parameter names follow OpenAI's model.py (visual.conv1, visual.class_embedding, ...,
token_embedding, text_projection, logit_scale), so OpenAI and open_clip state dicts load with
strict=True (clip/weights.py). Images enter in unclip's range [-1, 1] and are normalised inside.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from ..data.images import to_tensor
from ..nn.transformer import Transformer
from ..tokenizer import real_token_mask
from .config import CLIPConfig


INITIAL_LOGIT_SCALE = 1 / 0.07  # CLIP §2.5: the learned temperature starts at 0.07


def sincos_2d(*, grid: int, width: int) -> torch.Tensor:
    """(grid * grid, width) fixed 2-D position table, rows in the patches' raster order: the first half of the
    channels encode the row, the second half the column, each as sin and cos at width / 4 frequencies
    1 / 10000^(k / (width / 4)) (Vaswani et al. 2017 §3.5, in 2-D as MAE does)."""
    if width % 4:
        raise ValueError(f"a 2-D sine-cosine table needs a width divisible by 4, got {width}")
    quarter = width // 4
    omega = 1.0 / 10000 ** (torch.arange(quarter, dtype=torch.float64) / quarter)  # (W/4,)
    pos = torch.arange(grid, dtype=torch.float64)
    angles = pos[:, None] * omega[None]  # (g, W/4)
    axis = torch.cat([angles.sin(), angles.cos()], dim=1)  # (g, W/2)
    rows = axis[:, None, :].expand(grid, grid, -1)  # (g, g, W/2): depends on the row only
    cols = axis[None, :, :].expand(grid, grid, -1)  # (g, g, W/2): depends on the column only
    return torch.cat([rows, cols], dim=-1).reshape(grid * grid, width).float()


class ConvStem(nn.Module):
    """Image (B, 3, S, S) -> token grid (B, W, S/p, S/p) through 3x3 convolutions with batch norm and ReLU
    (Xiao et al. 2021 §3): two at full resolution with W/4 channels, then one stride-2 convolution per halving
    (channels doubling up to W), each but the last followed by a stride-1 one, and a final 1x1 projection.
    For S=32, p=4, W=128: 3->32, 32->32, 32->64 /2, 64->64, 64->128 /2, 1x1."""

    def __init__(self, *, width: int, patch_size: int):
        super().__init__()
        channels = width // 4
        layers = self._block(3, channels, stride=1) + self._block(channels, channels, stride=1)
        halvings = patch_size.bit_length() - 1
        for k in range(halvings):
            out = width if k == halvings - 1 else min(width, channels * 2)
            layers += self._block(channels, out, stride=2)
            if k < halvings - 1:
                layers += self._block(out, out, stride=1)
            channels = out
        self.layers = nn.Sequential(*layers, nn.Conv2d(channels, width, kernel_size=1))

    @staticmethod
    def _block(cin: int, cout: int, *, stride: int) -> list[nn.Module]:
        return [nn.Conv2d(cin, cout, kernel_size=3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class VisionTransformer(nn.Module):
    def __init__(self, cfg: CLIPConfig):
        super().__init__()
        width, grid = cfg.vision_width, cfg.image_size // cfg.patch_size
        scale = width ** -0.5
        if cfg.vision_stem == "conv":
            self.stem = ConvStem(width=width, patch_size=cfg.patch_size)
        else:  # OpenAI's name for the patch projection, so their weights load
            self.conv1 = nn.Conv2d(3, width, kernel_size=cfg.patch_size, stride=cfg.patch_size, bias=False)
        self.class_embedding = nn.Parameter(scale * torch.randn(width))
        self.positional_embedding = nn.Parameter(scale * torch.randn(grid * grid + 1, width))
        if cfg.vision_position_init == "sincos":
            with torch.no_grad():
                self.positional_embedding[0].zero_()  # the class token has no place on the grid
                self.positional_embedding[1:] = sincos_2d(grid=grid, width=width)
        self.ln_pre = nn.LayerNorm(width)
        self.transformer = Transformer(width, cfg.vision_layers, cfg.vision_heads, activation=cfg.activation)
        self.ln_post = nn.LayerNorm(width)
        self.proj = nn.Parameter(scale * torch.randn(width, cfg.embed_dim))

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised images (B, 3, S, S) -> the transformer's output states (B, 1 + g*g, W): the class token, then
        the grid in raster order (what the judge reads, unclip/judge)."""
        # the conv stem runs channels-last: 1.25x faster forward and backward on this CPU (oneDNN), same result
        x = self.stem(x.contiguous(memory_format=torch.channels_last)) if hasattr(self, "stem") \
            else self.conv1(x)  # (B, W, g, g)
        x = x.flatten(2).transpose(1, 2)  # (B, g*g, W)
        cls = self.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)  # (B, 1, W)
        x = torch.cat([cls, x], dim=1) + self.positional_embedding.to(x.dtype)  # (B, 1 + g*g, W)
        return self.transformer(self.ln_pre(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ln_post(self.tokens(x)[:, 0]) @ self.proj  # CLIP §2.4: the class token, projected; (B, E)


class CLIP(nn.Module):
    def __init__(self, cfg: CLIPConfig):
        super().__init__()
        self.config = cfg
        self.visual = VisionTransformer(cfg)
        self.token_embedding = nn.Embedding(cfg.vocab_size, cfg.text_width)
        self.positional_embedding = nn.Parameter(0.01 * torch.randn(cfg.context_length, cfg.text_width))
        self.transformer = Transformer(cfg.text_width, cfg.text_layers, cfg.text_heads, activation=cfg.activation)
        self.ln_final = nn.LayerNorm(cfg.text_width)
        self.text_projection = nn.Parameter(cfg.text_width ** -0.5 * torch.randn(cfg.text_width, cfg.embed_dim))
        self.logit_scale = nn.Parameter(torch.tensor(math.log(INITIAL_LOGIT_SCALE)))  # CLIP §2.5
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        self.register_buffer("image_mean", torch.tensor(cfg.image_mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("image_std", torch.tensor(cfg.image_std).view(1, 3, 1, 1), persistent=False)
        self.tokenizer = None  # set by the loader: encode_text(list[str]) needs it

    # ----- tensor-level -------------------------------------------------------------------------------------
    def _normalised(self, pixels: torch.Tensor) -> torch.Tensor:
        size = self.config.image_size
        if pixels.shape[-2:] != (size, size):
            raise ValueError(f"CLIP expects {size}x{size} images, got {tuple(pixels.shape[-2:])}")
        return (((pixels + 1) / 2 - self.image_mean) / self.image_std).to(self.visual.proj.dtype)

    def encode_image_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) images in [-1, 1] -> (B, E) image features (not normalised)."""
        return self.visual(self._normalised(pixels))

    def encode_image_tokens(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) images in [-1, 1] -> the image tower's output states (B, 1 + g*g, W) (VisionTransformer.tokens),
        before the class token is read out."""
        return self.visual.tokens(self._normalised(pixels))

    def encode_text_sequence(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T) token ids -> the text tower's per-token states (B, T, W) after ln_final, and a (B, T) bool
        mask of the real positions (start token to end-of-text; padding after it is False).

        These are the "encoded text" tokens the diffusion prior reads (unCLIP §2.2)."""
        x = self.token_embedding(tokens) + self.positional_embedding[: tokens.shape[1]]  # (B, T, W)
        x = self.ln_final(self.transformer(x, causal=True))
        return x, real_token_mask(tokens)

    def encode_text_tokens(self, tokens: torch.Tensor, *, length_buckets: int = 4) -> torch.Tensor:
        """(B, context) token ids -> (B, E) text features (not normalised), read at the end-of-text token.

        The tower is causal, so the padding after EOT never reaches the EOT state: captions are run in up to
        `length_buckets` groups of similar length (at least 32 captions each), each cut to its own longest. The
        features are those of the full-width pass to float rounding; on Shapes captions (13 of 24 positions
        used on average) the text tower does about 40% less work (docs/clip.md)."""
        if len(tokens) == 0:
            return self.text_projection.new_zeros(0, self.config.embed_dim)
        lengths = real_token_mask(tokens).sum(dim=1)  # (B,) SOT through EOT
        order = lengths.argsort()
        parts = []
        for rows in order.tensor_split(max(1, min(length_buckets, len(tokens) // 32))):  # each (b,)
            width = int(lengths[rows].max())
            x, _ = self.encode_text_sequence(tokens[rows, :width])  # (b, width, W)
            parts.append(x[torch.arange(len(rows), device=x.device), lengths[rows] - 1])  # (b, W) at EOT
        return torch.cat(parts)[order.argsort()] @ self.text_projection  # back to the input order; (B, E)

    @property
    def scale(self) -> torch.Tensor:
        """The logit scale exp(t) that multiplies cosine similarities, clamped at 100 (CLIP §2.5)."""
        return self.logit_scale.exp().clamp(max=100)

    def forward(self, pixels: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Normalised image and text embeddings (B, E) and the logit scale (`scale`)."""
        image = F.normalize(self.encode_image_pixels(pixels), dim=-1)
        text = F.normalize(self.encode_text_tokens(tokens), dim=-1)
        return image, text, self.scale

    # ----- public API ---------------------------------------------------------------------------------------
    def preprocess(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """PIL images -> (B, 3, S, S) in [-1, 1]: shorter side resized and centre-cropped to image_size."""
        return torch.stack([to_tensor(im.convert("RGB"), self.config.image_size) for im in images])

    @torch.no_grad()
    def encode_image(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """(B, E) L2-normalised image embeddings z_i of PIL images."""
        device = self.logit_scale.device
        return F.normalize(self.encode_image_pixels(self.preprocess(images).to(device)), dim=-1).float()

    @torch.no_grad()
    def encode_text(self, captions: Sequence[str]) -> torch.Tensor:
        """(B, E) L2-normalised text embeddings z_t of captions."""
        if self.tokenizer is None:
            raise ValueError("this CLIP has no tokenizer attached; set model.tokenizer or load it with one")
        tokens = self.tokenizer(list(captions)).to(self.logit_scale.device)
        return F.normalize(self.encode_text_tokens(tokens), dim=-1).float()


def contrastive_loss(image: torch.Tensor, text: torch.Tensor, scale: torch.Tensor,
                     extra_text: torch.Tensor | None = None) -> torch.Tensor:
    """CLIP's symmetric cross-entropy over the B x B similarity matrix (Radford et al. 2021, Figure 3).

    `extra_text` (M, E) adds hard-negative captions to the image->text direction only (NegCLIP,
    Yuksekgonul et al. 2023): each image must also beat these captions, which differ from true ones in
    one attribute.
    """
    logits = scale * image @ text.t()  # (B, B)
    labels = torch.arange(len(image), device=image.device)
    image_to_text = logits if extra_text is None else torch.cat([logits, scale * image @ extra_text.t()], dim=1)
    return (F.cross_entropy(image_to_text, labels) + F.cross_entropy(logits.t(), labels)) / 2
