"""The judge's configuration and size presets."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace


@dataclass(frozen=True)
class JudgeConfig:
    vision_width: int = 128  # the CLIP image tower's width, whose output states the judge reads
    text_width: int = 128  # the CLIP text tower's width, whose token states the judge reads
    width: int = 128
    layers: int = 3  # transformer blocks over [match token, caption states, image states] together
    heads: int = 4
    # > 0: each grid state also gets the raw pixels of its patch (this many pixels a side, the CLIP's patch size),
    # linearly embedded; 0: the CLIP's states alone
    patch: int = 0

    def __post_init__(self):
        for f in fields(self):
            value = getattr(self, f.name)
            low = 0 if f.name == "patch" else 1
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{f.name} must be a {'non-negative' if low == 0 else 'positive'} integer, "
                                 f"got {value!r}")
        if self.width % self.heads:
            raise ValueError(f"width {self.width} is not divisible by {self.heads} heads")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> JudgeConfig:
        unknown = set(data) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown JudgeConfig keys {sorted(unknown)}: a judge saved by other code?")
        return cls(**data)

    def with_(self, **changes) -> JudgeConfig:
        return replace(self, **changes)


PRESETS: dict[str, JudgeConfig] = {
    "tiny": JudgeConfig(),  # on the tiny CLIP (widths 128): 0.63M parameters
    "tiny-pixels": JudgeConfig(patch=4),  # the same, each grid state given its 4 x 4 patch of pixels (32 px, grid 8)
}


def preset(name: str) -> JudgeConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown judge preset {name!r}: expected one of {', '.join(PRESETS)}")
    return PRESETS[name]
