"""Typed configurations of the decoder and its upsamplers (unCLIP §2.1, Appendix C), saved as JSON beside weights.

`UNetConfig` describes the network only; `DecoderConfig` and `UpsamplerConfig` pair it with a diffusion and
the stage's training-time choices (conditioning dropout; crops and corruption of the low-res image).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace

from ..diffusion import DiffusionConfig
from .caption_encoder import CaptionEncoderConfig

DEGRADATIONS = ("none", "blur", "bsr")


def _check_keys(cls, data: dict) -> None:
    unknown = set(data) - {f.name for f in fields(cls)}
    if unknown:
        raise ValueError(f"unknown {cls.__name__} keys: {sorted(unknown)}")


@dataclass(frozen=True)
class UNetConfig:
    """An ADM UNet (Dhariwal & Nichol 2021 §3) with GLIDE's text pathway (Nichol et al. 2021 §2.2) and
    unCLIP's image-embedding conditioning (§2.1)."""

    image_size: int = 32  # the training (or, for upsamplers, the output) side; any multiple of `divisor` runs
    in_channels: int = 3
    out_channels: int = 3  # doubled on the output when learned_variance (Improved DDPM §3.1)
    model_channels: int = 32
    channel_mult: tuple[int, ...] = (1, 2, 3)  # one entry per resolution level
    num_res_blocks: int = 2
    attention_resolutions: tuple[int, ...] = (16, 8)  # sides in pixels (at image_size) with self-attention
    head_channels: int = 32  # ADM §3: a fixed channel count per head rather than a fixed head count
    dropout: float = 0.0
    resblock_updown: bool = True  # ADM §3: resample inside residual blocks (BigGAN-style) vs. separate layers
    clip_dim: int | None = 64  # size of z_i; None: no image-embedding conditioning
    text_width: int | None = 128  # width of CLIP's per-token text states; None: no caption conditioning
    context_tokens: int = 4  # unCLIP §2.1: z_i projected into four extra tokens of context
    context_dim: int | None = None  # width of the context tokens; None: text_width, or 4 * model_channels
    # Not in the paper: the hidden width of an MLP on z_i whose output, zero-initialised, is added to z_i's two linear
    # projections (unCLIP §2.1), so a small decoder can read z_i non-linearly (which object has which colour, say)
    # at a per-image cost. None: the paper's linear projections only. Zero-initialised, it can be added to a trained
    # decoder without changing what it computes (`--init-from`).
    image_mlp_width: int | None = None
    low_res_channels: int = 0  # upsamplers: channels of the upsampled low-res image concatenated to the input
    # Not in the paper: self-conditioning (Chen, Zhang & Hinton 2022, "Analog Bits" §3, Algorithms 1-2). The input also
    # carries the model's own previous x0 estimate (in_channels more channels, zeros when there is none), so each
    # sampling step sees what the step before committed to at no extra network evaluation. Zero-initialised input
    # weights for those channels let it be added to a trained UNet without changing what it computes (grow.py).
    self_condition: bool = False
    learned_variance: bool = False  # Improved DDPM §3.1: the output carries a second set of channels
    channels_last: bool = False  # run convolutions in NHWC (faster with cuDNN and mixed precision)
    # Channels per GroupNorm group. None: ADM's rule (32 groups, fewer for narrow layers; unet.group_norm). A fixed
    # size keeps the groups of a trained UNet when it is grown wider (grow.py): past 128 channels ADM's rule would
    # change the group size, and a group would mix old and new channels. Every normalised width must divide by it.
    norm_group_size: int | None = None

    def __post_init__(self):
        for name in ("channel_mult", "attention_resolutions"):  # lists (from JSON or by hand) become tuples
            object.__setattr__(self, name, tuple(getattr(self, name)))
        for name in ("image_size", "in_channels", "out_channels", "model_channels", "num_res_blocks",
                     "head_channels", "context_tokens"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"UNetConfig.{name} must be a positive integer, got {value!r}")
        if not self.channel_mult or any(m < 1 for m in self.channel_mult):
            raise ValueError(f"channel_mult must be a non-empty tuple of positive integers, got {self.channel_mult!r}")
        if self.image_size % self.divisor:
            raise ValueError(f"image_size {self.image_size} is not a multiple of {self.divisor} "
                             f"(2 ** (levels - 1) for {len(self.channel_mult)} levels)")
        levels = self.resolutions
        for r in self.attention_resolutions:
            if r not in levels:
                raise ValueError(f"attention resolution {r} is not one of the UNet's resolutions {levels}")
            channels = self.model_channels * self.channel_mult[levels.index(r)]
            if channels % self.head_channels:
                raise ValueError(f"{channels} channels at resolution {r} are not divisible by head_channels "
                                 f"{self.head_channels}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        for name in ("clip_dim", "text_width", "context_dim", "image_mlp_width", "norm_group_size"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"UNetConfig.{name} must be None or a positive integer, got {value!r}")
        if self.image_mlp_width is not None and self.clip_dim is None:
            raise ValueError(f"image_mlp_width={self.image_mlp_width} needs z_i conditioning, but clip_dim is None")
        if self.low_res_channels < 0:
            raise ValueError(f"low_res_channels must be >= 0, got {self.low_res_channels}")
        for name in ("self_condition", "learned_variance", "channels_last", "resblock_updown"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"UNetConfig.{name} must be true or false, got {getattr(self, name)!r}")
        if self.norm_group_size is not None:
            widths = {self.model_channels} | {self.model_channels * m for m in self.channel_mult}
            if bad := sorted(w for w in widths if w % self.norm_group_size):
                raise ValueError(f"norm_group_size {self.norm_group_size} does not divide the UNet's widths {bad}")
        if self.conditioned and not self.attention_resolutions:
            raise ValueError("image-embedding or caption conditioning needs at least one attention resolution: the "
                             "context tokens are read by the attention layers (GLIDE §2.2, unCLIP §2.1)")

    @property
    def divisor(self) -> int:
        """Input sides must be multiples of this: 2 ** (levels - 1)."""
        return 2 ** (len(self.channel_mult) - 1)

    @property
    def resolutions(self) -> tuple[int, ...]:
        """The side of each level at image_size, finest first."""
        return tuple(self.image_size // 2 ** i for i in range(len(self.channel_mult)))

    @property
    def input_channels(self) -> int:
        """Channels the first convolution reads: x, the upsampled low-res image (upsamplers), then the x0 estimate
        (self-conditioning)."""
        return self.in_channels * (2 if self.self_condition else 1) + self.low_res_channels

    @property
    def conditioned(self) -> bool:
        return self.clip_dim is not None or self.text_width is not None

    @property
    def time_embed_dim(self) -> int:
        return 4 * self.model_channels  # ADM / improved-diffusion

    @property
    def context_width(self) -> int:
        if self.context_dim is not None:
            return self.context_dim
        return self.text_width if self.text_width is not None else self.time_embed_dim

    @property
    def output_channels(self) -> int:
        return self.out_channels * (2 if self.learned_variance else 1)

    def to_dict(self) -> dict:
        return asdict(self) | {"channel_mult": list(self.channel_mult),
                               "attention_resolutions": list(self.attention_resolutions)}

    @classmethod
    def from_dict(cls, data: dict) -> UNetConfig:
        _check_keys(cls, data)
        return cls(**data)

    def with_(self, **changes) -> UNetConfig:
        return replace(self, **changes)


def _check_variance(unet: UNetConfig, diffusion: DiffusionConfig) -> None:
    if unet.learned_variance != diffusion.learned_variance:
        raise ValueError(f"unet.learned_variance={unet.learned_variance} but diffusion.learned_variance="
                         f"{diffusion.learned_variance}: the network's output channels must match the diffusion")
    if not diffusion.images:
        raise ValueError("the decoder and upsamplers diffuse images: DiffusionConfig.images must be True")


def _stage_from_dict(cls, data: dict):
    """A stage config from JSON: its nested unet and diffusion configs rebuilt first."""
    _check_keys(cls, data)
    data = dict(data)
    if "unet" in data:
        data["unet"] = UNetConfig.from_dict(data["unet"])
    if "diffusion" in data:
        data["diffusion"] = DiffusionConfig.from_dict(data["diffusion"])
    for name in ("caption_encoder", "caption_adapter"):
        if data.get(name) is not None:
            data[name] = CaptionEncoderConfig.from_dict(data[name])
    return cls(**data)


@dataclass(frozen=True)
class DecoderConfig:
    """The image decoder: z_i (and optionally the caption) -> a small image (unCLIP §2.1)."""

    unet: UNetConfig = UNetConfig()
    diffusion: DiffusionConfig = DiffusionConfig(schedule="cosine", steps=1000, prediction="eps")
    # unCLIP §2.1: for classifier-free guidance, z_i is replaced by a null embedding 10% of the time and
    # the caption dropped 50% of the time, independently.
    p_drop_image: float = 0.1
    p_drop_text: float = 0.5
    # GLIDE's text transformer, owned and trained by the decoder (unCLIP §2.1 reads its outputs); None: the
    # caption arrives as the frozen CLIP's token states. Its width must be unet.text_width.
    caption_encoder: CaptionEncoderConfig | None = None
    # A caption encoder beside the CLIP instead of in its place (caption_encoder.CaptionAdapter): it reads the token
    # ids and the CLIP's token states and adds its output to those states, from zero. Its width must be
    # unet.text_width; a decoder has one of caption_encoder and caption_adapter at most.
    caption_adapter: CaptionEncoderConfig | None = None
    # Training only: an object pixel's squared error counts 1 + foreground_weight times a background pixel's
    # (weighting.py; 0 weighs every pixel alike, as the papers do).
    foreground_weight: float = 0.0
    # ... only at timesteps t < foreground_weight_below * T (1: at every timestep), where x_t shows the objects.
    foreground_weight_below: float = 1.0
    # Training only: z_i is moved off itself as the prior's samples are off the true z_i (conditioning augmentation;
    # Ho et al. 2022, "Cascaded Diffusion Models", §3 do it for a cascade's low-res input): z_i + sigma * |z_i| * e /
    # sqrt(d), e ~ N(0, I), scaled back to |z_i|, so its cosine to z_i is about 1 / sqrt(1 + sigma^2) whatever the
    # width d (0.34: 0.946, the shipped prior's cosine to the true z_i). 0: the true z_i, as the paper trains.
    image_embedding_noise: float = 0.0

    def __post_init__(self):
        _check_variance(self.unet, self.diffusion)
        if not (self.image_embedding_noise >= 0 and math.isfinite(self.image_embedding_noise)):
            raise ValueError(f"image_embedding_noise must be a finite number >= 0, got {self.image_embedding_noise}")
        if self.image_embedding_noise and self.unet.clip_dim is None:
            raise ValueError(f"image_embedding_noise={self.image_embedding_noise} noises z_i, but this decoder reads "
                             "no z_i (unet.clip_dim is None)")
        if not (self.foreground_weight >= 0 and math.isfinite(self.foreground_weight)):
            raise ValueError(f"foreground_weight must be a finite number >= 0, got {self.foreground_weight}")
        if not 0 < self.foreground_weight_below <= 1:
            raise ValueError(f"foreground_weight_below must be in (0, 1], got {self.foreground_weight_below}")
        if self.caption_encoder is not None and self.caption_adapter is not None:
            raise ValueError("a decoder reads its own caption encoder's states or the CLIP's with an adapter, not "
                             "both: set caption_encoder or caption_adapter")
        if self.caption_adapter is not None and self.caption_adapter.width != self.unet.text_width:
            raise ValueError(f"the caption adapter is {self.caption_adapter.width} wide but unet.text_width is "
                             f"{self.unet.text_width}: it adds to the CLIP's token states the UNet reads")
        if self.caption_encoder is not None and self.caption_encoder.width != self.unet.text_width:
            raise ValueError(f"the caption encoder is {self.caption_encoder.width} wide but unet.text_width is "
                             f"{self.unet.text_width}: the UNet reads the encoder's states")
        if self.unet.low_res_channels:
            raise ValueError(f"a decoder has no low-res input; unet.low_res_channels is {self.unet.low_res_channels}")
        if not self.unet.conditioned:
            raise ValueError("a decoder is conditioned on z_i and/or the caption: unet.clip_dim and unet.text_width "
                             "are both None")
        for name in ("p_drop_image", "p_drop_text"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")

    @property
    def image_size(self) -> int:
        return self.unet.image_size

    def to_dict(self) -> dict:
        return {"unet": self.unet.to_dict(), "diffusion": self.diffusion.to_dict(),
                "p_drop_image": self.p_drop_image, "p_drop_text": self.p_drop_text} | (
            {} if self.caption_encoder is None else {"caption_encoder": self.caption_encoder.to_dict()}) | (
            {} if self.caption_adapter is None else {"caption_adapter": self.caption_adapter.to_dict()}) | (
            {} if not self.foreground_weight else {"foreground_weight": self.foreground_weight}) | (
            {} if self.foreground_weight_below == 1 else {"foreground_weight_below": self.foreground_weight_below}) | (
            {} if not self.image_embedding_noise else {"image_embedding_noise": self.image_embedding_noise})

    @classmethod
    def from_dict(cls, data: dict) -> DecoderConfig:
        return _stage_from_dict(cls, data)

    def with_(self, **changes) -> DecoderConfig:
        return replace(self, **changes)


@dataclass(frozen=True)
class UpsamplerConfig:
    """A diffusion upsampler low_res_size -> unet.image_size, conditioned on the low-res image only (unCLIP §2.1:
    the upsamplers see no caption and no z_i), trained on random crops and run fully convolutionally."""

    unet: UNetConfig = UNetConfig(image_size=128, model_channels=32, channel_mult=(1, 2, 2), num_res_blocks=2,
                                  attention_resolutions=(), clip_dim=None, text_width=None, low_res_channels=3)
    diffusion: DiffusionConfig = DiffusionConfig(schedule="cosine", steps=1000, prediction="eps")
    low_res_size: int = 32
    crop_size: int = 32  # unCLIP §2.1 / Appendix C: trained on random crops a quarter of the output side
    # unCLIP §2.1: the conditioning image is slightly corrupted in training: Gaussian blur for the first
    # upsampler, BSR degradation (Zhang et al. 2021; Rombach et al. 2022) for the second.
    degradation: str = "blur"  # "none" | "blur" | "bsr"
    blur_sigma: tuple[float, float] = (0.4, 0.6)  # blur std in low-res pixels, drawn uniformly per image

    def __post_init__(self):
        object.__setattr__(self, "blur_sigma", tuple(self.blur_sigma))
        _check_variance(self.unet, self.diffusion)
        u = self.unet
        if u.conditioned:
            raise ValueError("an upsampler is conditioned on the low-res image only (unCLIP §2.1): set "
                             f"unet.clip_dim and unet.text_width to None (got {u.clip_dim}, {u.text_width})")
        if u.attention_resolutions:
            raise ValueError("an upsampler trained on crops must be fully convolutional (unCLIP §2.1): "
                             f"attention_resolutions must be empty, got {u.attention_resolutions}")
        if u.low_res_channels != u.in_channels:
            raise ValueError(f"unet.low_res_channels is {u.low_res_channels}; an upsampler concatenates a "
                             f"{u.in_channels}-channel low-res image")
        if u.self_condition:
            raise ValueError("unet.self_condition is for the decoder: the upsampler neither trains nor samples with "
                             "an x0 estimate")
        if self.low_res_size < 1 or u.image_size % self.low_res_size or u.image_size == self.low_res_size:
            raise ValueError(f"low_res_size {self.low_res_size} must divide image_size {u.image_size} and be smaller")
        if not 0 < self.crop_size <= u.image_size or self.crop_size % self.factor or self.crop_size % u.divisor:
            raise ValueError(f"crop_size {self.crop_size} must be in 1..{u.image_size} and a multiple of the scale "
                             f"factor {self.factor} and of the UNet's divisor {u.divisor}")
        if self.degradation not in DEGRADATIONS:
            raise ValueError(f"unknown degradation {self.degradation!r}: expected one of {', '.join(DEGRADATIONS)}")
        lo, hi = self.blur_sigma
        if not 0 <= lo <= hi:
            raise ValueError(f"blur_sigma must be a range 0 <= low <= high, got {self.blur_sigma}")

    @property
    def image_size(self) -> int:
        return self.unet.image_size

    @property
    def factor(self) -> int:
        return self.unet.image_size // self.low_res_size

    def to_dict(self) -> dict:
        return {"unet": self.unet.to_dict(), "diffusion": self.diffusion.to_dict(), "low_res_size": self.low_res_size,
                "crop_size": self.crop_size, "degradation": self.degradation, "blur_sigma": list(self.blur_sigma)}

    @classmethod
    def from_dict(cls, data: dict) -> UpsamplerConfig:
        return _stage_from_dict(cls, data)

    def with_(self, **changes) -> UpsamplerConfig:
        return replace(self, **changes)


def _unconditional(**kw) -> UNetConfig:
    return UNetConfig(attention_resolutions=(), clip_dim=None, text_width=None, low_res_channels=3, **kw)


# unCLIP Appendix C, Table 3 (shapes only; nobody trains these here). The paper's decoder reads GLIDE's own
# 2048-wide text transformer; here captions arrive as CLIP's token states (ViT-L/14: 768 wide), projected to
# 2048-wide context tokens. UNet parameters: 2.25B (the paper's 3.5B includes GLIDE's ~1.2B text transformer),
# 730M (paper: 700M) and 282M (paper: 300M). The paper samples its decoder with Analytic-DPM variances (Bao et
# al. 2022) and the upsamplers with DDIM in 27 and 15 steps; every stage here has a fixed variance.
PRESETS: dict[str, DecoderConfig | UpsamplerConfig] = {
    # Shapes world on a CPU: 32 px, conditioned on the tiny CLIP's z_i (64) and token states (128); 3.4M parameters.
    "tiny": DecoderConfig(),
    # 32 -> 128, trained on 32 px crops (a quarter of the output side, as in the paper); 1.8M parameters.
    "tiny-up-128": UpsamplerConfig(),
    "paper-decoder-64": DecoderConfig(
        unet=UNetConfig(image_size=64, model_channels=512, channel_mult=(1, 2, 3, 4), num_res_blocks=3,
                        attention_resolutions=(32, 16, 8), head_channels=64, dropout=0.1, clip_dim=768,
                        text_width=768, context_dim=2048),
        diffusion=DiffusionConfig(schedule="cosine", steps=1000, prediction="eps")),
    "paper-up-256": UpsamplerConfig(
        unet=_unconditional(image_size=256, model_channels=320, channel_mult=(1, 2, 3, 4), num_res_blocks=3,
                            dropout=0.1),
        diffusion=DiffusionConfig(schedule="cosine", steps=1000, prediction="eps"),
        low_res_size=64, crop_size=64, degradation="blur"),
    "paper-up-1024": UpsamplerConfig(
        unet=_unconditional(image_size=1024, model_channels=192, channel_mult=(1, 1, 2, 2, 4, 4), num_res_blocks=2),
        diffusion=DiffusionConfig(schedule="linear", steps=1000, prediction="eps"),
        low_res_size=256, crop_size=256, degradation="bsr"),
}


def preset(name: str) -> DecoderConfig | UpsamplerConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown decoder preset {name!r}: expected one of {', '.join(PRESETS)}")
    return PRESETS[name]


# Diffusion settings that shape only training (which timesteps, how each is weighted), not what the network computes:
# a run may start from a model trained with others (decoder/train.py, --init-from), and such models average.
TRAINING_ONLY = ("min_snr_gamma", "vlb_weight", "timestep_sampling", "timestep_logit_mean", "timestep_logit_std",
                 "timestep_focus_steps", "timestep_focus_fraction")
# Decoder settings that shape only training: how often the conditioning is dropped (sampling never drops it at random),
# how the loss weighs object pixels and how far z_i is noised.
TRAINING_ONLY_MODEL = ("p_drop_image", "p_drop_text", "foreground_weight", "foreground_weight_below",
                       "image_embedding_noise")
# UNet settings of memory layout only: a model trained in one computes, up to rounding, what it would in the other.
LAYOUT_ONLY_UNET = ("channels_last",)


def network_config(config: DecoderConfig | UpsamplerConfig) -> dict:
    """What a model's config says about the network it describes: its dict less the TRAINING_ONLY diffusion settings,
    the TRAINING_ONLY_MODEL fields and the LAYOUT_ONLY_UNET settings. Two models with equal network configs have
    weights of the same meaning."""
    data = {k: v for k, v in config.to_dict().items() if k not in TRAINING_ONLY_MODEL}
    data["diffusion"] = {k: v for k, v in data["diffusion"].items() if k not in TRAINING_ONLY}
    data["unet"] = {k: v for k, v in data["unet"].items() if k not in LAYOUT_ONLY_UNET}
    return data
