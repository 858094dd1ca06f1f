"""`unclip train all --preset shapes-tiny --run-dir DIR`: every stage in order, then the pipeline directory.

    DIR/clip  DIR/prior  DIR/ar-prior  DIR/decoder  [DIR/decoder-ft, DIR/decoder-ft2, ...]  DIR/upsampler
                                                                    one engine run each (resumable)
    [DIR/decoder-guide]                                             the first decoder run's weights at an earlier
                                                                    step, kept to guide the last (autoguidance)
    [DIR/judge]                                                     the image-text matcher that re-ranks candidates
                                                                    (on the frozen CLIP)
    DIR/pipeline                                                    UnCLIP.save_pretrained(half=True)
    [DIR/decoder-distill]                                           the pipeline's guided decoder distilled into one
                                                                    network, then added to DIR/pipeline

Each stage resumes on its own: rerunning the command skips finished stages (their trainers find the
last step done) and continues the interrupted one. With `--jobs 2` the decoder's runs train beside the priors and
upsamplers, in two processes (train_parallel.py).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from .atomic import replace_atomically
from .clip import load_clip
from .clip.train import train_clip
from .decoder import load_decoder, save_decoder
from .decoder.distill import train_distilled_decoder
from .decoder.weights import CONFIG_FILE
from .decoder.train import train_decoder
from .judge import load_judge
from .judge.train import train_judge
from .pipeline import PipelineConfig, UnCLIP
from .prior import load_prior
from .prior.train import EMBEDDINGS_FILE, train_prior
from .prior.train import RECIPES as PRIOR_RECIPES
from .train.checkpoint import list_checkpoints


@dataclass(frozen=True)
class PipelinePreset:
    clip: str
    prior: str
    ar_prior: str
    decoder: str
    upsamplers: tuple[str, ...]
    sampling: PipelineConfig
    decoder_steps: int | None = None  # stop the decoder here (its learning-rate schedule keeps the recipe's length)
    # further decoder cycles, each a recipe run from the previous cycle's weights (`--init-from`), in DIR/decoder-ft,
    # DIR/decoder-ft2, ...; the pipeline carries the last one's model
    decoder_finetunes: tuple[str, ...] = ()
    # the first decoder run's weights (EMA) at this step, kept in DIR/decoder-guide as the pipeline's decoder_guide:
    # a weaker decoder of the same images that generation guides by (autoguidance, PipelineConfig.autoguidance)
    decoder_guide_steps: int | None = None
    # a distillation recipe (decoder/distill.py): once DIR/pipeline is written, its guided decoder is distilled into
    # one network in DIR/decoder-distill, which the pipeline then carries and samples as `distilled_sampling` says
    distill: str | None = None
    distilled_sampling: PipelineConfig | None = None
    # a judge recipe (judge/train.py), trained in DIR/judge once the CLIP is, carried by the pipeline: with it the
    # sampling settings may re-rank candidates by the judge (PipelineConfig.judge)
    judge: str | None = None

    def __post_init__(self):
        if (self.distill is None) != (self.distilled_sampling is None):
            raise ValueError("a pipeline preset names both distill and distilled_sampling, or neither")
        if self.distilled_sampling is not None and not self.distilled_sampling.distilled:
            raise ValueError("distilled_sampling must sample the distilled decoder (distilled=True)")
        if self.judge is None and any(c is not None and c.judge for c in (self.sampling, self.distilled_sampling)):
            raise ValueError("sampling settings that re-rank by the judge need a judge recipe (judge=...)")


# How the shipped pipeline samples its guided decoder (two candidates, 32 evaluations), and the settings its decoder
# is distilled from.
_SHAPES_TINY_GUIDED = PipelineConfig().with_(
    prior=replace(PipelineConfig().prior, steps=2),
    decoder=replace(PipelineConfig().decoder, sampler="ddpm", steps=7, guidance_scale=2.5),
    candidates=2, manipulation_steps=13, autoguidance=True)

PRESETS = {
    # The shipped models/shapes-tiny: the narrow decoder (5.4x tiny's training samples/s, the best decoder measured
    # at equal compute), trained to the end of its 27,000-step schedule (models/shapes-tiny/README.md).
    # Its decoder samples at guidance 2, not the library's 3: on 500 test captions 0.268 vs 0.258 correct, FD 0.029 vs
    # 0.038, and 0.367 vs 0.333 from true z_i (models/shapes-tiny/README.md). It spends the 35-evaluation budget on
    # two candidates re-ranked by CLIP (2 prior and 7 guided decoder steps each, 32 evaluations) instead of one sample
    # (8 and 13, 34): 0.334 vs 0.268 correct, FD 0.018 vs 0.029, diversity 0.521 vs 0.606 (docs/reranking.md).
    # The manipulations keep 13 DDIM steps for their inversion.
    # Since 2026-11-25 its decoder has had three more learning-rate cycles (tiny-16-rb1-ft from the 27,000-step
    # weights, then tiny-16-rb1-ft2 and tiny-16-rb1-ft3, 9,000 steps each): from true z_i 0.316 -> 0.368 -> 0.408 ->
    # 0.434 correct, through the pipeline 0.334 -> 0.372 -> 0.418 -> 0.428.
    # Since the evening of 2026-11-25 the decoder's 7 steps are DDPM's, not DPM-Solver++'s (the same evaluations
    # and speed): 0.462 vs 0.428 on the same 500 captions (paired gain 0.034 +- 0.020; relation 0.206 vs 0.099),
    # FD 0.0108 vs 0.0103, diversity 0.397 vs 0.464; from true z_i, stochastic sampling gains as much
    # (benchmarks/decoder_samplers.py).
    # Since the night of 2026-11-25 a fifth cycle grown to self-condition (tiny-16-rb1-sc-ft4, 6,000 steps): from true
    # z_i at the pipeline's sampling 0.502 vs 0.456 for the plain fifth cycle (paired +0.046 +- 0.015), through the
    # pipeline 0.486 vs 0.462 (+0.024 +- 0.019).
    # Since 2026-12-04 three more: a sixth with half its timesteps on the 7 the pipeline samples (-sc-focus7-ft5), then
    # a seventh and an eighth that also keep the caption 80% of the time instead of 50% (-sc-focus7-cap20-ft6, -ft7):
    # from true z_i of 1,000 val images at the pipeline's sampling 0.528 vs 0.464 (+0.064 +- 0.012), through the
    # pipeline on 1,000 val captions 0.459 vs 0.439 (+0.020 +- 0.014) and on the 500 test captions 0.512 vs 0.486
    # (+0.026 +- 0.020).
    # Since 2026-12-05 generation guides that decoder by its own first run at step 20,000 (shipped as the decoder
    # from 2026-11-24 to 25) instead of classifier-free guidance: guide + 2.5 * (decoder - guide), the same 32
    # evaluations (autoguidance, Karras et al. 2024). From true z_i of 1,000 val images 0.546 vs 0.528 (+0.018 +-
    # 0.012), of the 500 test images 0.572 vs 0.532 (+0.040 +- 0.018); through the pipeline on 1,000 val captions
    # 0.485 vs 0.459 (+0.026 +- 0.014, novel +0.046 +- 0.020) and on the 500 test captions 0.506 vs 0.512 (-0.006 +-
    # 0.020, novel +0.044 +- 0.031). docs/decoder-cycles-december.md, "Autoguidance".
    # Since 2026-12-05 (evening) a ninth cycle grown wider (-sc-focus7-cap20-wide-ft8, 10,000 steps, 1.55M
    # parameters): from true z_i 0.583 vs 0.546 on 1,000 val images (+0.037 +- 0.012), 0.602 vs 0.572 on the 500
    # test images (+0.030 +- 0.018, single 0.986); through the pipeline 0.538 vs 0.506 on the 500 test captions
    # (+0.032 +- 0.020, novel 0.460 vs 0.420) and 0.507 vs 0.485 on 1,000 val captions (+0.022 +- 0.014).
    # Since 2026-12-06 a tenth cycle for it (-sc-focus7-cap20-wide-ft9, 10,000 steps, the same decoder): from true z_i
    # 0.627 vs 0.585 on 1,000 val images (+0.042 +- 0.012), 0.636 vs 0.600 on the 500 test images (+0.036 +- 0.017);
    # through the pipeline 0.578 vs 0.538 on the 500 test captions (+0.040 +- 0.018, novel 0.504 vs 0.460) and 0.550
    # vs 0.522 on 500 val captions (+0.028 +- 0.020).
    # Since 2026-12-07 two more cycles at batch 128 (-wide-ft10-b128, -wide-ft11-b128; 1,400 steps each): from true
    # z_i 0.651 vs 0.627 on 1,000 val images (+0.024 +- 0.011), 0.658 vs 0.636 on the 500 test images; through the
    # pipeline 0.626 vs 0.621 on 1,000 test captions (+0.005 +- 0.013), 0.616 vs 0.604 on 500 val, novel 0.588 vs 0.538
    # (+0.050 +- 0.019). docs/decoder-larger-batch.md.
    # Since 2026-12-06 (morning) the diffusion prior reads the caption's token ids through its own embedding beside
    # CLIP's token states and trains 5,000 steps instead of 2,000 (tiny-tok-long): through the pipeline 0.652 vs
    # 0.578 on the 500 test captions (+0.074 +- 0.021; single 0.937 vs 0.831) and 0.604 vs 0.550 on 500 val captions
    # (+0.054 +- 0.021). docs/priors.md, "Left, right and a longer prior".
    # Since 2026-12-07 (night) the diffusion prior is three times as large (tiny-tok-wide: width 192, 6 layers):
    # through the pipeline 0.658 vs 0.640 on the 500 test captions (+0.018 +- 0.018), 0.650 vs 0.640 on 500 val
    # (+0.010 +- 0.019), single objects 0.972 vs 0.887. docs/priors.md, "A wider prior".
    # Since 2026-12-07 (late night) generation samples a copy of the decoder distilled from its guided sampling (the
    # "tiny" distillation recipe, decoder/distill.py): one evaluation a decoder step, so three candidates of 2 prior
    # and 7 decoder steps take 27 evaluations. Through the pipeline 0.724 vs 0.658 on the 500 test captions (+0.066
    # +- 0.021; relation 0.466 vs 0.382), 0.714 vs 0.650 on 500 val (+0.064 +- 0.021). docs/distillation.md.
    # Since 2026-12-08 the candidates are re-ranked by a judge (judge/train.py's "tiny": an image-text matching head on
    # the frozen CLIP, trained on near-miss captions) instead of the CLIP's cosine, on the same candidates: 0.742 vs
    # 0.724 on the 500 test captions (+0.018 +- 0.010; counting 0.842 vs 0.781), 0.728 vs 0.714 on 500 val (+0.014 +-
    # 0.011), 0.708 vs 0.687 on the first 1,000 test captions (+0.021 +- 0.008). docs/reranking.md, "A judge".
    "shapes-tiny": PipelinePreset(clip="tiny", prior="tiny-tok-wide", ar_prior="tiny", decoder="tiny-16-rb1",
                                  decoder_finetunes=("tiny-16-rb1-ft", "tiny-16-rb1-ft2", "tiny-16-rb1-ft3",
                                                     "tiny-16-rb1-sc-ft4", "tiny-16-rb1-sc-focus7-ft5",
                                                     "tiny-16-rb1-sc-focus7-cap20-ft6",
                                                     "tiny-16-rb1-sc-focus7-cap20-ft7",
                                                     "tiny-16-rb1-sc-focus7-cap20-wide-ft8",
                                                     "tiny-16-rb1-sc-focus7-cap20-wide-ft9",
                                                     "tiny-16-rb1-sc-focus7-cap20-wide-ft10-b128",
                                                     "tiny-16-rb1-sc-focus7-cap20-wide-ft11-b128"),
                                  upsamplers=("tiny-up-128",), decoder_guide_steps=20000,
                                  sampling=_SHAPES_TINY_GUIDED, distill="tiny",
                                  distilled_sampling=_SHAPES_TINY_GUIDED.with_(distilled=True, candidates=3,
                                                                               judge=True),
                                  judge="tiny"),
    # The whole pipeline in under two hours on a 2-core CPU (issue 8's training-time goal), with `--jobs 2`: the CLIP
    # (about 20 minutes on 2 threads), then the decoder (tiny-16-rb1-fast, 7,500 steps) on one thread beside the
    # diffusion prior (tiny-tok: shapes-tiny's token embedding at its first 2,000 steps), a shorter autoregressive
    # prior and the upsampler on the other. One decoder run, so no guide: classifier-free guidance at 2, which
    # suited the shipped decoder early on. It samples as shapes-tiny does otherwise (two candidates, 32 evaluations).
    "shapes-2h": PipelinePreset(clip="tiny", prior="tiny-tok", ar_prior="tiny-short", decoder="tiny-16-rb1-fast",
                                upsamplers=("tiny-up-128",),
                                sampling=PipelineConfig().with_(
                                    prior=replace(PipelineConfig().prior, steps=2),
                                    decoder=replace(PipelineConfig().decoder, sampler="ddpm", steps=7,
                                                    guidance_scale=2.0),
                                    candidates=2, manipulation_steps=13)),
}


def train_all(*, preset_name: str, run_dir: str | os.PathLike, device: str = "cpu", progress: bool = True,
              half: bool = True, log=print, jobs: int = 1, threads: int | None = None, lane_setup=None) -> Path:
    """Train every stage of a pipeline preset; returns RUN_DIR/pipeline.

    With `jobs` 1 the stages run in order in this process. With `jobs` 2 the CLIP trains first (it is what every
    later stage but the upsamplers reads), then two processes of `threads` // 2 threads each (default: torch's
    thread count) train the decoder's cycles and, beside them, the two priors and the upsamplers
    (train_parallel.py); on a 2-core CPU two 1-thread trainings get more done than one 2-thread training. Either
    way every stage is its own resumable run, with the same weights at one thread a stage. `lane_setup` (jobs 2):
    train_parallel.run_lanes' `setup`."""
    if preset_name not in PRESETS:
        raise ValueError(f"unknown pipeline preset {preset_name!r}: expected one of {', '.join(PRESETS)}")
    if jobs not in (1, 2):
        raise ValueError(f"jobs must be 1 or 2 (the decoder beside the priors and upsamplers), got {jobs!r}")
    preset, run_dir = PRESETS[preset_name], Path(run_dir)
    log(f"[1/5] CLIP ({preset.clip}) in {run_dir / 'clip'}")
    clip_dir = train_clip(preset_name=preset.clip, run_dir=run_dir / "clip", device=device, progress=progress)
    if jobs == 2:
        from .train_parallel import run_lanes

        total = threads or torch.get_num_threads()
        run_lanes(preset_name=preset_name, run_dir=run_dir, clip_dir=clip_dir, device=device,
                  threads=max(1, total // 2), progress=progress, log=log, setup=lane_setup)
        # every stage is finished: each run wrote RUN/model (the guide its own directory)
        priors = prior_runs(preset, run_dir)
        prior_dir, ar_dir = priors["diffusion"][0] / "model", priors["autoregressive"][0] / "model"
        up_dirs = [sub / "model" for sub, _ in upsampler_runs(preset, run_dir)]
        decoder_dir = decoder_runs(preset, run_dir)[-1][0] / "model"
        guide_dir = None if preset.decoder_guide_steps is None else run_dir / "decoder-guide"
    else:
        prior_dir, ar_dir, up_dirs = prior_lane(preset, run_dir, clip_dir, device=device, progress=progress, log=log)
        guide_dir, decoder_dir = decoder_lane(preset, run_dir, clip_dir, device=device, progress=progress, log=log)
    stages = dict(clip=load_clip(clip_dir), prior=load_prior(prior_dir), ar_prior=load_prior(ar_dir),
                  decoder=load_decoder(decoder_dir), upsamplers=[load_decoder(d) for d in up_dirs],
                  decoder_guide=None if guide_dir is None else load_decoder(guide_dir))
    if preset.judge is not None:
        log(f"[+] the judge ({preset.judge}) in {run_dir / 'judge'}")
        stages["judge"] = load_judge(train_judge(preset_name=preset.judge, clip_dir=clip_dir, run_dir=run_dir / "judge",
                                                 device=device, progress=progress))
    out = UnCLIP(**stages, config=preset.sampling).save_pretrained(run_dir / "pipeline", half=half)
    if preset.distill is None:
        return out
    # the teacher is the pipeline just written, weights as it stores them, sampling as it samples (distill.py)
    log(f"[+] the guided decoder distilled ({preset.distill}) in {run_dir / 'decoder-distill'}")
    student = train_distilled_decoder(model_dir=out, run_dir=run_dir / "decoder-distill", preset_name=preset.distill,
                                      device=device, progress=progress)
    return UnCLIP(**stages, decoder_distilled=load_decoder(student),
                  config=preset.distilled_sampling).save_pretrained(out, half=half)


def prior_lane(preset: PipelinePreset, run_dir: Path, clip_dir: Path, *, device: str, progress: bool,
               log) -> tuple[Path, Path, list[Path]]:
    """The stages that do not wait on the decoder: the diffusion prior, the autoregressive prior, the upsamplers."""
    runs = prior_runs(preset, run_dir)
    (prior_run, prior_name), (ar_run, ar_name) = runs["diffusion"], runs["autoregressive"]
    log(f"[2/5] diffusion prior ({prior_name}) in {prior_run}")
    prior_dir = train_prior(kind="diffusion", preset_name=prior_name, clip_dir=clip_dir, run_dir=prior_run,
                            device=device, progress=progress)
    _share_embeddings(preset, run_dir)
    log(f"[3/5] autoregressive prior ({ar_name}) in {ar_run}")
    ar_dir = train_prior(kind="autoregressive", preset_name=ar_name, clip_dir=clip_dir, run_dir=ar_run, device=device,
                         progress=progress)
    up_dirs = []
    for sub, name in upsampler_runs(preset, run_dir):
        log(f"[4/5] upsampler ({name}) in {sub}")
        up_dirs.append(train_decoder(preset_name=name, run_dir=sub, device=device, progress=progress))
    return prior_dir, ar_dir, up_dirs


def decoder_lane(preset: PipelinePreset, run_dir: Path, clip_dir: Path, *, device: str, progress: bool,
                 log) -> tuple[Path | None, Path]:
    """The decoder's first run (and the guide kept from it), then its later cycles; returns (guide, last model)."""
    guide_dir = None if preset.decoder_guide_steps is None else _decoder_guide(preset, run_dir, clip_dir, device=device,
                                                                               progress=progress, log=log)
    log(f"[5/5] decoder ({preset.decoder}) in {run_dir / 'decoder'}")
    decoder_dir = train_decoder(preset_name=preset.decoder, clip_dir=clip_dir, run_dir=run_dir / "decoder",
                                max_steps=preset.decoder_steps, device=device, progress=progress)
    for cycle, (sub, name) in enumerate(decoder_runs(preset, run_dir)[1:], start=2):
        log(f"[5/5] decoder, cycle {cycle} ({name}) in {sub}")
        decoder_dir = train_decoder(preset_name=name, clip_dir=clip_dir, init_from=decoder_dir, run_dir=sub,
                                    device=device, progress=progress)
    return guide_dir, decoder_dir


def prior_runs(preset: PipelinePreset, run_dir: Path) -> dict[str, tuple[Path, str]]:
    """(run directory, recipe) of each prior by kind: DIR/prior (diffusion) and DIR/ar-prior (autoregressive)."""
    return {"diffusion": (run_dir / "prior", preset.prior), "autoregressive": (run_dir / "ar-prior", preset.ar_prior)}


def decoder_runs(preset: PipelinePreset, run_dir: Path) -> list[tuple[Path, str]]:
    """(run directory, recipe) of the decoder's runs in order: DIR/decoder, then DIR/decoder-ft, DIR/decoder-ft2, ..."""
    later = ["decoder-ft" if i == 0 else f"decoder-ft{i + 1}" for i in range(len(preset.decoder_finetunes))]
    subs = ["decoder", *later]
    return [(run_dir / sub, name) for sub, name in zip(subs, (preset.decoder, *preset.decoder_finetunes))]


def upsampler_runs(preset: PipelinePreset, run_dir: Path) -> list[tuple[Path, str]]:
    """(run directory, recipe) of each upsampler: DIR/upsampler, or DIR/upsampler1, DIR/upsampler2, ... for several."""
    one = len(preset.upsamplers) == 1
    return [(run_dir / ("upsampler" if one else f"upsampler{i + 1}"), name) for i, name in enumerate(preset.upsamplers)]


def _share_embeddings(preset: PipelinePreset, run_dir: Path) -> None:
    """Give the autoregressive prior the diffusion prior's embedded training pairs when its recipe asks for the same
    scenes (the same count from the same first index, through the same CLIP), so they are not rendered and embedded
    twice (about 5 minutes on a 2-core CPU); a copy, so each run directory stands alone."""
    runs = prior_runs(preset, run_dir)
    (source_run, diffusion_name), (target_run, ar_name) = runs["diffusion"], runs["autoregressive"]
    diffusion, ar = PRIOR_RECIPES["diffusion"][diffusion_name], PRIOR_RECIPES["autoregressive"][ar_name]
    source, target = source_run / EMBEDDINGS_FILE, target_run / EMBEDDINGS_FILE
    if (diffusion.pairs, diffusion.pairs_from) != (ar.pairs, ar.pairs_from) or not source.is_file() or target.exists():
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    replace_atomically(target, lambda tmp: shutil.copyfile(source, tmp))  # a stop mid-copy leaves no half file


def _decoder_guide(preset: PipelinePreset, run_dir: Path, clip_dir: Path, *, device: str, progress: bool,
                   log) -> Path:
    """DIR/decoder-guide: the first decoder run stopped at preset.decoder_guide_steps, its weights kept there (the
    run then resumes to its end). A run already past that step cannot give them back, and is refused."""
    guide_dir, steps = run_dir / "decoder-guide", preset.decoder_guide_steps
    if (guide_dir / CONFIG_FILE).is_file():
        return guide_dir
    if preset.decoder_steps is not None and steps > preset.decoder_steps:
        raise ValueError(f"decoder_guide_steps {steps} lies past decoder_steps {preset.decoder_steps}")
    done = list_checkpoints(run_dir / "decoder" / "checkpoints")
    if done and done[-1][0] > steps:
        raise ValueError(f"{run_dir / 'decoder'} is at step {done[-1][0]}, past the guide's step {steps}, whose "
                         "weights are gone: train the decoder in a new run directory, or assemble a guide yourself")
    log(f"[5/5] decoder ({preset.decoder}) to step {steps}, kept as the guide in {guide_dir}")
    first = train_decoder(preset_name=preset.decoder, clip_dir=clip_dir, run_dir=run_dir / "decoder", max_steps=steps,
                          device=device, progress=progress)
    save_decoder(guide_dir, load_decoder(first))
    return guide_dir
