"""`unclip train --set KEY=VALUE`: a preset's training config (TrainConfig) with some fields changed.

A recipe's schedule, batch and workers are sized for the 2-core CPU it was measured on; on a GPU the same recipe
wants a larger batch, data-loader workers and bf16 autocast, e.g. `--set batch_size=256 --set num_workers=12
--set precision=bf16`. The changes are applied before the run starts and saved in its config.json, so a resumed run
must be given the same ones (the Trainer refuses another config, naming the fields that differ), except for the
bookkeeping fields (loop.BOOKKEEPING: how often it logs, checkpoints or draws grids).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import fields

from .loop import TrainConfig

_TRUE, _FALSE = ("true", "1", "yes"), ("false", "0", "no")


def _parse_value(name: str, kind: str, text: str):
    """`text` as the type named by TrainConfig's annotation `kind` ('int', 'float | None', 'tuple[float, float]')."""
    if "None" in kind and text.lower() == "none":
        return None
    base = kind.split("|")[0].split("[")[0].strip()
    try:
        if base == "bool":
            if text.lower() not in _TRUE + _FALSE:
                raise ValueError(f"one of {', '.join(_TRUE + _FALSE)}")
            return text.lower() in _TRUE
        if base == "int":
            return int(text)
        if base == "float":
            return float(text)
        if base == "tuple":
            value = tuple(float(part) for part in text.split(","))
            if len(value) != kind.count("float"):
                raise ValueError
            return value
        if base == "str":
            return text
    except ValueError as error:
        raise ValueError(f"--set {name}={text}: {name} takes {kind}"
                         + (" (comma-separated)" if base == "tuple" else "")
                         + (f": {error}" if base == "bool" else "")) from None
    raise TypeError(f"--set {name}: no parser for its type {kind} (a TrainConfig field added without one)")


def parse_train_changes(pairs: Sequence[str]) -> dict[str, object]:
    """'KEY=VALUE' strings -> {TrainConfig field: typed value}; an error names the pair and the known fields."""
    kinds = {f.name: str(f.type) for f in fields(TrainConfig)}
    changes: dict[str, object] = {}
    for pair in pairs:
        name, sep, text = pair.partition("=")
        name = name.strip()
        if not sep or not name:
            raise ValueError(f"--set {pair!r}: expected KEY=VALUE, e.g. --set batch_size=256")
        if name not in kinds:
            raise ValueError(f"--set {pair!r}: {name!r} is not a training setting; expected one of "
                             f"{', '.join(kinds)}")
        if name in changes:
            raise ValueError(f"--set {name} is given twice")
        changes[name] = _parse_value(name, kinds[name], text.strip())
    return changes


def with_train_changes(config: TrainConfig, changes: Mapping[str, object] | None) -> TrainConfig:
    """`config` with `changes` applied and checked as a new TrainConfig would be (ValueError names a bad value)."""
    if not changes:
        return config
    try:
        return TrainConfig.from_dict(config.to_dict() | dict(changes))
    except ValueError as error:  # the error names the field and its value
        raise ValueError(f"--set: {error}") from None
