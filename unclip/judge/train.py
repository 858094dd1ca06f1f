"""Training the judge on the engine: `unclip train judge --preset tiny --clip DIR --run-dir DIR`.

The judge reads the CLIP given by --clip (the pipeline's), frozen. Every training scene brings its true caption,
`negatives` hard-negative captions (one attribute made false, world/perturb.py, weighted towards relations, which
the CLIP reads worst) and one easy negative (another scene's caption). The loss is the binary cross-entropy of
image-text matching (ALBEF §3.2), the positives weighted to balance the negatives, so that a logit means the same for
any image: the pipeline compares it across candidate images of one caption, not across captions of one image. Half
the images are blurred and noised a little, as the decoder's drawings are.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F

from ..clip import CLIP, load_clip
from ..data import collate_image_caption
from ..data.sources import ShapesItems
from ..train import TrainConfig, Trainer, refuse_other_train_config
from ..train.overrides import with_train_changes
from .config import JudgeConfig, preset
from .model import Judge
from .weights import save_judge


@dataclass(frozen=True)
class JudgeRecipe:
    model: JudgeConfig
    train: TrainConfig
    negatives: int  # hard-negative captions per scene
    # how often each world attribute (colour, shape, size, count, relation, position, background) is the one a
    # negative changes, relative
    negative_weights: tuple[float, ...]
    corrupt: float = 0.5  # the share of images blurred (sigma up to 1 px) and noised (sigma up to 0.1)
    # relative weights of the world's forms (single, pair, list, count) among the training scenes (ShapesItems)
    form_weights: tuple[float, ...] | None = None
    # with these (one per world/counterfactual.py CHANGE, relative), every scene also brings a hard-negative image: the
    # scene changed so that its true caption is false of it, scored against that caption
    change_weights: tuple[float, ...] | None = None


RECIPES: dict[str, JudgeRecipe] = {
    # Relations are what the pipeline's CLIP reads worst and what a judge must add: a first run with relation
    # negatives at weight 4 and every form equally often (2 layers) read the other attributes of real val scenes right
    # 0.97 to 1.00 of the time after 1,000 steps but relations 0.77 (docs/reranking.md). So pairs, the one form with a
    # relation, come three times as often, and a relation is the attribute a negative changes most often. Measured
    # (2,500 steps, about 37 min on 2 threads): real val scenes' relations 0.816 (the CLIP's cosine 0.739); as
    # models/shapes-tiny's re-ranker 0.742 vs 0.724 for the CLIP on the 500 test captions (docs/reranking.md).
    "tiny": JudgeRecipe(model=preset("tiny"), negatives=3,
                        negative_weights=(1.0, 2.0, 1.0, 2.0, 8.0, 2.0, 0.5), form_weights=(1.0, 3.0, 2.0, 1.0),
                        train=TrainConfig(steps=2500, batch_size=64, lr=5e-4, warmup_steps=100, weight_decay=0.05,
                                          betas=(0.9, 0.98), ema_decay=None, checkpoint_every=250, log_every=25,
                                          seed=0)),
}
# The same with a hard-negative image for every scene (world/counterfactual.py): the candidates the judge chooses
# among are images of one caption, and a decoder's commonest miss on a pair is the right objects in the wrong
# layout, so a layout change is drawn most often (weights: layout, colour, shape, binding, drop, background).
# Measured (2,500 steps, 1 h 02 min on 2 threads): level with "tiny" on the pipeline's candidates (-0.008 to +0.010 on
# four sets of 500 captions), relations of real val scenes 0.831 against 0.816; not shipped (docs/reranking.md).
RECIPES["tiny-images"] = replace(RECIPES["tiny"], change_weights=(6.0, 1.0, 1.0, 2.0, 1.0, 0.5))
# The same judge given the pixels under each grid state (JudgeConfig.patch): the CLIP's output states read the real
# scenes' relations 0.82-0.83 of the time even for a judge trained on them (docs/reranking.md). Measured (2,500 steps,
# 45 min): relations of real val scenes 0.808, the candidates kept -0.014 to +0.010 against "tiny"; not shipped.
RECIPES["tiny-pixels"] = replace(RECIPES["tiny-images"], model=preset("tiny-pixels"))


def corrupt(images: torch.Tensor, *, share: float, generator: torch.Generator) -> torch.Tensor:
    """A random `share` of images (B, 3, S, S) in [-1, 1] blurred by a Gaussian of sigma U(0, 1) px (a 3x3 kernel)
    and noised with sigma U(0, 0.1); the rest as they were."""
    b = len(images)
    chosen = torch.rand(b, generator=generator) < share  # (B,)
    sigma = torch.rand(b, generator=generator).clamp(min=1e-3)  # (B,)
    taps = torch.exp(-torch.tensor([1.0, 0.0, 1.0])[None] / (2 * sigma[:, None] ** 2))  # (B, 3)
    taps = taps / taps.sum(dim=1, keepdim=True)
    kernel = (taps[:, :, None] * taps[:, None, :]).repeat_interleave(3, dim=0)[:, None]  # (3B, 1, 3, 3)
    flat = F.pad(images.reshape(1, 3 * b, *images.shape[2:]), (1, 1, 1, 1), mode="replicate")
    blurred = F.conv2d(flat, kernel.to(images.dtype), groups=3 * b).reshape(images.shape)
    noise = torch.randn(images.shape, generator=generator) * (0.1 * torch.rand(b, generator=generator))[:, None,
                                                                                                          None, None]
    out = (blurred + noise.to(images.dtype)).clamp(-1, 1)
    return torch.where(chosen[:, None, None, None], out, images)


def judge_loss(clip: CLIP, recipe: JudgeRecipe):
    def loss_fn(model, batch, generator) -> dict[str, torch.Tensor]:
        images, captions, negatives = batch["image"], list(batch["caption"]), list(batch["negatives"])
        b, device = len(captions), images.device
        if len(negatives) != b * recipe.negatives:
            raise ValueError(f"{len(negatives)} hard negatives for {b} scenes, expected {recipe.negatives} each")
        easy = [captions[(i + 1) % b] for i in range(b)]  # the next scene's caption (scenes never repeat)
        texts = captions + negatives + easy
        index = torch.cat([torch.arange(b), torch.arange(b).repeat_interleave(recipe.negatives), torch.arange(b)])
        if "negative_image" in batch:  # (B, 3, S, S): image j is scored against caption j, which is false of it
            images = torch.cat([images, batch["negative_image"].to(device)])
            texts, index = texts + captions, torch.cat([index, b + torch.arange(b)])
        images = corrupt(images.cpu(), share=recipe.corrupt, generator=generator).to(device)
        labels = torch.cat([torch.ones(b), torch.zeros(len(texts) - b)]).to(device)
        tokens = clip.tokenizer(texts).to(device)
        logits = model.score(clip, images=images, tokens=tokens, image_index=index.to(device))  # (b (2 + negatives),)
        weights = torch.where(labels > 0, (len(texts) - b) / b, 1.0)  # positives weigh as much as all negatives
        loss = F.binary_cross_entropy_with_logits(logits, labels, weight=weights, reduction="sum") / weights.sum()
        with torch.no_grad():
            pos, hard = logits[:b], logits[b:b + len(negatives)].view(b, recipe.negatives)
            ranked = (pos[:, None] > hard).float().mean()  # the true caption above a hard negative of its scene
            agree = ((logits > 0) == (labels > 0)).float().mean()
            out = {"loss": loss, "hard_pairs": ranked, "accuracy": agree}
            if "negative_image" in batch:  # the true image above its changed copy, for the true caption
                out["image_pairs"] = (pos > logits[-b:]).float().mean()
        return out

    return loss_fn


def train_judge(*, preset_name: str, clip_dir: str | os.PathLike, run_dir: str | os.PathLike,
                max_steps: int | None = None, device: str = "cpu", progress: bool = True,
                train_changes: Mapping[str, object] | None = None, max_seconds: float | None = None) -> Path:
    """Train (or resume) a judge on the frozen CLIP in `clip_dir` (the pipeline's); writes RUN_DIR/model and returns
    its path. `train_changes` and `max_seconds` as for the other stages."""
    if preset_name not in RECIPES:
        raise ValueError(f"unknown judge training preset {preset_name!r}: expected one of {', '.join(RECIPES)}")
    recipe, run_dir = RECIPES[preset_name], Path(run_dir)
    recipe = replace(recipe, train=with_train_changes(recipe.train, train_changes))
    refuse_other_train_config(run_dir, recipe.train)
    clip = load_clip(clip_dir, device=device).requires_grad_(False)  # frozen, in eval mode (its batch norms too)
    config = recipe.model.with_(vision_width=clip.config.vision_width, text_width=clip.config.text_width)
    torch.manual_seed(recipe.train.seed)
    model = Judge(config)
    dataset = ShapesItems("train", size=clip.config.image_size, negatives=recipe.negatives,
                          negative_weights=recipe.negative_weights, form_weights=recipe.form_weights,
                          change_weights=recipe.change_weights)
    trainer = Trainer(model=model, loss_fn=judge_loss(clip, recipe), dataset=dataset, config=recipe.train,
                      run_dir=run_dir, model_config=config.to_dict() | {
                          "negatives": recipe.negatives, "negative_weights": list(recipe.negative_weights),
                          "corrupt": recipe.corrupt, "clip": str(clip_dir)}
                      | ({"form_weights": list(recipe.form_weights)} if recipe.form_weights else {})
                      | ({"change_weights": list(recipe.change_weights)} if recipe.change_weights else {}),
                      collate_fn=collate_image_caption, device=device, progress=progress)
    trainer.fit(max_steps, max_seconds=max_seconds)
    out = run_dir / "model"
    if trainer.is_main:
        save_judge(out, trainer.module)
    return out
