"""Growing a trained UNet wider without changing what it computes, so a small decoder's training carries over to a
bigger one (function-preserving growth, as Net2Net, Chen et al. 2016, does by copying units; here the new units'
outgoing weights start at zero instead, so no copy has to be told apart from its original).

Each level of the wider UNet holds the old level's channels first and its new ones after. The old weights go where
their channels went; a weight from a new channel into an old one is zero, so the old channels compute exactly what
they did; the new channels keep the wider UNet's own initial weights, read everything, and reach the output only as
training moves the zeros. GroupNorm groups must not straddle old and new channels, and attention heads must not
either: `grow_unet` checks both and refuses a growth that breaks them.
"""

from __future__ import annotations

import torch
from torch import nn

from .unet import AttentionBlock, Block, ResBlock, UNet

# A channel axis: (old, new) counts per segment, in order. A level of width 48 grown to 64 is ((48, 16),); a decoder
# block's input, the level's state concatenated with a skip, is two segments.
Layout = tuple[tuple[int, int], ...]
# The UNetConfig fields in which a grown UNet may differ from the one it grows from.
# norm_group_size may be set where the old UNet had ADM's rule: _norm refuses any change of a group's size.
GROWABLE = ("image_mlp_width", "channel_mult", "self_condition", "norm_group_size")


def _positions(layout: Layout) -> tuple[torch.Tensor, torch.Tensor]:
    """Where the old channels sit on the grown axis (in the old order), and where the new ones do."""
    old_at, new_at, start = [], [], 0
    for old, new in layout:
        old_at.extend(range(start, start + old))
        new_at.extend(range(start + old, start + old + new))
        start += old + new
    return torch.tensor(old_at, dtype=torch.long), torch.tensor(new_at, dtype=torch.long)


def _fixed(width: int) -> Layout:
    return ((width, 0),)


@torch.no_grad()
def _put(new: torch.Tensor, old: torch.Tensor, rows: Layout, cols: Layout | None = None) -> None:
    """Write `old` into `new` at the old channels' places; zero what old rows read from new columns."""
    r, _ = _positions(rows)
    if sum(o for o, _ in rows) != old.shape[0] or sum(o + n for o, n in rows) != new.shape[0]:
        raise ValueError(f"cannot grow a tensor of {tuple(old.shape)} into {tuple(new.shape)} along {rows}")
    if cols is None:
        new[r] = old
        return
    c, fresh = _positions(cols)
    if sum(o for o, _ in cols) != old.shape[1] or sum(o + n for o, n in cols) != new.shape[1]:
        raise ValueError(f"cannot grow a tensor of {tuple(old.shape)} into {tuple(new.shape)} across {cols}")
    block = new[r]  # (old rows, new in, ...)
    block[:, c] = old
    block[:, fresh] = 0  # old channels read nothing from new ones
    new[r] = block


def _linear(new: nn.Linear | nn.Conv2d, old: nn.Linear | nn.Conv2d, rows: Layout, cols: Layout) -> None:
    _put(new.weight, old.weight, rows, cols)
    if old.bias is not None:
        _put(new.bias, old.bias, rows)


def _norm(new: nn.GroupNorm, old: nn.GroupNorm, layout: Layout) -> None:
    size = old.num_channels // old.num_groups
    if new.num_channels // new.num_groups != size or any(o % size or n % size for o, n in layout):
        raise ValueError(f"cannot grow GroupNorm({old.num_groups}, {old.num_channels}) into GroupNorm("
                         f"{new.num_groups}, {new.num_channels}) along {layout}: a group would mix old and new "
                         f"channels (groups of {size} vs {new.num_channels // new.num_groups})")
    _put(new.weight, old.weight, layout)
    _put(new.bias, old.bias, layout)


def _resblock(new: ResBlock, old: ResBlock, lin: Layout, lout: Layout) -> None:
    _norm(new.in_norm, old.in_norm, lin)
    _linear(new.in_conv, old.in_conv, lout, lin)
    _linear(new.emb, old.emb, lout * 2, _fixed(old.emb.in_features))  # (scale, shift) chunks
    _norm(new.out_norm, old.out_norm, lout)
    _linear(new.out_conv, old.out_conv, lout, lout)
    if isinstance(old.skip, nn.Identity) and isinstance(new.skip, nn.Identity):
        if lin != lout:
            raise ValueError(f"cannot grow an identity skip from {lin} to {lout}")
    elif isinstance(old.skip, nn.Identity):  # the grown block's 1x1 skip starts as the old identity
        c = old.in_norm.num_channels
        _put(new.skip.weight, torch.eye(c).reshape(c, c, 1, 1), lout, lin)
        _put(new.skip.bias, torch.zeros(c), lout)
    elif isinstance(new.skip, nn.Identity):
        raise ValueError("cannot grow a 1x1 skip into an identity")
    else:
        _linear(new.skip, old.skip, lout, lin)


def _attention(new: AttentionBlock, old: AttentionBlock, layout: Layout) -> None:
    d = old.norm.num_channels // old.heads
    if new.norm.num_channels // new.heads != d or any(o % d or n % d for o, n in layout):
        raise ValueError(f"cannot grow attention of {old.heads} heads of {d} along {layout}: a head would mix "
                         "old and new channels")
    _norm(new.norm, old.norm, layout)
    _linear(new.qkv, old.qkv, layout * 3, layout)  # (q, k, v) chunks, each split into heads
    if old.context_kv is not None:
        _linear(new.context_kv, old.context_kv, layout * 2, _fixed(old.context_kv.in_features))  # (k, v)
    _linear(new.proj, old.proj, layout, layout)


def _block(new: Block, old: Block, lin: Layout, lout: Layout) -> None:
    _resblock(new.res, old.res, lin, lout)
    if (old.attn is None) != (new.attn is None):
        raise ValueError("cannot grow: the two UNets attend at different places")
    if old.attn is not None:
        _attention(new.attn, old.attn, lout)


def _check_growable(old: UNet, new: UNet) -> None:
    a, b = old.config.to_dict(), new.config.to_dict()
    same = {k: v for k, v in a.items() if k not in GROWABLE}
    differ = sorted(k for k, v in same.items() if b.get(k) != v)
    ma, mb = old.config.channel_mult, new.config.channel_mult
    if differ or len(ma) != len(mb) or any(x > y for x, y in zip(ma, mb)):
        raise ValueError(f"cannot grow a UNet with channel_mult {ma} into one with {mb}"
                         + (f" (they differ in {differ})" if differ else "")
                         + ": only channel multipliers may grow (level by level), and a z_i MLP or "
                         "self-conditioning be added")
    wa, wb = old.config.image_mlp_width, new.config.image_mlp_width
    if wa is not None and wa != wb:
        raise ValueError(f"cannot grow a UNet with image_mlp_width {wa} into one with {wb}: a z_i MLP can be added, "
                         "not resized or removed")
    if old.config.self_condition and not new.config.self_condition:
        raise ValueError("cannot grow a self-conditioned UNet into one without self_condition: its input can be "
                         "widened, not narrowed")


@torch.no_grad()
def grow_unet(new: UNet, old: UNet) -> UNet:
    """Copy `old`'s weights into `new`, a UNet of the same config but for the GROWABLE fields (wider levels, an added
    z_i MLP, an added self-conditioning input), so that `new` computes what `old` does. `new` keeps its own initial
    weights for what is new. Returns `new`."""
    _check_growable(old, new)
    mc, cfg_old, cfg_new = old.config.model_channels, old.config, new.config
    levels = [((mc * o, mc * (n - o)),) for o, n in zip(cfg_old.channel_mult, cfg_new.channel_mult)]
    new.time_embed.load_state_dict(old.time_embed.state_dict())
    missing, unexpected = new.conditioning.load_state_dict(old.conditioning.state_dict(), strict=False)
    if unexpected or any(".image_mlp." not in f".{k}" for k in missing):
        raise ValueError(f"cannot grow the conditioning: missing {missing}, unexpected {unexpected}")
    ch = _fixed(mc)  # the input convolution's width is model_channels, whatever the first level's multiplier
    # the input's channels: x (and low_res) first, then a self-conditioned UNet's x0 estimate, read by zero weights
    _linear(new.input_conv, old.input_conv, ch,
            ((cfg_old.input_channels, cfg_new.input_channels - cfg_old.input_channels),))
    skips = [ch]
    for level, (blocks_new, blocks_old) in enumerate(zip(new.encoder, old.encoder)):
        for bn, bo in zip(blocks_new, blocks_old):
            _block(bn, bo, ch, levels[level])
            ch = levels[level]
            skips.append(ch)
        if level < len(old.downs):
            _resample(new.downs[level], old.downs[level], ch)
            skips.append(ch)
    _block(new.middle_in, old.middle_in, ch, ch)
    _resblock(new.middle_out, old.middle_out, ch, ch)
    for i, (blocks_new, blocks_old) in enumerate(zip(new.decoder, old.decoder)):
        level = len(levels) - 1 - i
        for bn, bo in zip(blocks_new, blocks_old):
            _block(bn, bo, ch + skips.pop(), levels[level])
            ch = levels[level]
        if i < len(old.ups):
            _resample(new.ups[i], old.ups[i], ch)
    _norm(new.out_norm, old.out_norm, ch)
    _linear(new.out_conv, old.out_conv, _fixed(old.out_conv.out_channels), ch)
    return new


def _resample(new: nn.Module, old: nn.Module, layout: Layout) -> None:
    if isinstance(old, ResBlock) and isinstance(new, ResBlock):
        _resblock(new, old, layout, layout)
    elif type(old) is type(new):  # Downsample / Upsample: one 3x3 convolution
        _linear(new.conv, old.conv, layout, layout)
    else:
        raise ValueError(f"cannot grow a {type(old).__name__} into a {type(new).__name__}")
