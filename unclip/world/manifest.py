"""The `prompts.jsonl` manifest: how generation hands images to scoring everywhere in unclip.

A directory holds PNG files and `prompts.jsonl`, one JSON object a line with at least
{"file": <path relative to the directory>, "caption": <caption>}; writers may add keys
(the world sampler adds "split" and "index"; later, variations add "source").
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from ..atomic import write_text_atomically
from .render import render
from .scene import sample_scene
from .score import accuracy_by_skill, score_image
from .vocab import check_image_size, check_split

MANIFEST = "prompts.jsonl"


@dataclass(frozen=True)
class ManifestEntry:
    line: int
    file: str
    caption: str
    extra: dict


@dataclass(frozen=True)
class FileScore:
    file: str
    caption: str
    correct: bool | None  # None when the file could not be scored
    skills: tuple[str, ...]
    reason: str  # why it is wrong, or the error that kept it from being scored


def write_world_samples(
    out: str | os.PathLike, *, split: str, n: int, size: int, start: int = 0,
    progress: Callable[[int], None] | None = None,
) -> Path:
    """Render scenes start..start+n-1 of `split` into `out` as PNGs plus prompts.jsonl; return the manifest path."""
    check_split(split)
    check_image_size(size)
    if n < 1 or start < 0:
        raise ValueError(f"need n >= 1 and start >= 0, got n={n}, start={start}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    lines = []
    for k in range(n):
        index = start + k
        scene = sample_scene(split, index)
        name = f"{k:06d}.png"
        render(scene, size).save(out / name)
        lines.append(json.dumps({"file": name, "caption": scene.caption, "split": split, "index": index}))
        if progress is not None:
            progress(1)
    path = out / MANIFEST
    return write_text_atomically(path, "\n".join(lines) + "\n")


def read_manifest(directory: str | os.PathLike) -> tuple[list[ManifestEntry], list[str]]:
    """Entries of DIR/prompts.jsonl and a list of errors for lines that could not be read."""
    path = Path(directory) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"no manifest at {path}: expected one JSON object a line with 'file' and 'caption'")
    entries, errors = [], []
    for number, text in enumerate(path.read_text().splitlines(), start=1):
        if not text.strip():
            continue
        try:
            record = json.loads(text)
            file, caption = record["file"], record["caption"]
            if not isinstance(file, str) or not isinstance(caption, str):
                raise TypeError("'file' and 'caption' must be strings")
        except (json.JSONDecodeError, KeyError, TypeError) as error:
            errors.append(f"{path}:{number}: unreadable manifest line ({error})")
            continue
        extra = {k: v for k, v in record.items() if k not in ("file", "caption")}
        entries.append(ManifestEntry(line=number, file=file, caption=caption, extra=extra))
    return entries, errors


def _load_image(path: Path) -> Image.Image:
    with Image.open(path) as image:
        image.load()
        return image.convert("RGB")


def score_entries(directory: str | os.PathLike, entries: list[ManifestEntry]) -> Iterator[FileScore]:
    """Score each entry's image against its caption; a file that fails to load or parse is reported, not raised."""
    directory = Path(directory)
    for entry in entries:
        path = directory / entry.file
        try:
            result = score_image(_load_image(path), entry.caption)
        except FileNotFoundError:
            yield FileScore(entry.file, entry.caption, None, (), f"missing image {path}")
        except (OSError, ValueError, Image.DecompressionBombError) as error:
            yield FileScore(entry.file, entry.caption, None, (), f"cannot score {path}: {error}")
        else:
            yield FileScore(entry.file, entry.caption, result.correct, result.skills, result.reason)


def summarise(scores: list[FileScore]) -> dict:
    """accuracy_by_skill over the scored files, plus the count of files that could not be scored."""
    summary = accuracy_by_skill((s.correct, s.skills) for s in scores if s.correct is not None)
    summary["errors"] = sum(s.correct is None for s in scores)
    return summary
