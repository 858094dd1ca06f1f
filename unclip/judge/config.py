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

    def __post_init__(self):
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{f.name} must be a positive integer, got {value!r}")
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
}


def preset(name: str) -> JudgeConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown judge preset {name!r}: expected one of {', '.join(PRESETS)}")
    return PRESETS[name]
