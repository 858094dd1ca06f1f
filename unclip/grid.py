"""Captioned image grids: the PNGs people look at (world samples now, model samples later)."""

from __future__ import annotations

import math
from collections.abc import Sequence

from PIL import Image, ImageDraw, ImageFont


def _wrap(draw: ImageDraw.ImageDraw, text: str, font, width: int) -> list[str]:
    lines, line = [], ""
    for word in text.split(" "):
        trial = f"{line} {word}".strip()
        if line and draw.textlength(trial, font=font) > width:
            lines.append(line)
            line = word
        else:
            line = trial
    return lines + ([line] if line else [])


def captioned_grid(
    images: Sequence[Image.Image], captions: Sequence[str], *, columns: int | None = None,
    cell: int = 160, font_size: int = 12, caption_lines: int = 4, verdicts: Sequence[bool | None] | None = None,
) -> Image.Image:
    """Lay images out `columns` wide, each scaled to `cell` px with its caption wrapped beneath.

    `verdicts`, if given, frames each image green (True: the scorer calls it correct) or red (False).
    """
    if len(images) != len(captions) or (verdicts is not None and len(verdicts) != len(images)):
        raise ValueError(f"{len(images)} images but {len(captions)} captions"
                         + (f" and {len(verdicts)} verdicts" if verdicts is not None else ""))
    if not images:
        raise ValueError("no images to put in a grid")
    columns = columns or math.ceil(math.sqrt(len(images)))
    rows = math.ceil(len(images) / columns)
    font = ImageFont.load_default(size=font_size)
    line_height = font_size + 3
    pad = 8
    box_h = cell + caption_lines * line_height + 2 * pad
    grid = Image.new("RGB", (columns * (cell + pad) + pad, rows * box_h + pad), (245, 245, 245))
    draw = ImageDraw.Draw(grid)
    for k, (image, caption) in enumerate(zip(images, captions)):
        x = pad + (k % columns) * (cell + pad)
        y = pad + (k // columns) * box_h
        resample = Image.Resampling.NEAREST if image.width <= cell else Image.Resampling.BOX
        grid.paste(image.convert("RGB").resize((cell, cell), resample), (x, y))
        if verdicts is not None and verdicts[k] is not None:
            colour = (30, 160, 60) if verdicts[k] else (210, 30, 30)
            draw.rectangle((x - 3, y - 3, x + cell + 2, y + cell + 2), outline=colour, width=3)
        lines = _wrap(draw, caption, font, cell)
        if len(lines) > caption_lines:
            lines = lines[: caption_lines - 1] + [lines[caption_lines - 1] + " …"]
        for j, text in enumerate(lines):
            draw.text((x, y + cell + 3 + j * line_height), text, fill=(20, 20, 20), font=font)
    return grid
