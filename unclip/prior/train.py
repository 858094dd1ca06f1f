"""Training the priors on the engine: `unclip train prior|ar-prior --preset tiny --clip CLIP_DIR --run-dir DIR`.

Both priors learn p(z_i | caption) from pairs embedded once by a frozen CLIP (embed.py): Shapes-world
training scenes by default, or precomputed embedding shards (`--data embeddings:DIR`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from ..clip import CLIP, load_clip
from ..data.sources import ShapesItems
from ..train import TrainConfig, Trainer, refuse_other_train_config
from ..train import distributed
from ..train.distributed import DistContext
from ..train.overrides import with_train_changes
from .autoregressive import ARPrior
from .config import ARPriorConfig, DiffusionPriorConfig
from .diffusion import DiffusionPrior
from .embed import EmbeddingRows, cached_embeddings, embed_items, from_shards, text_conditioning
from .weights import load_prior, save_prior


EMBEDDINGS_FILE = "embeddings.safetensors"  # RUN_DIR/EMBEDDINGS_FILE: the training pairs, embedded once


@dataclass(frozen=True)
class PriorRecipe:
    model: DiffusionPriorConfig | ARPriorConfig
    train: TrainConfig
    pairs: int  # training scenes embedded once and reused every epoch
    pairs_from: int = 0  # the index of the first of them: a warm restart can train on scenes its start never saw


_TRAIN = dict(batch_size=256, lr=1e-3, warmup_steps=100, weight_decay=0.05, betas=(0.9, 0.99), ema_decay=0.999,
              checkpoint_every=500, log_every=50, shuffle=True, seed=0)
RECIPES: dict[str, dict[str, PriorRecipe]] = {
    "diffusion": {
        "tiny": PriorRecipe(model=DiffusionPriorConfig(), pairs=100_000, train=TrainConfig(steps=2000, **_TRAIN)),
        # "tiny" for 5,000 steps: the control for "tiny-tok-long", which differs from it in the token embedding alone.
        # Through the pipeline it scores as tiny-tok-long does overall (0.654 vs 0.652 on the 500 test captions, 0.598
        # vs 0.604 on val), with fewer single objects (0.887 vs 0.937) and positions (0.761 vs 0.866) right.
        "tiny-long": PriorRecipe(model=DiffusionPriorConfig(), pairs=100_000, train=TrainConfig(steps=5000, **_TRAIN)),
        # "tiny" with the prior's own token embedding beside CLIP's token states (DiffusionPriorConfig), which
        # cannot tell "left" from "right"; the same data and schedule.
        "tiny-tok": PriorRecipe(model=DiffusionPriorConfig(token_embedding=True), pairs=100_000,
                                train=TrainConfig(steps=2000, **_TRAIN)),
        # "tiny-tok" for 2.5 times the steps (its loss was still falling at step 2,000).
        "tiny-tok-long": PriorRecipe(model=DiffusionPriorConfig(token_embedding=True), pairs=100_000,
                                     train=TrainConfig(steps=5000, **_TRAIN)),
        # A second learning-rate cycle for a trained "tiny-tok-long" (a warm restart, Loshchilov & Hutter 2017; run
        # with `--init-from` it): half the peak learning rate, 5,000 steps on the next 100,000 training scenes. Through
        # the pipeline no better: 0.646 vs 0.652 on the 500 test captions, 0.610 vs 0.604 on val (2026-12-06).
        "tiny-tok-ft": PriorRecipe(model=DiffusionPriorConfig(token_embedding=True), pairs=100_000, pairs_from=100_000,
                                   train=TrainConfig(steps=5000, **(_TRAIN | dict(lr=5e-4, seed=1)))),
        # "tiny-tok-long" at three times the parameters (width 192, 6 layers of 6 heads: 3.2M): the 5,000-step prior's
        # loss on scenes it never saw matched its training loss, and a second cycle on new scenes gained nothing
        # through the pipeline, so the question is whether capacity, not data or steps, is what limits it.
        # Shipped since 2026-12-07 (night): 1 h 39 min on 2 threads with the embedding, final loss 0.0648 (the
        # 1.1M prior's on unseen scenes: 0.069). Through the pipeline 0.658 vs 0.640 on the 500 test captions
        # (+0.018 +- 0.018) and 0.650 vs 0.640 on 500 val (+0.010 +- 0.019); single objects 0.972 vs 0.887 (val 0.979
        # vs 0.908), positions 0.940 vs 0.761, relations no better. docs/priors.md, "A wider prior".
        "tiny-tok-wide": PriorRecipe(model=DiffusionPriorConfig(width=192, layers=6, heads=6, token_embedding=True),
                                     pairs=100_000, train=TrainConfig(steps=5000, **_TRAIN)),
    },
    "autoregressive": {
        # Its sequences are longer (caption + ~20 codes), so fewer steps fit the same CPU time.
        "tiny": PriorRecipe(model=ARPriorConfig(), pairs=100_000, train=TrainConfig(steps=1500, **_TRAIN)),
        # "tiny" in two thirds of the steps, for the two-hour pipeline (shapes-2h), which samples with the diffusion
        # prior by default.
        "tiny-short": PriorRecipe(model=ARPriorConfig(), pairs=100_000, train=TrainConfig(steps=1000, **_TRAIN)),
    },
}


def prior_loss(clip: CLIP):
    def loss_fn(model, batch, generator) -> dict[str, torch.Tensor]:
        states, mask = text_conditioning(clip, batch["tokens"])
        diffusion = isinstance(getattr(model, "module", model), DiffusionPrior)  # unwrapped from DDP
        tokens = {"text_tokens": batch["tokens"]} if diffusion else {}
        loss = model.loss(image_embedding=batch["image_embedding"], text_embedding=batch["text_embedding"],
                          text_states=states, text_mask=mask, generator=generator, **tokens)
        return {"loss": loss}

    return loss_fn


def _load_initial_weights(model: DiffusionPrior | ARPrior, directory: str | os.PathLike) -> None:
    """Copy a saved prior's weights into `model`, refusing one of another kind or config."""
    saved = load_prior(directory)
    if type(saved) is not type(model) or saved.config != model.config:
        mine, theirs = model.config.to_dict(), saved.config.to_dict()
        diff = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
        raise ValueError(f"--init-from {directory}: a {type(saved).__name__} whose config differs from the preset's "
                         f"{type(model).__name__} (in {diff or 'kind'}); start from a prior of this preset's config")
    model.load_state_dict(saved.state_dict(), strict=True)


def training_pairs(run_dir: Path, clip: CLIP, *, data: str, pairs: int, progress: bool,
                   device: str | torch.device, first: int = 0) -> dict[str, torch.Tensor]:
    if data.startswith("embeddings:"):
        return from_shards(data.partition(":")[2], context_length=clip.config.context_length)
    if not (data == "shapes" or data.startswith("shapes:")):
        raise ValueError(f"prior data must be shapes[:SPLIT] or embeddings:DIR, got {data!r}")
    items = ShapesItems(data.partition(":")[2] or "train", size=clip.config.image_size)
    return cached_embeddings(run_dir / EMBEDDINGS_FILE, lambda: embed_items(
        clip, items, n=pairs, first=first, progress=progress, device=device))


def train_prior(*, kind: str, preset_name: str, clip_dir: str | os.PathLike, run_dir: str | os.PathLike,
                max_steps: int | None = None, data: str = "shapes", device: str = "cpu", progress: bool = True,
                dist_ctx: DistContext | None = None, init_from: str | os.PathLike | None = None,
                train_changes: Mapping[str, object] | None = None, max_seconds: float | None = None) -> Path:
    """Train (or resume) a prior of `kind` ("diffusion" or "autoregressive"); returns RUN_DIR/model.

    `init_from` names a saved prior (a `save_prior` directory) of the preset's exact config to start from instead
    of random weights (a warm restart); resuming needs the same directory. `train_changes` replace fields of the
    preset's TrainConfig (`unclip train --set`; overrides.py); `max_seconds` stops the run early, checkpointed
    (Trainer.fit)."""
    if kind not in RECIPES:
        raise ValueError(f"unknown prior kind {kind!r}: expected one of {', '.join(RECIPES)}")
    if preset_name not in RECIPES[kind]:
        raise ValueError(f"unknown {kind} prior preset {preset_name!r}: expected one of {', '.join(RECIPES[kind])}")
    recipe, run_dir = RECIPES[kind][preset_name], Path(run_dir)
    recipe = replace(recipe, train=with_train_changes(recipe.train, train_changes))
    refuse_other_train_config(run_dir, recipe.train)  # before minutes of loading
    run_dir.mkdir(parents=True, exist_ok=True)
    ctx = dist_ctx or distributed.current()
    clip = load_clip(clip_dir, device=device).requires_grad_(False)
    def read_pairs(*, progress: bool) -> dict[str, torch.Tensor]:
        return training_pairs(run_dir, clip, data=data, pairs=recipe.pairs, first=recipe.pairs_from,
                              progress=progress, device=device)

    if ctx.rank == 0:  # rank 0 embeds the pairs once; the other ranks read its file
        pairs = read_pairs(progress=progress)
    distributed.barrier(ctx)
    if ctx.rank != 0:
        pairs = read_pairs(progress=False)
    cfg = recipe.model.with_(embed_dim=clip.config.embed_dim, text_width=clip.config.text_width,
                             context_length=clip.config.context_length)
    if isinstance(cfg, DiffusionPriorConfig):
        cfg = cfg.with_(vocab_size=clip.config.vocab_size)
    torch.manual_seed(recipe.train.seed)
    if kind == "diffusion":
        model = DiffusionPrior(cfg)
    else:  # the PCA and the quantisers are fitted on the training pairs (a function of them: resumable)
        model = ARPrior.from_embeddings(cfg, image_embedding=pairs["image_embedding"],
                                        text_embedding=pairs["text_embedding"])
        cfg = model.config
    extra = {"pairs_from": recipe.pairs_from} if recipe.pairs_from else {}
    if init_from is not None:
        _load_initial_weights(model, init_from)
        extra = extra | {"init_from": str(init_from)}
    trainer = Trainer(model=model, loss_fn=prior_loss(clip), dataset=EmbeddingRows(pairs), config=recipe.train,
                      run_dir=run_dir, model_config={"kind": kind, **cfg.to_dict(), "clip": str(clip_dir),
                                                     "data": data, "pairs": recipe.pairs, **extra},
                      device=device, progress=progress, dist_ctx=ctx)
    trainer.fit(max_steps, max_seconds=max_seconds)
    out = run_dir / "model"
    if trainer.is_main:
        save_prior(out, trainer.ema.shadow if trainer.ema is not None else trainer.module)
    return out
