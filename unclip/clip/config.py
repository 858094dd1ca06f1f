"""CLIP configuration and size presets, from `tiny` (trains on the Shapes world on a CPU) to the real shapes."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class CLIPConfig:
    embed_dim: int = 64
    # image tower: a ViT (Dosovitskiy et al. 2021) as in CLIP §2.4
    image_size: int = 32
    patch_size: int = 4
    vision_width: int = 128
    vision_layers: int = 4
    vision_heads: int = 4
    # how the image tower's learned positional embedding starts: "random" (CLIP) or "sincos", the fixed 2-D
    # sine-cosine table of MAE (He et al. 2022, after Vaswani et al. 2017), so that where a patch lies is legible
    # from the first step; it is trained either way, and loading weights replaces it.
    vision_position_init: str = "random"
    # how the image becomes the token grid: "patch", CLIP's one linear projection per patch (the layout of
    # OpenAI's and open_clip's ViTs), or "conv", a small stack of 3x3 convolutions with batch norm and ReLU down
    # to the same grid (Xiao et al. 2021, "Early convolutions help transformers see better"), which learns
    # shapes from far fewer examples (docs/clip.md)
    vision_stem: str = "patch"
    # text tower: a causal transformer read out at the end-of-text token (CLIP §2.4)
    context_length: int = 24  # Shapes captions are at most 21 BPE tokens, + SOT and EOT
    vocab_size: int = 768  # a BPE trained on Shapes captions (byte symbols + merges + 2 specials)
    text_width: int = 128
    text_layers: int = 4
    text_heads: int = 4
    activation: str = "gelu"  # "gelu" | "quick_gelu" (OpenAI's weights were trained with QuickGELU)
    # preprocessing: images arrive in [-1, 1]; mapped to [0, 1], then normalised with these
    image_mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    image_std: tuple[float, float, float] = (0.5, 0.5, 0.5)

    def __post_init__(self):
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size {self.image_size} is not a multiple of patch_size {self.patch_size}")
        if self.vision_position_init not in ("random", "sincos"):
            raise ValueError(f"vision_position_init must be 'random' or 'sincos', got {self.vision_position_init!r}")
        if self.vision_stem not in ("patch", "conv"):
            raise ValueError(f"vision_stem must be 'patch' or 'conv', got {self.vision_stem!r}")
        if self.vision_stem == "conv" and (self.patch_size & (self.patch_size - 1) or self.vision_width % 4):
            raise ValueError(f"a conv stem needs a power-of-two patch_size and a vision_width divisible by 4, got "
                             f"{self.patch_size} and {self.vision_width}")
        if self.activation not in ("gelu", "quick_gelu"):
            raise ValueError(f"activation must be 'gelu' or 'quick_gelu', got {self.activation!r}")
        for name in ("vision_width", "text_width"):
            heads = getattr(self, name.replace("width", "heads"))
            if getattr(self, name) % heads:
                raise ValueError(f"{name} {getattr(self, name)} is not divisible by {heads} heads")

    def to_dict(self) -> dict:
        return asdict(self) | {"image_mean": list(self.image_mean), "image_std": list(self.image_std)}

    @classmethod
    def from_dict(cls, data: dict) -> CLIPConfig:
        known = {f.name for f in fields(cls)}
        if set(data) - known:
            raise ValueError(f"unknown CLIPConfig keys: {sorted(set(data) - known)}")
        tuples = {k: tuple(data[k]) for k in ("image_mean", "image_std") if k in data}
        return cls(**(data | tuples))

    def with_(self, **changes) -> CLIPConfig:
        return replace(self, **changes)


_OPENAI = dict(context_length=77, vocab_size=49408, activation="quick_gelu", image_mean=OPENAI_MEAN,
               image_std=OPENAI_STD, image_size=224)
PRESETS: dict[str, CLIPConfig] = {
    # Shapes world, CPU: 32 px images on an 8x8 token grid (4 px cells) through a convolutional stem, 2 image
    # layers starting from the sine-cosine position table; ~1.4M parameters. Against CLIP's patch projection with 4
    # layers and random positions it trains 1.3x faster and, at 1,000 steps, lifts the 8-way from 0.536 to 0.824
    # (docs/clip.md).
    "tiny": CLIPConfig(vision_stem="conv", vision_layers=2, vision_position_init="sincos"),
    # The first tiny image tower (CLIP's patch projection, 4 layers, random positions), kept to reproduce earlier runs.
    "tiny-vit": CLIPConfig(),
    # The evaluation encoder (issue 9): another size and seed, never the one the decoder is conditioned on.
    "eval": CLIPConfig(embed_dim=96, image_size=64, patch_size=8, vision_width=160, vision_layers=4, vision_heads=5,
                       text_width=160, text_layers=3, text_heads=5),
    "vit-b-32": CLIPConfig(embed_dim=512, patch_size=32, vision_width=768, vision_layers=12, vision_heads=12,
                           text_width=512, text_layers=12, text_heads=8, **_OPENAI),
    "vit-b-16": CLIPConfig(embed_dim=512, patch_size=16, vision_width=768, vision_layers=12, vision_heads=12,
                           text_width=512, text_layers=12, text_heads=8, **_OPENAI),
    "vit-l-14": CLIPConfig(embed_dim=768, patch_size=14, vision_width=1024, vision_layers=24, vision_heads=16,
                           text_width=768, text_layers=12, text_heads=12, **_OPENAI),
}


def preset(name: str) -> CLIPConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown CLIP preset {name!r}: expected one of {', '.join(PRESETS)}")
    return PRESETS[name]
