"""The unCLIP decoder (Ramesh et al. 2022 §2.1): a diffusion model of images conditioned on z_i and the caption.

Training drops z_i 10% and the caption 50% of the time (independently, from the caller's generator) so
that one network serves as both the conditional and the unconditional model of classifier-free guidance.
Sampling guides with both dropped in the unconditional branch; `denoiser` exposes the guided model_fn so
DDIM inversion (samplers.ddim_invert, unCLIP §3) runs on exactly the function the sampler used.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from ..diffusion import GaussianDiffusion, ModelFn, autoguidance, classifier_free_guidance, dropout_mask
from ..samplers import SAMPLERS
from .augment import noised_embedding
from .caption_encoder import CaptionAdapter, CaptionEncoder
from .config import DecoderConfig
from .unet import UNet
from .weighting import foreground_weights


def run_sampler(model_fn: ModelFn, diffusion: GaussianDiffusion, shape: tuple[int, ...], *, sampler: str,
                x_T: torch.Tensor | None, steps, eta: float, threshold: str | None,
                generator: torch.Generator | Sequence[torch.Generator] | None, device, dtype) -> torch.Tensor:
    """Draw images of `shape` with the named sampler ("ddim", "ddpm" or "dpm++"), clamped to [-1, 1]."""
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}: expected one of {', '.join(SAMPLERS)}")
    kwargs = dict(steps=steps, generator=generator, threshold=threshold, device=device, dtype=dtype)
    if sampler == "ddim":
        kwargs["eta"] = eta
    elif eta:
        raise ValueError(f"eta={eta} applies to the 'ddim' sampler only, not {sampler!r}")
    if x_T is not None and tuple(x_T.shape) != tuple(shape):
        raise ValueError(f"x_T has shape {tuple(x_T.shape)}, expected {tuple(shape)}")
    x = SAMPLERS[sampler](model_fn, diffusion, x_T if x_T is not None else shape, **kwargs)
    return x.clamp(-1, 1)


def guidance_interval_fractions(interval) -> tuple[float, float]:
    """A guidance interval (lo, hi), fractions of t / (T - 1) with 0 <= lo <= hi <= 1, as a tuple of floats (JSON
    gives a list); anything else is a ValueError naming it."""
    try:
        fractions = tuple(float(v) for v in interval)
    except (TypeError, ValueError):
        fractions = ()
    if len(fractions) != 2 or not 0 <= fractions[0] <= fractions[1] <= 1:
        raise ValueError(f"guidance_interval must be (lo, hi) with 0 <= lo <= hi <= 1, got {interval!r}")
    return fractions


class Decoder(nn.Module):
    """The UNet plus its diffusion; `loss` for training, `sample` for z_i (and caption) -> image."""

    def __init__(self, cfg: DecoderConfig):
        super().__init__()
        self.config = cfg
        self.net = UNet(cfg.unet)
        self.diffusion = GaussianDiffusion(cfg.diffusion)
        self.caption_encoder = None if cfg.caption_encoder is None else CaptionEncoder(cfg.caption_encoder)
        self.caption_adapter = None if cfg.caption_adapter is None else CaptionAdapter(cfg.caption_adapter)

    def caption_inputs(self, tokens: torch.Tensor, *, clip) -> dict[str, torch.Tensor]:
        """What this decoder reads for captions given as CLIP token ids (B, T): the ids themselves when it has its
        own caption encoder (GLIDE §2.2), else the frozen CLIP's token states and mask, and the ids as well for a
        caption adapter; nothing without a caption input. Spread into loss / denoiser / sample:
        `decoder.sample(image_embedding=z_i, **inputs)`."""
        if self.config.unet.text_width is None:
            return {}
        if self.caption_encoder is not None:
            return {"tokens": tokens}
        with torch.no_grad():
            states, mask = clip.encode_text_sequence(tokens)
        return {"text_states": states, "text_mask": mask} | ({} if self.caption_adapter is None else {"tokens": tokens})

    def _caption(self, text_states: torch.Tensor | None, text_mask: torch.Tensor | None,
                 tokens: torch.Tensor | None) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """The token states (B, T, W) and mask (B, T) the UNet reads: the caption encoder's outputs for `tokens`,
        or the CLIP states given, whichever kind this decoder takes (with a caption adapter: those states with the
        adapter's output for `tokens` added)."""
        if self.caption_adapter is not None:
            if text_states is None and tokens is None:
                return None, text_mask
            if text_states is None or text_mask is None or tokens is None:
                raise ValueError("this decoder reads the CLIP's token states through a caption adapter: pass "
                                 "text_states, text_mask and the tokens they encode (Decoder.caption_inputs)")
            return self.caption_adapter(tokens, text_states, text_mask), text_mask
        if self.caption_encoder is None:
            if tokens is not None:
                raise ValueError("this decoder reads the CLIP's token states (text_states), not token ids: it has no "
                                 "caption encoder of its own")
            return text_states, text_mask
        if text_states is not None or text_mask is not None:
            raise ValueError("this decoder encodes captions with its own caption encoder: pass tokens, not "
                             "text_states / text_mask")
        return (None, None) if tokens is None else self.caption_encoder(tokens)

    def loss(self, *, images: torch.Tensor, image_embedding: torch.Tensor | None = None,
             text_states: torch.Tensor | None = None, text_mask: torch.Tensor | None = None,
             tokens: torch.Tensor | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
        """Mean diffusion loss on images (B, C, S, S) in [-1, 1] given z_i (B, clip_dim) and the caption: CLIP's
        token states (B, T, text_width) with their mask (B, T), or token ids (B, T) for a decoder with its own
        caption encoder (trained by this loss); the conditioning is dropped as unCLIP §2.1 prescribes.
        Without a caption every row trains on the null caption."""
        cfg, s = self.config, self.config.image_size
        if images.ndim != 4 or tuple(images.shape[1:]) != (cfg.unet.in_channels, s, s):
            raise ValueError(f"images must be (B, {cfg.unet.in_channels}, {s}, {s}), got {tuple(images.shape)}")
        b, device = len(images), images.device
        text_states, text_mask = self._caption(text_states, text_mask, tokens)
        t = self.diffusion.sample_timesteps(b, generator=generator, device=device)
        noise = torch.randn(images.shape, generator=generator, device=device, dtype=images.dtype)
        if cfg.image_embedding_noise and image_embedding is not None:  # config.py: z_i moved as the prior's are
            image_embedding = noised_embedding(image_embedding, cfg.image_embedding_noise, generator=generator)
        cond = dict(image_embedding=image_embedding, text_states=text_states, text_mask=text_mask)
        if cfg.unet.clip_dim is not None:  # unCLIP §2.1: z_i dropped 10% of the time
            cond["keep_image"] = ~dropout_mask(b, cfg.p_drop_image, generator=generator, device=device)
        if cfg.unet.text_width is not None:  # unCLIP §2.1: the caption dropped 50% of the time
            cond["keep_text"] = ~dropout_mask(b, cfg.p_drop_text, generator=generator, device=device)

        # Self-conditioning (Analog Bits Alg. 1): half the batches first estimate x0 without gradient and feed it back,
        # the other half see zeros, as the first sampling step does. One coin per batch, from the caller's generator.
        self_condition = cfg.unet.self_condition and bool(torch.rand((), generator=generator, device=device) < 0.5)

        def model_fn(x: torch.Tensor, tt: torch.Tensor) -> torch.Tensor:
            if not self_condition:
                return self.net(x, tt, **cond)
            with torch.no_grad():
                estimate = self._estimate(self.net(x, tt, **cond), x, tt)
            return self.net(x, tt, **cond, self_cond=estimate)

        weights = None
        if cfg.foreground_weight:  # weighting.py: object pixels count 1 + foreground_weight times, at t < below * T
            cut = cfg.foreground_weight_below * self.diffusion.num_steps
            below = None if cfg.foreground_weight_below == 1 else t < cut
            weights = foreground_weights(images, cfg.foreground_weight, below)
        return self.diffusion.training_losses(model_fn, images, t, noise, weights=weights)["loss"].mean()

    def denoiser(self, *, image_embedding: torch.Tensor | None = None, text_states: torch.Tensor | None = None,
                 text_mask: torch.Tensor | None = None, tokens: torch.Tensor | None = None,
                 guidance_scale: float = 1.0, carry_estimate: bool = True,
                 guidance_interval: tuple[float, float] | None = None, guidance_drops: str = "both",
                 guide: "Decoder | None" = None) -> ModelFn:
        """The guided model_fn(x_t, t) for this conditioning: uncond + s * (cond - uncond) (Ho & Salimans 2021),
        the unconditional branch having both z_i and the caption replaced by their null embeddings. Without
        caption both branches read the null caption (unCLIP §3's variations decode z_i alone). The caption
        encoder, if any, runs once here, not at every step.

        `guidance_drops` names what the unconditional branch drops: "both" (the default, as above), "caption"
        (it keeps z_i, so guidance pushes along the caption alone) or "image" (it keeps the caption). Training drops
        the two independently, so all three branches are ones the network has seen.

        `guide`, a weaker decoder of the same images, schedule and conditioning (a smaller one trained briefly, e.g.
        the "tiny-8-rb1-guide" recipe), replaces the unconditional branch: guide + s * (self - guide), both given the
        whole conditioning (autoguidance, Karras et al. 2024; diffusion.autoguidance).

        `guidance_interval` (lo, hi) in [0, 1]: guide only the steps whose t / (T - 1) lies in it, the others
        reading the conditional branch alone at half the cost (Kynkäänniemi et al. 2024); None guides every step.

        A self-conditioned UNet (Analog Bits Alg. 2) reads, in each branch, that branch's x0 estimate from the call
        before (zeros on the first), as training showed it its own; the state lives in this denoiser, so every
        `sample` starts afresh. carry_estimate=False feeds zeros at every call instead (also seen in training): a
        function of (x_t, t) alone, which DDIM inversion needs to be retraced by the sampler (manipulate.py)."""
        cfg = self.config.unet
        raw_states, raw_mask = text_states, text_mask  # what a guide decoder reads, through its own caption path
        text_states, text_mask = self._caption(text_states, text_mask, tokens)
        cond = {k: v for k, v in dict(image_embedding=image_embedding, text_states=text_states,
                                      text_mask=text_mask).items() if v is not None}
        if not cond:
            raise ValueError("no conditioning given: pass image_embedding and/or text_states")
        batch, device = self._batch(cond)
        ones = torch.ones(batch, dtype=torch.bool, device=device)
        keeps = [k for k, field in (("keep_image", cfg.clip_dim), ("keep_text", cfg.text_width)) if field is not None]
        dropped = self._guidance_dropped(guidance_drops, keeps)
        net = self._carrying_estimate(batch) if cfg.self_condition and carry_estimate else self.net
        if guide is not None:
            if guidance_drops != "both":
                raise ValueError(f"guidance_drops={guidance_drops!r} names a branch of classifier-free guidance; "
                                 "with a guide decoder there is none to drop")
            self._check_guide(guide)
            reads_tokens = guide.caption_encoder is not None or guide.caption_adapter is not None
            weak = guide.denoiser(image_embedding=image_embedding, text_states=raw_states, text_mask=raw_mask,
                                  tokens=tokens if reads_tokens else None, guidance_scale=1.0,
                                  carry_estimate=carry_estimate)
            return autoguidance(lambda x, t: net(x, t, **cond, **dict.fromkeys(keeps, ones)), weak,
                                scale=guidance_scale, interval=self.guided_timesteps(guidance_interval),
                                guided_channels=cfg.out_channels if cfg.learned_variance else None)
        return classifier_free_guidance(
            net, scale=guidance_scale, cond=cond | dict.fromkeys(keeps, ones),
            uncond=cond | {k: ~ones if k in dropped else ones for k in keeps},
            guided_channels=cfg.out_channels if cfg.learned_variance else None,
            interval=self.guided_timesteps(guidance_interval))

    def _check_guide(self, guide: "Decoder", *, role: str = "guide") -> None:
        """A guide (or another decoder standing in for this one, named by `role`) must draw the same images on one
        schedule, in one parameterisation, from the same inputs."""
        mine, theirs = self.config, guide.config
        same = {"image size": (mine.image_size, theirs.image_size),
                "channels": (mine.unet.out_channels, theirs.unet.out_channels),
                "z_i width": (mine.unet.clip_dim, theirs.unet.clip_dim),
                "caption width": (mine.unet.text_width, theirs.unet.text_width),
                "caption encoder": (mine.caption_encoder, theirs.caption_encoder)}
        same |= {f"diffusion {k}": (getattr(mine.diffusion, k), getattr(theirs.diffusion, k))
                 for k in ("schedule", "steps", "prediction", "zero_terminal_snr", "learned_variance")}
        differ = {k: v for k, v in same.items() if v[0] != v[1]}
        if not isinstance(guide, Decoder) or guide is self or differ:
            named = ", ".join(f"{k} ({a!r} here, {b!r} there)" for k, (a, b) in differ.items())
            raise ValueError(f"the {role} must be another decoder with this one's images, schedule and inputs"
                             + (f"; it differs in {named}" if differ else ""))

    @staticmethod
    def _guidance_dropped(drops: str, keeps: list[str]) -> set[str]:
        """The keep flags the unconditional branch turns off for guidance_drops = "both" | "caption" | "image"."""
        named = {"both": {"keep_image", "keep_text"}, "caption": {"keep_text"}, "image": {"keep_image"}}
        if drops not in named:
            raise ValueError(f"guidance_drops must be one of {', '.join(named)}, got {drops!r}")
        dropped = named[drops] & set(keeps)
        if not dropped:
            raise ValueError(f"guidance_drops={drops!r}: this decoder has no {drops} input to drop "
                             f"(its conditioning: {', '.join(k.removeprefix('keep_') for k in keeps) or 'none'})")
        return dropped

    def guided_timesteps(self, interval: tuple[float, float] | None) -> tuple[int, int] | None:
        """A guidance interval (lo, hi), fractions of the schedule t / (T - 1), as the training timesteps it spans."""
        if interval is None:
            return None
        lo, hi = interval = guidance_interval_fractions(interval)
        last = self.diffusion.num_steps - 1
        first, final = math.ceil(lo * last - 1e-9), math.floor(hi * last + 1e-9)
        if first > final:
            raise ValueError(f"guidance interval {tuple(interval)!r} holds none of the decoder's timesteps 0..{last}: "
                             f"make it at least 1 / {last} wide")
        return first, final

    def _estimate(self, out: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The x0 a network output implies, clipped to [-1, 1] as the samplers' static threshold clips it."""
        return self.diffusion.predict(out, x_t, t, threshold="static").x0

    def _carrying_estimate(self, batch: int):
        """self.net, fed at each call the x0 estimate its previous call left for the same rows (the guided batch
        holds both branches, conditional rows first, so each branch carries its own, unguided, as in training).

        Under a guidance interval the calls switch between 2B rows (both branches) and B (the conditional branch
        alone): the conditional rows keep carrying theirs, and the unconditional ones keep the estimate of their
        last guided call, or zeros (no estimate, as the first step and half of training see) before it."""
        state: dict[str, torch.Tensor | None] = {"x0": None}  # (2B, C, S, S): conditional rows, then unconditional

        def net(x: torch.Tensor, t: torch.Tensor, **conditioning) -> torch.Tensor:
            previous, rows = state["x0"], x.shape[0]
            if rows not in (batch, 2 * batch) or (previous is not None and previous.shape[1:] != x.shape[1:]):
                raise ValueError(f"a self-conditioned denoiser for {batch} images was called with x of shape "
                                 f"{tuple(x.shape)}: build a new one for another batch")
            out = self.net(x, t, **conditioning, self_cond=None if previous is None else previous[:rows])
            estimate = self._estimate(out, x, t)
            if previous is None:
                previous = torch.zeros((2 * batch, *x.shape[1:]), dtype=estimate.dtype, device=estimate.device)
            state["x0"] = torch.cat([estimate, previous[rows:]])
            return out

        return net

    @torch.no_grad()
    def sample(self, *, image_embedding: torch.Tensor | None = None, text_states: torch.Tensor | None = None,
               text_mask: torch.Tensor | None = None, tokens: torch.Tensor | None = None,
               steps: int | str | Sequence[int] | None = 50,
               sampler: str = "ddim", eta: float = 0.0, guidance_scale: float = 1.0, threshold: str | None = "static",
               generator: torch.Generator | Sequence[torch.Generator] | None = None,
               x_T: torch.Tensor | None = None, carry_estimate: bool = True,
               guidance_interval: tuple[float, float] | None = None, guidance_drops: str = "both",
               guide: "Decoder | None" = None) -> torch.Tensor:
        """(B, C, S, S) images in [-1, 1] for B z_i (and captions), guided with `guidance_scale`.

        `sampler`: "ddim" (with `eta`; eta 0 is deterministic and invertible), "ddpm" or "dpm++", over `steps`
        network evaluations; `threshold`: "static" clips each x0 prediction to [-1, 1] (ADM), None leaves it.
        `x_T` (B, C, S, S) starts from given noise, e.g. from ddim_invert for variations (unCLIP §3).
        `carry_estimate`: see `denoiser` (self-conditioned decoders only); `guidance_interval`, `guidance_drops` and
        `guide` (autoguidance by a weaker decoder) too.
        """
        model_fn = self.denoiser(image_embedding=image_embedding, text_states=text_states, text_mask=text_mask,
                                 tokens=tokens, guidance_scale=guidance_scale, carry_estimate=carry_estimate,
                                 guidance_interval=guidance_interval, guidance_drops=guidance_drops, guide=guide)
        batch, device = self._batch(dict(image_embedding=image_embedding, text_states=text_states, tokens=tokens))
        cfg = self.config.unet
        shape = (batch, cfg.in_channels, cfg.image_size, cfg.image_size)
        dtype = next(self.net.parameters()).dtype
        return run_sampler(model_fn, self.diffusion, shape, sampler=sampler, x_T=x_T, steps=steps, eta=eta,
                           threshold=threshold, generator=generator, device=device, dtype=dtype)

    @staticmethod
    def _batch(cond: dict[str, torch.Tensor | None]) -> tuple[int, torch.device]:
        given = [v for v in cond.values() if v is not None]
        if not given:
            raise ValueError("no conditioning given: pass image_embedding and/or text_states")
        sizes = {len(v) for v in given}
        if len(sizes) != 1:
            raise ValueError(f"conditioning inputs disagree on the batch size: "
                             f"{ {k: len(v) for k, v in cond.items() if v is not None} }")
        return sizes.pop(), given[0].device
