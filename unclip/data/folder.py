"""A folder of images with their captions, as users keep them: DIR/captions.jsonl + the image files.

captions.jsonl holds one {"file": <path relative to DIR>, "caption": <text>} a line (the same keys as
the prompts.jsonl manifests unclip writes). Unreadable images yield None, which the collate function
drops and counts: a corrupt file never stops a run.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from torch.utils.data import Dataset

from .images import load_image, to_tensor

CAPTIONS = "captions.jsonl"


class CaptionFolder(Dataset):
    def __init__(self, root: str | os.PathLike, *, size: int):
        self.root, self.size = Path(root), size
        path = self.root / CAPTIONS
        if not path.is_file():
            raise FileNotFoundError(f"no {CAPTIONS} in {self.root}: expected one {{'file', 'caption'}} object a line")
        self.items: list[tuple[str, str]] = []
        self.bad_lines: list[str] = []
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                self.items.append((str(record["file"]), str(record["caption"])))
            except (json.JSONDecodeError, KeyError, TypeError) as error:
                self.bad_lines.append(f"{path}:{number}: {error}")
        if not self.items:
            raise ValueError(f"{path} lists no images")

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict | None:
        file, caption = self.items[i]
        try:
            return {"image": to_tensor(load_image(self.root / file), self.size), "caption": caption}
        except (ValueError, FileNotFoundError):
            return None
