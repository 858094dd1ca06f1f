"""Guidance distillation: one decoder network that draws what the pipeline's guided decoder draws, at one network
evaluation a step instead of two.

The pipeline guides its decoder by a second network (autoguidance, Karras et al. 2024: guide + s * (decoder - guide))
or by classifier-free guidance (Ho & Salimans 2021), so each sampling step costs two evaluations. Meng et al. (2023,
"On distillation of guided diffusion models", §3.1, stage one) train a student to output the guided combination
directly. Here the student starts as a copy of the decoder and learns on the teacher's own sampling trajectories:

    unclip train decoder-distill --model models/shapes-tiny --run-dir DIR

For each batch of freshly rendered scenes (z_i and caption through the pipeline's frozen CLIP, as decoder training
draws them), the pipeline's guided decoder samples with its own sampler, steps and guidance, and every step's
(x_t, t, guided output) becomes a training row. The student reads the same x_t, t and conditioning and regresses the
guided output (MSE in the network's parameterisation, v here). A self-conditioned student (Analog Bits Alg. 2) reads
at step k the x0 estimate the guided output implied at step k - 1 (zeros at the first), which is what it will carry
itself when it samples alone: its own output is the guided one. Training on the steps the pipeline samples, not on
random timesteps, spends every update where the student will be used (the trajectories cost 7 guided evaluations
a scene without gradient, about a fifth of the student's forward and backward on the 7 rows).

The student is a plain Decoder saved with save_decoder; the pipeline keeps it as its `decoder_distilled` stage and
samples it unguided (pipeline.py), so the two saved evaluations a step buy more re-ranking candidates."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from ..data import collate_image_caption
from ..data.sources import ShapesItems
from ..train import TrainConfig, Trainer, refuse_other_train_config
from ..train import distributed
from .decoder import Decoder, run_sampler
from .train import _read_model_config, decoder_conditioning
from .weights import save_decoder


@dataclass(frozen=True)
class DistillRecipe:
    train: TrainConfig
    # the student's convolutions in NHWC (UNetConfig.channels_last, saved with it, so it samples that way): 1.2x the
    # shipped pipeline's sampling speed at a 64 px base on 2 threads (docs/distillation.md); only rounding changes
    channels_last: bool = True


# Batch 16 scenes = 7 x 16 rows a step at the shipped pipeline's 7 decoder steps. A fine-tune of the decoder's own
# weights: a fifth of its first cycle's peak learning rate, and an EMA short enough to leave the start behind. About
# 2.2 s a step on 2 threads of this 2-core CPU (docs/distillation.md).
DISTILL_RECIPES: dict[str, DistillRecipe] = {
    "tiny": DistillRecipe(train=TrainConfig(steps=1500, batch_size=16, lr=1e-4, warmup_steps=50, weight_decay=0.0,
                                            ema_decay=0.995, checkpoint_every=100, log_every=10, hook_every=0,
                                            seed=0)),
}


@torch.no_grad()
def guided_trajectory(pipe, *, z_i: torch.Tensor, caption: dict[str, torch.Tensor],
                      generator: torch.Generator | None) -> dict[str, torch.Tensor]:
    """The rows of one guided sampling run of the pipeline's decoder (its sampler, steps, guidance and guide, as
    generation decodes): x_t (S * B, C, H, W), t (S * B,), the x0 estimate carried into that step (zeros at the
    first) and the guided output there, step-major (rows k * B ... k * B + B - 1 are step k)."""
    teacher, cfg = pipe.decoder, pipe.config.decoder
    guided = teacher.denoiser(image_embedding=z_i, **caption, guidance_scale=cfg.guidance_scale,
                              guidance_interval=cfg.guidance_interval,
                              guide=pipe._guide(pipe.config.autoguidance))
    xs, ts, outs = [], [], []

    def recording(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        out = guided(x, t)
        xs.append(x)
        ts.append(t)
        outs.append(out)
        return out

    unet = teacher.config.unet
    shape = (len(z_i), unet.in_channels, unet.image_size, unet.image_size)
    run_sampler(recording, teacher.diffusion, shape, sampler=cfg.sampler, x_T=None, steps=cfg.steps, eta=0.0,
                threshold="static", generator=generator, device=z_i.device, dtype=z_i.dtype)
    carried = [torch.zeros_like(xs[0])] + [teacher._estimate(o, x, t) for x, t, o in zip(xs[:-1], ts[:-1], outs[:-1])]
    return {"x_t": torch.cat(xs), "t": torch.cat(ts), "carried": torch.cat(carried), "target": torch.cat(outs)}


def distillation_loss(pipe):
    """loss_fn(student, batch, generator) for the Trainer: the student's output on the teacher's trajectory rows
    against the guided output, mean squared error."""
    teacher = pipe.decoder

    def loss_fn(model, batch, generator) -> dict[str, torch.Tensor]:
        student = model.module if hasattr(model, "module") else model
        z_i, caption = decoder_conditioning(teacher, pipe.clip, batch["image"], batch["caption"])
        rows = guided_trajectory(pipe, z_i=z_i, caption=caption, generator=generator)
        steps = len(rows["t"]) // len(z_i)
        states, mask = student._caption(caption.get("text_states"), caption.get("text_mask"), caption.get("tokens"))
        cond = {"image_embedding": z_i, "text_states": states, "text_mask": mask}
        cond = {k: v.repeat(steps, *[1] * (v.ndim - 1)) for k, v in cond.items() if v is not None}  # step-major
        ones = torch.ones(len(rows["t"]), dtype=torch.bool, device=z_i.device)
        keeps = {k: ones for k, width in (("keep_image", student.config.unet.clip_dim),
                                          ("keep_text", student.config.unet.text_width)) if width is not None}
        carried = rows["carried"] if student.config.unet.self_condition else None
        out = student.net(rows["x_t"], rows["t"], **cond, **keeps, self_cond=carried)  # (S * B, C, H, W)
        return {"loss": F.mse_loss(out, rows["target"])}

    return loss_fn


def train_distilled_decoder(*, model_dir: str | os.PathLike, run_dir: str | os.PathLike, preset_name: str = "tiny",
                            max_steps: int | None = None, device: str = "cpu", progress: bool = True,
                            max_seconds: float | None = None) -> Path:
    """Distil the guided decoder of the pipeline in `model_dir` into one network (or resume); writes RUN_DIR/model
    (a Decoder directory, `unclip assemble --decoder-distilled` puts it into a pipeline) and returns that path. The
    student is the decoder's network, in the recipe's memory layout (channels_last)."""
    from ..pipeline import UnCLIP  # the pipeline imports the decoder package

    if preset_name not in DISTILL_RECIPES:
        raise ValueError(f"unknown distillation preset {preset_name!r}: expected one of {', '.join(DISTILL_RECIPES)}")
    recipe, run_dir = DISTILL_RECIPES[preset_name], Path(run_dir)
    refuse_other_train_config(run_dir, recipe.train)
    pipe = UnCLIP.from_pretrained(model_dir, device=device)
    pipe.clip.requires_grad_(False)
    pipe.decoder.requires_grad_(False)
    if pipe.decoder_guide is not None:
        pipe.decoder_guide.requires_grad_(False)
    if pipe.config.decoder.guidance_scale == 1 and not pipe.config.autoguidance:
        raise ValueError(f"{model_dir}: its decoder samples unguided (guidance_scale 1): there is nothing to distil")
    cfg = pipe.decoder.config
    cfg = cfg.with_(unet=cfg.unet.with_(channels_last=recipe.channels_last))
    torch.manual_seed(recipe.train.seed)
    student = Decoder(cfg).to(device)
    student.load_state_dict(pipe.decoder.state_dict())
    extra = {"distilled_from": str(model_dir), "teacher_sampling": asdict(pipe.config.decoder),
             "teacher_autoguidance": pipe.config.autoguidance}
    dataset = ShapesItems("train", size=cfg.image_size)
    trainer = Trainer(model=student, loss_fn=distillation_loss(pipe), dataset=dataset, config=recipe.train,
                      run_dir=run_dir, model_config={"stage": "decoder", **cfg.to_dict(), **extra},
                      collate_fn=collate_image_caption, read_model_config=_read_model_config, hooks=[],
                      device=device, progress=progress, dist_ctx=distributed.current())
    trainer.fit(max_steps, max_seconds=max_seconds)
    out = run_dir / "model"
    if trainer.is_main:
        save_decoder(out, trainer.ema.shadow if trainer.ema is not None else trainer.module)
    return out
