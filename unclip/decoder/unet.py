"""The ADM UNet (Dhariwal & Nichol 2021, "Diffusion Models Beat GANs" §3) as GLIDE uses it (Nichol et al. 2021 §2.2),
with unCLIP's conditioning (Ramesh et al. 2022 §2.1; see conditioning.py). Used by the decoder and the upsamplers.

Residual blocks: GroupNorm + SiLU + 3x3 conv, the timestep embedding applied by scale-shift norm
(ADM's AdaGN: h = norm(h) * (1 + scale) + shift), resampling optionally inside the block (BigGAN-style),
zero-initialised last convolutions so every block starts as the identity. Self-attention at chosen
resolutions, where GLIDE's encoder_kv appends the projected context tokens to the keys and values.
The network sees timesteps as numbers only; schedules live in diffusion/. Without attention it is
fully convolutional: any side that is a multiple of 2 ** (levels - 1) runs, so an upsampler trained on
crops samples at full size (unCLIP §2.1).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..nn.embedding import timestep_embedding
from .conditioning import Conditioning, Context
from .config import UNetConfig


def group_norm(channels: int, group_size: int | None = None) -> nn.GroupNorm:
    """GroupNorm with 32 groups (ADM), fewer when channels are few: ADM's narrowest layers (128 channels) have
    4 channels a group, so narrower layers take the largest divisor of `channels` up to channels / 4. With
    `group_size` (UNetConfig.norm_group_size), groups of exactly that many channels instead."""
    if group_size is not None:
        if channels % group_size:
            raise ValueError(f"{channels} channels do not split into GroupNorm groups of {group_size}")
        return nn.GroupNorm(channels // group_size, channels)
    groups = next(g for g in range(min(32, max(1, channels // 4)), 0, -1) if channels % g == 0)
    return nn.GroupNorm(groups, channels)


def conv3x3(c_in: int, c_out: int, *, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1)


def zeroed(module: nn.Module) -> nn.Module:
    """ADM: the last layer of each residual branch and of the network starts at zero."""
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


def resample(x: torch.Tensor, direction: str | None) -> torch.Tensor:
    if direction == "down":
        return F.avg_pool2d(x, 2)
    if direction == "up":
        return F.interpolate(x, scale_factor=2.0, mode="nearest")
    return x


class ResBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, *, emb_dim: int, dropout: float = 0.0, direction: str | None = None,
                 group_size: int | None = None):
        super().__init__()
        self.direction = direction  # None, "down" or "up": resample inside the block (ADM's resblock_updown)
        self.in_norm = group_norm(c_in, group_size)
        self.in_conv = conv3x3(c_in, c_out)
        self.emb = nn.Linear(emb_dim, 2 * c_out)  # scale and shift
        self.out_norm = group_norm(c_out, group_size)
        self.dropout = nn.Dropout(dropout)
        self.out_conv = zeroed(conv3x3(c_out, c_out))
        self.skip = nn.Identity() if c_in == c_out else nn.Conv2d(c_in, c_out, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = F.silu(self.in_norm(x))
        h = self.in_conv(resample(h, self.direction))
        x = resample(x, self.direction)
        scale, shift = self.emb(F.silu(emb))[:, :, None, None].chunk(2, dim=1)  # (B, C, 1, 1) each
        h = self.out_norm(h) * (1 + scale) + shift  # ADM §3: adaptive group normalisation (scale-shift norm)
        h = self.out_conv(self.dropout(F.silu(h)))
        return self.skip(x) + h


class Downsample(nn.Module):
    """A strided 3x3 convolution (ADM with resblock_updown off)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = conv3x3(channels, channels, stride=2)

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """Nearest-neighbour doubling then a 3x3 convolution (ADM with resblock_updown off)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = conv3x3(channels, channels)

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        return self.conv(resample(x, "up"))


class AttentionBlock(nn.Module):
    """Multi-head self-attention over the H*W positions; GLIDE's encoder_kv: the context tokens, projected to
    keys and values, are concatenated in front of the image's own (padding hidden by a key mask)."""

    def __init__(self, channels: int, *, head_channels: int, context_width: int | None,
                 group_size: int | None = None):
        super().__init__()
        self.heads = channels // head_channels
        self.norm = group_norm(channels, group_size)
        self.qkv = nn.Linear(channels, 3 * channels)
        self.context_kv = nn.Linear(context_width, 2 * channels) if context_width is not None else None
        self.proj = zeroed(nn.Linear(channels, channels))

    def forward(self, x: torch.Tensor, context: Context) -> torch.Tensor:
        b, c, h, w = x.shape
        n, d = h * w, c // self.heads
        tokens = self.norm(x).flatten(2).transpose(1, 2)  # (B, HW, C): a view when x is channels_last
        q, k, v = self.qkv(tokens).reshape(b, n, 3, self.heads, d).permute(2, 0, 3, 1, 4)  # 3 x (B, heads, HW, d)
        mask = None
        if self.context_kv is not None and context.tokens is not None:
            kv = self.context_kv(context.tokens)  # (B, L, 2C)
            ek, ev = kv.reshape(b, kv.shape[1], 2, self.heads, d).permute(2, 0, 3, 1, 4)  # 2 x (B, heads, L, d)
            k, v = torch.cat([ek, k], dim=2), torch.cat([ev, v], dim=2)  # (B, heads, L + HW, d)
            if context.mask is not None:
                mask = torch.cat([context.mask, context.mask.new_ones(b, n)], dim=1)[:, None, None]  # (B,1,1,L+HW)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (B, heads, HW, d)
        out = self.proj(out.transpose(1, 2).reshape(b, n, c))  # (B, HW, C)
        return x + out.transpose(1, 2).reshape(b, c, h, w)  # (B, C, H, W), channels_last strides


class Block(nn.Module):
    """One UNet step: a residual block, then self-attention where the resolution asks for it."""

    def __init__(self, c_in: int, c_out: int, *, cfg: UNetConfig, attention: bool):
        super().__init__()
        self.res = ResBlock(c_in, c_out, emb_dim=cfg.time_embed_dim, dropout=cfg.dropout,
                            group_size=cfg.norm_group_size)
        context = cfg.context_width if cfg.conditioned else None
        self.attn = AttentionBlock(c_out, head_channels=cfg.head_channels, context_width=context,
                                   group_size=cfg.norm_group_size) if attention else None

    def forward(self, x: torch.Tensor, emb: torch.Tensor, context: Context) -> torch.Tensor:
        x = self.res(x, emb)
        return self.attn(x, context) if self.attn is not None else x


class UNet(nn.Module):
    def __init__(self, cfg: UNetConfig):
        super().__init__()
        self.config = cfg
        mc, emb_dim, levels = cfg.model_channels, cfg.time_embed_dim, len(cfg.channel_mult)
        self.time_embed = nn.Sequential(nn.Linear(mc, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.conditioning = Conditioning(cfg)
        self.input_conv = conv3x3(cfg.input_channels, mc)

        def resampler(ch: int, direction: str) -> nn.Module:
            if cfg.resblock_updown:
                return ResBlock(ch, ch, emb_dim=emb_dim, dropout=cfg.dropout, direction=direction,
                                group_size=cfg.norm_group_size)
            return Downsample(ch) if direction == "down" else Upsample(ch)

        ch, skips = mc, [mc]
        self.encoder, self.downs = nn.ModuleList(), nn.ModuleList()
        for level, mult in enumerate(cfg.channel_mult):
            attention = cfg.resolutions[level] in cfg.attention_resolutions
            blocks = nn.ModuleList()
            for _ in range(cfg.num_res_blocks):
                blocks.append(Block(ch, mc * mult, cfg=cfg, attention=attention))
                ch = mc * mult
                skips.append(ch)
            self.encoder.append(blocks)
            if level < levels - 1:
                self.downs.append(resampler(ch, "down"))
                skips.append(ch)

        self.middle_in = Block(ch, ch, cfg=cfg, attention=cfg.resolutions[-1] in cfg.attention_resolutions)
        self.middle_out = ResBlock(ch, ch, emb_dim=emb_dim, dropout=cfg.dropout, group_size=cfg.norm_group_size)

        self.decoder, self.ups = nn.ModuleList(), nn.ModuleList()
        for level in reversed(range(levels)):
            attention = cfg.resolutions[level] in cfg.attention_resolutions
            blocks = nn.ModuleList()
            for _ in range(cfg.num_res_blocks + 1):
                blocks.append(Block(ch + skips.pop(), mc * cfg.channel_mult[level], cfg=cfg, attention=attention))
                ch = mc * cfg.channel_mult[level]
            self.decoder.append(blocks)
            if level > 0:
                self.ups.append(resampler(ch, "up"))
        self.out_norm = group_norm(ch, cfg.norm_group_size)
        self.out_conv = zeroed(conv3x3(ch, cfg.output_channels))
        if cfg.channels_last:
            self.to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor, t: torch.Tensor, *, image_embedding: torch.Tensor | None = None,
                text_states: torch.Tensor | None = None, text_mask: torch.Tensor | None = None,
                low_res: torch.Tensor | None = None, keep_image: torch.Tensor | None = None,
                keep_text: torch.Tensor | None = None, self_cond: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, in_channels, H, W) noised images; t (B,) timesteps; image_embedding (B, clip_dim) z_i;
        text_states (B, T, text_width) and text_mask (B, T) bool; low_res (B, low_res_channels, H, W), already
        upsampled to x's size; keep_image / keep_text (B,) bool, False where that conditioning is replaced by
        its null embedding; self_cond (B, in_channels, H, W) the previous x0 estimate of a self-conditioned UNet (None:
        zeros, "no estimate yet"). Returns (B, out_channels * (2 if learned_variance else 1), H, W)."""
        self._check_inputs(x, t, low_res, self_cond)
        if low_res is not None:
            x = torch.cat([x, low_res.to(x.dtype)], dim=1)  # (B, in + low_res channels, H, W)
        if self.config.self_condition:  # Analog Bits Alg. 1: concatenate the estimate, zeros the first time
            x = torch.cat([x, torch.zeros_like(x[:, :self.config.in_channels]) if self_cond is None
                           else self_cond.to(x.dtype)], dim=1)  # (B, input_channels, H, W)
        if self.config.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        emb = self.time_embed(timestep_embedding(t, self.config.model_channels).to(x.dtype))  # (B, 4 mc)
        context = self.conditioning(len(x), image_embedding=image_embedding, text_states=text_states,
                                    text_mask=text_mask, keep_image=keep_image, keep_text=keep_text)
        if context.time is not None:
            emb = emb + context.time  # unCLIP §2.1: z_i added to the timestep embedding

        h = self.input_conv(x)
        skips = [h]
        for i, blocks in enumerate(self.encoder):
            for block in blocks:
                h = block(h, emb, context)
                skips.append(h)
            if i < len(self.downs):
                h = self.downs[i](h, emb)
                skips.append(h)
        h = self.middle_out(self.middle_in(h, emb, context), emb)
        for i, blocks in enumerate(self.decoder):
            for block in blocks:
                h = block(torch.cat([h, skips.pop()], dim=1), emb, context)
            if i < len(self.ups):
                h = self.ups[i](h, emb)
        return self.out_conv(F.silu(self.out_norm(h)))

    def _check_inputs(self, x: torch.Tensor, t: torch.Tensor, low_res: torch.Tensor | None,
                      self_cond: torch.Tensor | None) -> None:
        cfg = self.config
        if x.ndim != 4 or x.shape[1] != cfg.in_channels:
            raise ValueError(f"x must be (B, {cfg.in_channels}, H, W), got {tuple(x.shape)}")
        b, _, h, w = x.shape
        if h % cfg.divisor or w % cfg.divisor:
            raise ValueError(f"image side {h}x{w} is not a multiple of {cfg.divisor} (2 ** (levels - 1))")
        if t.shape != (b,):
            raise ValueError(f"t must have shape ({b},), got {tuple(t.shape)}")
        if cfg.low_res_channels and low_res is None:
            raise ValueError(f"low_res is required: this UNet was built with low_res_channels={cfg.low_res_channels}")
        if low_res is not None and low_res.shape != (b, cfg.low_res_channels, h, w):
            raise ValueError(f"low_res must be (B, {cfg.low_res_channels}, H, W) = {(b, cfg.low_res_channels, h, w)} "
                             f"(upsampled to x's size), got {tuple(low_res.shape)}")
        if self_cond is not None and not cfg.self_condition:
            raise ValueError("self_cond given to a UNet built without self_condition")
        if self_cond is not None and self_cond.shape != x.shape:
            raise ValueError(f"self_cond must have x's shape {tuple(x.shape)}, got {tuple(self_cond.shape)}")
