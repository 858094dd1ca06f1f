"""`--data SPEC` -> a dataset. Every image source yields {"image": (3, S, S) in [-1, 1], "caption": str}.

    shapes[:SPLIT]      the Shapes world (default; split train, val, test or novel)
    emoji[:SPLIT]       Twemoji images with their names (optional extra; split train or test)
    folder:DIR          DIR/captions.jsonl + images
    shards:DIR|FILE     img2dataset-style .tar shards
    embeddings:DIR      precomputed CLIP embeddings (img_emb/, text_emb/ .npy shards)
"""

from __future__ import annotations

import numpy as np
from torch.utils.data import Dataset

from ..world import ATTRIBUTES, ShapesDataset, perturb
from ..world.counterfactual import CHANGES, counterfactual
from ..world.dataset import scene_tensor
from ..world.scene import FORMS, sample_scene
from .embeddings import EmbeddingShards
from .emoji import EmojiDataset
from .folder import CaptionFolder
from .shards import TarShards

KINDS = ("shapes", "emoji", "folder", "shards", "embeddings")
SHAPES_LENGTH = 10_000_000  # the world is endless; a run draws scenes 0 .. N-1 of its split in order
# With form weights, item i is the first accepted of the world's scenes i * FORM_PROBES .. i * FORM_PROBES + 7, or the
# last if none is (at weights (1, 3, 3, 2), whose mean acceptance is 0.75, one item in 16,000)
FORM_PROBES = 8


class ShapesItems(Dataset):
    """The Shapes world in the common item format.

    With `negatives` > 0, each item also carries that many hard-negative captions: the true caption
    with one attribute changed (world/perturb.py), never naming a held-out pair, drawn with a generator
    seeded by the index so that they are the same on every run (and after a resume). Attributes are tried
    in a random order, weighted by `negative_weights` (one weight per world ATTRIBUTE; equal by default):
    weight goes where the model is weak, since a negative it already rejects teaches it nothing.

    With `form_weights` (relative weights of the world's FORMS: single, pair, list, count), scenes are drawn in
    those proportions instead of the contract's equal ones: item i is the first of the world's scenes
    i * 8 .. i * 8 + 7 that passes a test, seeded by i, accepting a scene of form f with probability
    w_f / max(w) (rejection sampling; the world draws each form with p = 1/4, so the accepted ones come in
    proportion to w). Items never share a scene, and stay the same on every run and after a resume.

    With `change_weights` (one weight per world/counterfactual.py CHANGE), each item also carries
    "negative_image": its scene changed in one way that makes the caption false (the right objects in another
    layout, a colour or shape changed, colours traded between two objects, an object left out, the other
    background), the change drawn by those weights among those that apply, seeded by the index.
    """

    def __init__(self, split: str, *, size: int, length: int = SHAPES_LENGTH, negatives: int = 0,
                 negative_weights: tuple[float, ...] | None = None,
                 form_weights: tuple[float, ...] | None = None,
                 change_weights: tuple[float, ...] | None = None):
        self.length = length
        changes = _weights("change_weights", change_weights, "change", CHANGES)
        self.changes = None if changes is None else changes / changes.sum()
        forms = _weights("form_weights", form_weights, "form", FORMS)
        self.accept = None if forms is None else dict(zip(FORMS, forms / forms.max()))
        self.world = ShapesDataset(split, size=size, length=length * (FORM_PROBES if self.accept else 1))
        self.negatives = negatives
        weights = _weights("negative_weights", negative_weights, "attribute", ATTRIBUTES)
        self.weights = None if weights is None else weights / weights.sum()

    def __len__(self) -> int:
        return self.length

    def world_index(self, i: int) -> int:
        """Which of the world's scenes item i shows (i itself without form weights)."""
        if self.accept is None:
            return i
        rng = np.random.default_rng([0xF0F, self.world.start + i])
        first = i * FORM_PROBES
        for j in range(first, first + FORM_PROBES - 1):
            if rng.random() < self.accept[sample_scene(self.world.split, self.world.start + j).form]:
                return j
        return first + FORM_PROBES - 1

    def __getitem__(self, i: int) -> dict:
        if not -self.length <= i < self.length:
            raise IndexError(f"index {i} out of range for {self.length} items")
        image, caption, scene = self.world[self.world_index(i % self.length)]
        item = {"image": image, "caption": caption}
        if self.negatives:
            rng = np.random.default_rng([0x4E6, self.world.start + i % self.length])
            if self.weights is None:
                order = rng.permutation(len(ATTRIBUTES))
            else:  # successive weighted draws without replacement
                order = rng.choice(len(ATTRIBUTES), size=len(ATTRIBUTES), replace=False, p=self.weights)
            found = []
            for k in order:
                wrong = perturb(scene, ATTRIBUTES[k], rng, avoid_held_out=True)
                if wrong is not None:
                    found.append(wrong)
                if len(found) == self.negatives:
                    break
            item["negatives"] = found
        if self.changes is not None:
            item["negative_image"] = self._negative_image(scene, i % self.length)
        return item

    def _negative_image(self, scene, i: int):
        rng = np.random.default_rng([0x1A6, self.world.start + i])
        for k in rng.choice(len(CHANGES), size=len(CHANGES), replace=False, p=self.changes):
            other = counterfactual(scene, CHANGES[k], rng)
            if other is not None:
                return scene_tensor(other, self.world.size)
        raise RuntimeError(f"no change makes the caption {scene.caption!r} false")  # a colour change always does


def _weights(name: str, values, what: str, labels: tuple[str, ...]) -> np.ndarray | None:
    """`values` as an array of len(labels) finite positive weights (None stays None); else a ValueError naming them."""
    if values is None:
        return None
    w = np.asarray(values, float)
    if w.shape != (len(labels),) or not np.isfinite(w).all() or (w <= 0).any():
        raise ValueError(f"{name} must be {len(labels)} positive numbers, one per {what} {labels}; got {values}")
    return w


def make_dataset(spec: str, *, size: int = 64) -> Dataset:
    kind, _, arg = spec.partition(":")
    if kind == "shapes":
        return ShapesItems(arg or "train", size=size)
    if kind == "emoji":
        return EmojiDataset(arg or "train", size=size)
    if kind in ("folder", "shards", "embeddings") and not arg:
        raise ValueError(f"data source {spec!r} needs a path: '{kind}:PATH'")
    if kind == "folder":
        return CaptionFolder(arg, size=size)
    if kind == "shards":
        return TarShards(arg, size=size)
    if kind == "embeddings":
        return EmbeddingShards(arg)
    raise ValueError(f"unknown data source {spec!r}: expected one of {', '.join(KINDS)} (see --help)")
