"""Training a CLIP on the engine: `unclip train clip --preset tiny --run-dir DIR`.

The tokenizer is the packaged BPE learned from Shapes-world training captions (copied into the run
directory, so a resumed run reads the same one). On the Shapes world each image also brings hard-negative captions
(its caption with one attribute changed), which the image must out-score: in-batch negatives almost
never differ in a single attribute, and telling "left of" from "right of" is what the prior and the
decoder will need.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from ..data import collate_image_caption, make_dataset
from ..data.sources import ShapesItems
from ..tokenizer import Tokenizer
from ..train import TrainConfig, Trainer, refuse_other_train_config
from ..train import distributed
from ..train.distributed import DistContext
from ..train.overrides import with_train_changes
from .config import CLIPConfig, preset
from .model import CLIP, INITIAL_LOGIT_SCALE, contrastive_loss
from .weights import save_clip


@dataclass(frozen=True)
class CLIPRecipe:
    model: CLIPConfig
    train: TrainConfig
    negatives: int  # hard-negative captions per Shapes image
    # how often each world attribute (colour, shape, size, count, relation, position, background) is the one
    # a negative changes, relative; None: equally often
    negative_weights: tuple[float, ...] | None = None
    # the contrastive temperature's starting value exp(t) (CLIP §2.5 starts at 1 / 0.07). Adam moves log-scale
    # by at most about lr a step, so a short run ends close to where it started: 1,000 steps at lr 1e-3 took
    # 14.3 to 23.2, still rising; a short recipe starts it higher.
    initial_logit_scale: float = INITIAL_LOGIT_SCALE


# relative weights of colour, shape, size, count, relation, position, background (world ATTRIBUTES order)
TINY_NEGATIVE_WEIGHTS = (0.5, 3.0, 1.0, 2.0, 4.0, 3.0, 0.25)

RECIPES: dict[str, CLIPRecipe] = {
    # Sized for the budget (20 minutes): 16.5 to 27 minutes on 2-core VMs of the same kind, whose speed
    # varies (docs/clip.md; 1,200 steps fit but miss the accuracy: 8-way 0.884), the conv-stem image tower of preset
    # "tiny". Negatives weighted towards what a short run reads worst (shape, relation, position; colour and
    # background are read perfectly within a few hundred steps), temperature started at 30: measured 8-way 0.912,
    # recall@1 0.957 (docs/clip.md); on the patch tower, 1,000 steps, weighting and temperature took the
    # 8-way from 0.463 to 0.511.
    "tiny": CLIPRecipe(model=preset("tiny"), negatives=2, negative_weights=TINY_NEGATIVE_WEIGHTS,
                       initial_logit_scale=30.0, train=TrainConfig(
        steps=1500, batch_size=128, lr=1e-3, warmup_steps=100, weight_decay=0.1, betas=(0.9, 0.98),
        ema_decay=None, checkpoint_every=250, log_every=25, seed=0)),
    # The first tiny recipe (equal negative weights, temperature from 1 / 0.07) for 3x the steps (about 50
    # minutes on a 2-core CPU; 3.5 minutes on an H100: docs/clip.md).
    "tiny-long": CLIPRecipe(model=preset("tiny-vit"), negatives=2, train=TrainConfig(
        steps=3000, batch_size=128, lr=1e-3, warmup_steps=100, weight_decay=0.1, betas=(0.9, 0.98),
        ema_decay=None, checkpoint_every=250, log_every=25, seed=0)),
    # The evaluation encoder (issue 9): another size and seed; about 30 minutes on one thread of this CPU.
    "eval": CLIPRecipe(model=preset("eval"), negatives=3, train=TrainConfig(
        steps=1000, batch_size=96, lr=8e-4, warmup_steps=100, weight_decay=0.1, betas=(0.9, 0.98),
        ema_decay=None, checkpoint_every=250, log_every=25, seed=1)),
}


SHAPES_TOKENIZER = Path(__file__).resolve().parents[1] / "assets" / "shapes-bpe"


def tokenizer_for(run_dir: Path, recipe: CLIPRecipe) -> Tokenizer:
    """The run's tokenizer: its own copy if it has one, else the packaged Shapes BPE (copied into the run).

    The Shapes BPE ships with unclip rather than being trained per run: the tokenizers library's BPE
    trainer breaks ties in hash order, so two processes can learn different merges from the same
    captions, and then the same command on two run directories would not end with the same weights.
    (It was made by Tokenizer.train on train captions 0..19,999, vocab_size 768, context 24.)
    """
    saved = run_dir / "tokenizer"
    if (saved / "tokenizer.json").is_file():
        return Tokenizer.load(saved)
    tokenizer = Tokenizer.load(SHAPES_TOKENIZER)
    if tokenizer.context_length != recipe.model.context_length or tokenizer.vocab_size > recipe.model.vocab_size:
        raise ValueError(f"the packaged Shapes tokenizer (context {tokenizer.context_length}, vocab "
                         f"{tokenizer.vocab_size}) does not fit preset context {recipe.model.context_length}")
    tokenizer.save(saved)
    return tokenizer


def clip_loss(tokenizer: Tokenizer):
    def loss_fn(model, batch, generator) -> dict[str, torch.Tensor]:
        device = batch["image"].device
        captions, negatives = list(batch["caption"]), list(batch.get("negatives") or [])
        # true and hard-negative captions through the text tower in one pass: its length groups are then fuller
        # and closer to their own longest caption (less padding, larger matrix products)
        image, text, scale = model(batch["image"], tokenizer(captions + negatives).to(device))
        text, extra = text[:len(captions)], (text[len(captions):] if negatives else None)
        loss = contrastive_loss(image, text, scale, extra_text=extra)
        with torch.no_grad():
            accuracy = (image @ text.t()).argmax(1).eq(torch.arange(len(image), device=device)).float().mean()
        return {"loss": loss, "batch_accuracy": accuracy, "logit_scale": scale.detach()}

    return loss_fn


def train_clip(*, preset_name: str, run_dir: str | os.PathLike, max_steps: int | None = None,
               data: str = "shapes", device: str = "cpu", progress: bool = True,
               dist_ctx: DistContext | None = None, train_changes: Mapping[str, object] | None = None,
               max_seconds: float | None = None) -> Path:
    """Train (or resume) a CLIP; writes the final model to RUN_DIR/model and returns that path. `train_changes`
    replace fields of the preset's TrainConfig (`unclip train --set`; overrides.py); `max_seconds` stops the run
    early, checkpointed (Trainer.fit)."""
    if preset_name not in RECIPES:
        raise ValueError(f"unknown CLIP training preset {preset_name!r}: expected one of {', '.join(RECIPES)}")
    recipe, run_dir = RECIPES[preset_name], Path(run_dir)
    recipe = replace(recipe, train=with_train_changes(recipe.train, train_changes))
    refuse_other_train_config(run_dir, recipe.train)  # before minutes of loading
    run_dir.mkdir(parents=True, exist_ok=True)
    ctx = dist_ctx or distributed.current()
    if ctx.rank == 0:  # rank 0 puts the tokenizer in the run directory; the other ranks read it there
        tokenizer = tokenizer_for(run_dir, recipe)
    distributed.barrier(ctx)
    if ctx.rank != 0:
        tokenizer = Tokenizer.load(run_dir / "tokenizer")
    config = recipe.model.with_(vocab_size=tokenizer.vocab_size)
    torch.manual_seed(recipe.train.seed)
    model = CLIP(config)
    with torch.no_grad():
        model.logit_scale.fill_(math.log(recipe.initial_logit_scale))
    if data == "shapes" or data.startswith("shapes:"):
        dataset = ShapesItems(data.partition(":")[2] or "train", size=config.image_size, negatives=recipe.negatives,
                              negative_weights=recipe.negative_weights)
    else:
        dataset = make_dataset(data, size=config.image_size)
    trainer = Trainer(model=model, loss_fn=clip_loss(tokenizer), dataset=dataset, config=recipe.train,
                      run_dir=run_dir, model_config=config.to_dict() | {"data": data, "negatives": recipe.negatives}
                      | ({"negative_weights": list(recipe.negative_weights)} if recipe.negative_weights else {})
                      | ({"initial_logit_scale": recipe.initial_logit_scale}
                         if recipe.initial_logit_scale != INITIAL_LOGIT_SCALE else {}),
                      collate_fn=collate_image_caption, device=device, progress=progress, dist_ctx=ctx)
    trainer.fit(max_steps, max_seconds=max_seconds)
    model.tokenizer = tokenizer
    out = run_dir / "model"
    if trainer.is_main:
        save_clip(out, trainer.module)
    return out
