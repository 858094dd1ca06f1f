"""Batches as a pure function of their position, so a resumed run reads exactly what it would have read.

Micro-batch k of rank r (of `world` ranks) holds the dataset positions
    p = (k * world + r) * batch_size + i,   i = 0 .. batch_size - 1,
so ranks see disjoint shards of one global order. With `shuffle`, position p maps to item
perm_e[p mod n] of epoch e = p // n, where perm_e is drawn from (seed, e) alone; without it, to p mod n
(the Shapes world needs no shuffling: each index is already a fresh random scene).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler


class ResumableBatchSampler(Sampler[list[int]]):
    def __init__(self, n: int, *, batch_size: int, start_batch: int = 0, num_batches: int | None = None,
                 shuffle: bool = False, seed: int = 0, rank: int = 0, world: int = 1):
        if n < 1 or batch_size < 1 or start_batch < 0 or not 0 <= rank < world:
            raise ValueError(f"bad sampler arguments: n={n}, batch_size={batch_size}, start_batch={start_batch}, "
                             f"rank={rank}, world={world}")
        self.n, self.batch_size, self.start_batch, self.num_batches = n, batch_size, start_batch, num_batches
        self.shuffle, self.seed, self.rank, self.world = shuffle, seed, rank, world
        self._perm: tuple[int, torch.Tensor] | None = None

    def _item(self, position: int) -> int:
        epoch, offset = divmod(position, self.n)
        if not self.shuffle:
            return offset
        if self._perm is None or self._perm[0] != epoch:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._perm = (epoch, torch.randperm(self.n, generator=g))
        return int(self._perm[1][offset])

    def batch(self, k: int) -> list[int]:
        first = (k * self.world + self.rank) * self.batch_size
        return [self._item(first + i) for i in range(self.batch_size)]

    def __iter__(self) -> Iterator[list[int]]:
        k = self.start_batch
        while self.num_batches is None or k < self.start_batch + self.num_batches:
            yield self.batch(k)
            k += 1

    def __len__(self) -> int:
        if self.num_batches is None:
            raise TypeError("an endless sampler has no length")
        return self.num_batches
