"""Image-caption tar shards in the img2dataset / webdataset layout: 000000.tar holding KEY.jpg|png + KEY.txt.

Why not the `webdataset` library: it streams shards as an iterable, and the trainer's exact resume
needs random access by position (batches are a pure function of their index, data/sampler.py).
The format is plain tar, so this reads it with the standard library: each shard's members are indexed
once, then items are read by (shard, member). A shard that cannot be read is skipped and counted
(`bad_shards`); an unreadable image yields None, dropped and counted by the collate function.
"""

from __future__ import annotations

import os
import tarfile
from pathlib import Path

from torch.utils.data import Dataset

from .images import load_image, to_tensor

IMAGE_EXTS = ("jpg", "jpeg", "png", "webp")


def _split(name: str) -> tuple[str, str]:
    """webdataset's rule: the key is the path up to the first dot of the basename, the rest its extension."""
    folder, base = os.path.split(name)
    stem, _, ext = base.partition(".")
    return os.path.join(folder, stem), ext.lower()


class TarShards(Dataset):
    def __init__(self, source: str | os.PathLike, *, size: int):
        source = Path(source)
        shards = sorted(source.glob("*.tar")) if source.is_dir() else [source]
        if not shards:
            raise FileNotFoundError(f"no .tar shards in {source}")
        self.size = size
        self.shards: list[Path] = []
        self.items: list[tuple[int, tarfile.TarInfo, tarfile.TarInfo]] = []  # (shard, image member, caption member)
        self.bad_shards: list[str] = []
        for shard in shards:
            try:
                with tarfile.open(shard) as tar:
                    groups: dict[str, dict[str, tarfile.TarInfo]] = {}
                    for member in tar.getmembers():
                        if member.isfile():
                            key, ext = _split(member.name)
                            groups.setdefault(key, {})[ext] = member
            except (tarfile.TarError, OSError, EOFError) as error:
                self.bad_shards.append(f"{shard}: {error}")
                continue
            index = len(self.shards)
            self.shards.append(shard)
            for key in sorted(groups):
                parts = groups[key]
                image = next((parts[e] for e in IMAGE_EXTS if e in parts), None)
                if image is not None and "txt" in parts:
                    self.items.append((index, image, parts["txt"]))
        if not self.items:
            raise ValueError(f"no image-caption pairs in {source} ({len(self.bad_shards)} unreadable shard(s))")
        self._open: dict[int, tuple[int, tarfile.TarFile]] = {}  # shard -> (pid, handle): reopened per worker

    def _tar(self, shard: int) -> tarfile.TarFile:
        pid, handle = self._open.get(shard, (None, None))
        if pid != os.getpid():
            handle = tarfile.open(self.shards[shard])
            self._open[shard] = (os.getpid(), handle)
        return handle

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict | None:
        shard, image_member, text_member = self.items[i]
        try:
            tar = self._tar(shard)
            image = load_image(tar.extractfile(image_member).read())
            caption = tar.extractfile(text_member).read().decode("utf-8").strip()
            return {"image": to_tensor(image, self.size), "caption": caption}
        except (ValueError, tarfile.TarError, OSError, UnicodeDecodeError):
            return None

    def __getstate__(self):  # DataLoader workers get the index, not open file handles
        return self.__dict__ | {"_open": {}}
