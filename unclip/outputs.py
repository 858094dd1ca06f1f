"""Writing what the pipeline makes: PNGs + prompts.jsonl (the manifest `unclip world score` reads) + a grid.

Every verb that makes images (generate, vary, interpolate, textdiff) writes through here, so their
directories look alike: 000000.png, 000001.png, ..., prompts.jsonl and grid.png.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path

from PIL import Image

from .atomic import write_text_atomically
from .data.images import load_image
from .grid import captioned_grid
from .pipeline import UnCLIP
from .world.manifest import MANIFEST


def write_outputs(out: str | os.PathLike, images: Sequence[Image.Image], records: Sequence[dict], *,
                  grid_columns: int | None = None, start: int = 0, append: bool = False) -> Path:
    """Save images as NNNNNN.png (from `start`) with their records (each at least {"caption"}) in prompts.jsonl;
    with append=True, add to an existing manifest. Returns the manifest path."""
    if len(images) != len(records):
        raise ValueError(f"{len(images)} images but {len(records)} records")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    lines = []
    for k, (image, record) in enumerate(zip(images, records), start=start):
        name = f"{k:06d}.png"
        image.save(out / name)
        lines.append(json.dumps({"file": name} | dict(record)))
    path = out / MANIFEST
    previous = path.read_text() if append and path.is_file() else ""
    write_text_atomically(path, previous + "".join(line + "\n" for line in lines))
    if grid_columns is not None and images:
        captioned_grid(list(images), [r.get("caption", "") for r in records], columns=grid_columns).save(
            out / "grid.png")
    return path


def read_prompts(path: str | os.PathLike) -> list[dict]:
    """Prompts from a prompts.jsonl ({"caption", ...} a line; other keys are kept) or a text file (a caption a line)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no prompts file at {path}")
    records = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        if path.suffix == ".jsonl":
            try:
                record = json.loads(line)
                caption = record["caption"]
            except (json.JSONDecodeError, KeyError, TypeError) as error:
                raise ValueError(f"{path}:{number}: expected a JSON object with a 'caption' ({error})") from None
            if not isinstance(caption, str):
                raise ValueError(f"{path}:{number}: 'caption' must be a string, got {caption!r}")
            records.append({k: v for k, v in record.items() if k != "file"})
        else:
            records.append({"caption": line.strip()})
    if not records:
        raise ValueError(f"{path} holds no prompts")
    return records


def generate(pipe: UnCLIP, prompts: Sequence[dict], out: str | os.PathLike, *, n_per_prompt: int = 1, seed: int = 0,
             prior: str | None = None, batch_size: int = 32, upsample: bool = True,
             progress: Callable[[int], None] | None = None) -> Path:
    """Generate n_per_prompt images per prompt into `out`; prompt i draws from its own generator, seeded seed + i
    (UnCLIP.__call__), so its images are the same whatever batch_size.
    upsample=False writes the decoder's images (the scorer reads any size; the upsamplers take most of the time).

    Records keep the prompt's own keys (split, index, ...) and add "sample" (0..n-1) and "prior".
    """
    if batch_size < 1 or n_per_prompt < 1:
        raise ValueError(f"batch_size and n_per_prompt must be >= 1, got {batch_size} and {n_per_prompt}")
    for i, record in enumerate(prompts):  # check every caption before any work
        if not isinstance(record.get("caption"), str) or not record["caption"].strip():
            raise ValueError(f"prompt {i} has an empty caption: {record!r}")
    pipe.tokens([r["caption"] for r in prompts])  # an over-long caption is refused here, naming it
    kind = prior or pipe.config.prior_kind
    path, written = Path(out) / MANIFEST, 0
    for s in range(0, len(prompts), batch_size):
        chunk = prompts[s:s + batch_size]
        images = pipe([r["caption"] for r in chunk], num_images=n_per_prompt, seed=seed + s, prior=kind,
                      upsample=upsample)
        records = [r | {"sample": j, "prior": kind} for r in chunk for j in range(n_per_prompt)]
        path = write_outputs(out, images, records, start=written, append=written > 0)
        written += len(images)
        if progress is not None:
            progress(len(chunk))
    return path


def open_images(paths: Sequence[str | os.PathLike]) -> list[Image.Image]:
    """Input images for vary/interpolate/textdiff, with Pillow's bomb limit enforced as an error."""
    return [load_image(p).convert("RGB") for p in paths]
