"""Typed configurations of the two priors (unCLIP §2.2), saved as JSON beside their weights."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace

from ..diffusion import DiffusionConfig


def _check_keys(cls, data: dict) -> None:
    unknown = set(data) - {f.name for f in fields(cls)}
    if unknown:
        raise ValueError(f"unknown {cls.__name__} keys: {sorted(unknown)}")


@dataclass(frozen=True)
class DiffusionPriorConfig:
    embed_dim: int = 64  # CLIP's joint embedding size E (z_t and z_i)
    text_width: int = 128  # width of CLIP's per-token text states
    context_length: int = 24  # text tokens the prior reads
    width: int = 128  # sized by measurement: 0.27 s per step of 256 on the 2-core CPU (192 x 6 layers: 0.9 s)
    layers: int = 4
    heads: int = 4
    cond_drop_prob: float = 0.1  # unCLIP §2.2: the text conditioning is dropped 10% of the time (for guidance)
    # The diffusion runs on z_i * embed_scale. CLIP's z_i are unit vectors, so each coordinate has variance
    # about 1/E; scaling by sqrt(E) gives the unit variance the noise schedule assumes (the choice
    # DALLE2-pytorch settled on in its issue #60). The prior's outputs are divided back and renormalised.
    embed_scale: float | None = None  # None: sqrt(embed_dim)
    diffusion: DiffusionConfig = DiffusionConfig(schedule="cosine", steps=1000, prediction="x0", images=False)
    # The prior's own learned embedding of the caption's token ids, added to CLIP's token states where they enter
    # (zero-initialised, so it grows onto a prior trained without it). The tiny Shapes CLIP's states for "left" and
    # "right" sit at cosine 0.990 and its z_t for a caption and its left-right swap at 0.998, so a prior reading
    # only them cannot tell the sides apart (docs/priors.md); token ids can. vocab_size is the tokenizer's.
    token_embedding: bool = False
    vocab_size: int = 768

    def __post_init__(self):
        if self.width % self.heads:
            raise ValueError(f"width {self.width} is not divisible by {self.heads} heads")
        if isinstance(self.vocab_size, bool) or not isinstance(self.vocab_size, int) or self.vocab_size < 1:
            raise ValueError(f"vocab_size must be a positive integer, got {self.vocab_size!r}")
        if not 0 <= self.cond_drop_prob < 1:
            raise ValueError(f"cond_drop_prob must be in [0, 1), got {self.cond_drop_prob}")
        if self.diffusion.images or self.diffusion.learned_variance:
            raise ValueError("the prior diffuses continuous vectors with a fixed variance (images=False, "
                             "learned_variance=False)")

    @property
    def scale(self) -> float:
        return self.embed_scale if self.embed_scale is not None else self.embed_dim ** 0.5

    def to_dict(self) -> dict:
        return asdict(self) | {"diffusion": self.diffusion.to_dict()}

    @classmethod
    def from_dict(cls, data: dict) -> DiffusionPriorConfig:
        _check_keys(cls, data)
        data = dict(data)
        if "diffusion" in data:
            data["diffusion"] = DiffusionConfig.from_dict(data["diffusion"])
        return cls(**data)

    def with_(self, **changes) -> DiffusionPriorConfig:
        return replace(self, **changes)


@dataclass(frozen=True)
class ARPriorConfig:
    embed_dim: int = 64
    text_width: int = 128
    context_length: int = 24
    # unCLIP §2.2 keeps 319 of 1024 PCA components; here the count is chosen when the PCA is fitted, as the
    # fewest components that keep `pca_variance` of the training embeddings' variance (capped at max_components).
    pca_variance: float = 0.95
    max_components: int = 32
    components: int | None = None  # the count chosen by the fit (set by ARPrior.from_embeddings, saved with it)
    buckets: int = 1024  # unCLIP §2.2: each component quantised into 1024 discrete buckets
    similarity_buckets: int = 64  # the prepended token for the quantised z_i . z_t
    width: int = 128
    layers: int = 4
    heads: int = 4
    cond_drop_prob: float = 0.1

    def __post_init__(self):
        if self.width % self.heads:
            raise ValueError(f"width {self.width} is not divisible by {self.heads} heads")
        if not 0 < self.pca_variance <= 1:
            raise ValueError(f"pca_variance must be in (0, 1], got {self.pca_variance}")
        if not 1 <= self.max_components <= self.embed_dim:
            raise ValueError(f"max_components must be in [1, embed_dim={self.embed_dim}], got {self.max_components}")
        if self.buckets < 2 or self.similarity_buckets < 2:
            raise ValueError(f"need >= 2 buckets, got {self.buckets} and {self.similarity_buckets}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> ARPriorConfig:
        _check_keys(cls, data)
        return cls(**data)

    def with_(self, **changes) -> ARPriorConfig:
        return replace(self, **changes)
