"""Training the decoder and the upsamplers on the engine:

    unclip train decoder   --preset tiny        --clip CLIP_DIR --run-dir DIR
    unclip train upsampler --preset tiny-up-128 --run-dir DIR

The decoder learns images from the z_i and token states of a frozen CLIP, both computed per batch from
freshly rendered Shapes scenes (every step sees new scenes, so a run is a function of its step count and
resumes exactly). The upsampler learns from the images alone (unCLIP §2.1: no caption, no z_i).

The tiny decoder departs from the paper's eps-prediction on a cosine schedule, because a calibration run
on this CPU showed what that costs at small budgets (grey backgrounds, no layout): it predicts v on a
cosine schedule rescaled to zero terminal SNR (Lin et al. 2024) and weights the loss by min-SNR-5 (Hang
et al. 2023).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path

import torch
import torch.nn.functional as F

from ..clip import CLIP, load_clip
from ..data import collate_image_caption
from ..data.images import to_pil
from ..data.sources import ShapesItems
from ..diffusion import DiffusionConfig
from ..train import TrainConfig, Trainer, refuse_other_train_config, sample_grid_hook
from ..train import distributed
from ..train.distributed import DistContext
from ..train.overrides import with_train_changes
from ..world import ShapesDataset
from .caption_encoder import CaptionEncoderConfig
from .config import (TRAINING_ONLY, TRAINING_ONLY_MODEL, DecoderConfig, UNetConfig, UpsamplerConfig,
                     network_config)
from .decoder import Decoder
from .grow import GROWABLE, grow_unet
from .upsampler import Upsampler
from .weights import load_decoder, save_decoder

FAST_DIFFUSION = DiffusionConfig(schedule="cosine", steps=1000, prediction="v", zero_terminal_snr=True,
                                 min_snr_gamma=5.0)


@dataclass(frozen=True)
class DecoderRecipe:
    model: DecoderConfig | UpsamplerConfig
    train: TrainConfig
    sample_steps: int = 25  # for the progress grids
    # relative weights of the Shapes world's forms (single, pair, list, count) in training; None: the world's own
    # equal mix (data/sources.py, ShapesItems)
    form_weights: tuple[float, ...] | None = None


_TINY_TRAIN = TrainConfig(steps=5000, batch_size=32, lr=5e-4, warmup_steps=200, weight_decay=0.0, ema_decay=0.999,
                          checkpoint_every=250, log_every=25, hook_every=1000, seed=0)
_GLIDE = DecoderConfig(unet=UNetConfig(clip_dim=None), diffusion=FAST_DIFFUSION, p_drop_text=0.2)
# "tiny" at half the width, trained with the plain v loss (no min-SNR weighting): the narrow recipes below
_TINY_16 = DecoderConfig(unet=UNetConfig(model_channels=16, head_channels=16),
                         diffusion=replace(FAST_DIFFUSION, min_snr_gamma=None))
_TINY_16_RB1 = _TINY_16.with_(unet=_TINY_16.unet.with_(num_res_blocks=1))
_TINY_16_RB1_TRAIN = replace(_TINY_TRAIN, steps=27000, checkpoint_every=1000)


_TINY_16_RB1_MLP = _TINY_16_RB1.with_(unet=_TINY_16_RB1.unet.with_(image_mlp_width=512))
_TINY_16_RB1_SC = _TINY_16_RB1.with_(unet=_TINY_16_RB1.unet.with_(self_condition=True))
_FOCUS7 = _TINY_16_RB1_SC.with_(diffusion=replace(_TINY_16_RB1_SC.diffusion, timestep_focus_steps=7,
                                                   timestep_focus_fraction=0.5))
# The focused decoder with 20% caption dropout, grown to levels of 32, 48 and 64 channels and the z_i MLP (the ninth
# and tenth cycles, "-cap20-wide-ft8" and "-ft9").
_FOCUS7_CAP20_WIDE = _FOCUS7.with_(p_drop_text=0.2, unet=_FOCUS7.unet.with_(channel_mult=(2, 3, 4),
                                                                            image_mlp_width=512))
# ... grown to levels of 48, 64 and 96 channels, GroupNorm groups kept at 4 channels (RECIPES' "-wider-" cycles)
_WIDER = _FOCUS7_CAP20_WIDE.with_(unet=_FOCUS7_CAP20_WIDE.unet.with_(channel_mult=(3, 4, 6), norm_group_size=4))


# single, pair, list, count: three times the pairs and lists of a single object, twice its counts
_PAIRS_AND_LISTS = (1.0, 3.0, 3.0, 2.0)


def _restart(*, seed: int, steps: int = 9000, model: DecoderConfig = _TINY_16_RB1,
             lr: float = 2.5e-4, **train_changes) -> DecoderRecipe:
    """A warm restart of "tiny-16-rb1" (Loshchilov & Hutter 2017), run with `--init-from` a trained one: its recipe
    at half the peak learning rate (or `lr`), over `steps`, on scenes from `seed`, with any other TrainConfig field
    in `train_changes`."""
    return DecoderRecipe(model=model, train=replace(_TINY_16_RB1_TRAIN, steps=steps, lr=lr, seed=seed,
                                                    **train_changes))


# The two-hour pipeline's decoder (RECIPES["tiny-16-rb1-fast"]), named here so that its variants share it.
_FAST_2H = DecoderRecipe(
    model=_TINY_16_RB1.with_(p_drop_text=0.2, unet=_TINY_16_RB1.unet.with_(channels_last=True),
                             diffusion=replace(_TINY_16_RB1.diffusion, timestep_focus_steps=7,
                                               timestep_focus_fraction=0.5)),
    train=replace(_TINY_16_RB1_TRAIN, steps=7500, checkpoint_every=500))

RECIPES: dict[str, DecoderRecipe] = {
    # 3.4M parameters at 32 px; 41 samples/s with 2 threads on this 2-core CPU (about 65 minutes alone).
    "tiny": DecoderRecipe(model=DecoderConfig(diffusion=FAST_DIFFUSION), train=_TINY_TRAIN),
    # The same decoder for twice the steps: the shapes-tiny decoder until 2026-11-24 (first 3,250 steps under "tiny").
    "tiny-long": DecoderRecipe(model=DecoderConfig(diffusion=FAST_DIFFUSION), train=replace(_TINY_TRAIN, steps=10000)),
    # The GLIDE-style baseline (issue 9; Nichol et al. 2021): the same decoder and recipe, conditioned on the
    # caption alone (no z_i), with GLIDE's 20% caption dropout for classifier-free guidance.
    "tiny-glide": DecoderRecipe(model=_GLIDE, train=_TINY_TRAIN),
    # "tiny-glide" reading the caption through a text transformer of its own trained with it (GLIDE §2.2) instead of
    # the frozen CLIP's token states. Measured at step 3,250 (README, Evaluation): weaker than "tiny-glide" at this
    # budget (FD 1.174 vs 1.086 at 200 captions, same sampling), so the comparison keeps "tiny-glide", the same
    # decoder minus z_i.
    "tiny-glide-xf": DecoderRecipe(model=_GLIDE.with_(caption_encoder=CaptionEncoderConfig()), train=_TINY_TRAIN),
    # "tiny" with its own caption encoder (GLIDE's text transformer, 3 layers of 128, trained with the decoder)
    # in place of the frozen CLIP's token states, which barely tell left from right. Measured at steps 2,750 and
    # 5,000: no better placement than "tiny" yet (docs/decoder-learning.md), so not the default.
    "tiny-xf": DecoderRecipe(model=DecoderConfig(diffusion=FAST_DIFFUSION, caption_encoder=CaptionEncoderConfig()),
                             train=_TINY_TRAIN),
    # "tiny" at half the width (model_channels 16, 0.94M parameters) with the plain v loss: 3.3x the training
    # samples/s, so its 16,500-step schedule costs what tiny's 5,000 do. Read at step 5,000 (tiny's compute at step
    # 1,500, same place in the learning-rate schedule) it draws what tiny draws at step 5,000: counts 0.453, colours
    # 0.327, shapes 0.037 (docs/decoder-learning.md).
    "tiny-16": DecoderRecipe(model=_TINY_16, train=replace(_TINY_TRAIN, steps=16500, checkpoint_every=500)),
    # "tiny-16" with one residual block a level instead of two (0.68M parameters): 5.4x tiny's training samples/s, its
    # 27,000-step schedule costs what tiny's 5,000 do. Read at step 8,000 (tiny's compute at step 1,500) it is the best
    # decoder measured here: 0.077 correct, singles 0.215, counts 0.517, colours 0.397, shapes 0.110, lone objects
    # placed better than chance (0.276 vs 0.323), above tiny-long at 10,000 steps (docs/decoder-learning.md). Trained to
    # step 27,000 it was the shipped shapes-tiny decoder: 0.316 correct from true z_i (EMA, 500 images), singles 0.620.
    "tiny-16-rb1": DecoderRecipe(model=_TINY_16_RB1, train=_TINY_16_RB1_TRAIN),
    # The GLIDE-style baseline at the shipped decoder's size and recipe (issue 9): "tiny-16-rb1" conditioned on the
    # caption alone (no z_i), with GLIDE's 20% caption dropout, so unCLIP and GLIDE compare at equal training.
    "tiny-16-rb1-glide": DecoderRecipe(model=_TINY_16_RB1.with_(unet=_TINY_16_RB1.unet.with_(clip_dim=None),
                                                                p_drop_text=0.2),
                                       train=_TINY_16_RB1_TRAIN),
    # Two candidates for a faster narrow recipe, measured against "tiny-16-rb1"'s own run at equal samples
    # (docs/decoder-learning.md). Twice the learning rate: the v loss starts 7% lower but is level by step 8,000 (0.0459
    # vs 0.0460), and from true z_i at step 8,000 it is worse, 0.047 correct against 0.077 (300 images, raw weights) ...
    "tiny-16-rb1-lr1e3": DecoderRecipe(model=_TINY_16_RB1, train=replace(_TINY_16_RB1_TRAIN, lr=1e-3)),
    # ... half the batch for twice the steps: the loss stays 8-11% lower (0.0425 vs 0.0460 at 224k-256k samples) at 4%
    # fewer samples/s, yet at step 16,000 it scores 0.080 against 0.077 (singles 0.241 vs 0.215): no better yet.
    "tiny-16-rb1-b16": DecoderRecipe(model=_TINY_16_RB1, train=replace(_TINY_16_RB1_TRAIN, batch_size=16, steps=54000,
                                                                       warmup_steps=400)),
    # A second cosine cycle for a trained "tiny-16-rb1" decoder (a warm restart, Loshchilov & Hutter 2017): start
    # it from that decoder's weights with `--init-from DIR`; half the peak learning rate, fresh scenes (seed 1).
    "tiny-16-rb1-ft": _restart(seed=1),
    # A third cycle, the same warm restart on scenes from another seed (2), for a decoder that has had the second.
    "tiny-16-rb1-ft2": _restart(seed=2),
    # A fourth, for the third cycle's decoder (scenes from seed 3): 0.408 -> 0.434 from true z_i, a smaller step than
    # the cycles before (docs/decoder-cycles-november.md); shapes-tiny's decoder since 2026-11-25.
    "tiny-16-rb1-ft3": _restart(seed=3),
    # A fifth, two thirds as long (6,000 steps, scenes from seed 4), for the fourth cycle's decoder: 0.434 -> 0.442 from
    # true z_i and 0.428 -> 0.418 through the pipeline, both within noise, so not shipped
    # (docs/decoder-cycles-november.md).
    "tiny-16-rb1-ft4": _restart(seed=4, steps=6000),
    # "tiny-16-rb1-ft4" with a z_i MLP (UNetConfig.image_mlp_width 512) grown onto the fourth cycle's decoder: the same
    # steps and scenes, so it reads against "tiny-16-rb1-ft4" directly.
    "tiny-16-rb1-mlp-ft4": _restart(seed=4, steps=6000, model=_TINY_16_RB1_MLP),
    # The same restart grown wider (grow.py): levels of 32, 48 and 64 channels instead of 16, 32 and 48, and the z_i
    # MLP, 1.55M parameters and 2.4x the computation; `--init-from` a "tiny-16-rb1" decoder, which it starts out
    # computing exactly. The same steps and scenes as "tiny-16-rb1-ft4", so the two read against each other.
    "tiny-16-rb1-wide-ft4": _restart(seed=4, steps=6000, model=_TINY_16_RB1_MLP.with_(
        unet=_TINY_16_RB1_MLP.unet.with_(channel_mult=(2, 3, 4)))),
    # The same restart grown to self-condition (UNetConfig.self_condition; Chen et al. 2022): the input also reads the
    # decoder's previous x0 estimate, through zero weights at first. The same steps and scenes as "tiny-16-rb1-ft4", and
    # better: from true z_i 0.502 vs 0.456 at the pipeline's sampling, through the pipeline 0.486 vs 0.462 for the
    # fourth cycle's decoder (docs/decoder-cycles-november.md); shapes-tiny's decoder since the night of 2026-11-25.
    "tiny-16-rb1-sc-ft4": _restart(seed=4, steps=6000, model=_TINY_16_RB1_SC),
    # A sixth cycle for that self-conditioned decoder, on scenes from seed 5: 0.480 vs 0.502 from true z_i at the
    # pipeline's sampling (-0.022 +- 0.014), so not shipped (docs/decoder-cycles-november.md).
    "tiny-16-rb1-sc-ft5": _restart(seed=5, steps=6000, model=_TINY_16_RB1_SC),
    # That sixth cycle with half of each batch's timesteps on the 7 the pipeline samples (DiffusionConfig.
    # timestep_focus_steps): a decoder this small fits every noise level poorly, and is sampled at 7 of them.
    # Measured: from true z_i of 1,000 val images 0.489 vs the shipped 0.464 (+0.025 +- 0.011), yet through the
    # pipeline 0.476 vs 0.478 (novel 0.364 vs 0.396), so not shipped (docs/decoder-cycles-december.md).
    "tiny-16-rb1-sc-focus7-ft5": _restart(seed=5, steps=6000, model=_FOCUS7),
    # That sixth cycle at a fifth of its peak learning rate (5e-5, cosine to 5e-6): whether the restarts' peak, which
    # the narrow decoder's later cycles may spend undoing their own progress, is what stopped them helping.
    # Measured: 0.472 vs 0.464 from true z_i of 1,000 val images (+0.008 +- 0.010), within noise; not shipped.
    "tiny-16-rb1-sc-lowlr-ft5": _restart(seed=5, steps=6000, model=_TINY_16_RB1_SC, lr=5e-5),
    # That sixth cycle grown wider (levels of 32, 48 and 64 channels and the z_i MLP, as "tiny-16-rb1-wide-ft4") from
    # the self-conditioned fifth: the narrow decoder had levelled off, so the capacity grown onto it is what is tried.
    # 4,500 steps on scenes from seed 5 (37 min 41 s on 2 threads). Measured: 0.452 vs the shipped 0.464 from true z_i
    # of 1,000 val images at the pipeline's sampling (-0.012 +- 0.011; docs/decoder-cycles-december.md), so not shipped.
    "tiny-16-rb1-sc-wide-ft5": _restart(seed=5, steps=4500, model=_TINY_16_RB1_SC.with_(
        unet=_TINY_16_RB1_SC.unet.with_(channel_mult=(2, 3, 4), image_mlp_width=512))),
    # A seventh cycle for the focused sixth ("tiny-16-rb1-sc-focus7-ft5", `--init-from` its model), the same recipe on
    # scenes from seed 6: 0.508 from true z_i of 1,000 val images (docs/decoder-cycles-december.md).
    "tiny-16-rb1-sc-focus7-ft6": _restart(seed=6, steps=6000, model=_FOCUS7),
    # The same seventh cycle, the caption dropped 20% of the time instead of 50% (GLIDE's rate; unCLIP §2.1 says 50%):
    # the tiny CLIP's z_i carries no position, so relations are learned only from rows that keep the caption, and
    # this gives the fully conditioned branch, the one guidance sharpens, 72% of each batch instead of 45%: 0.511.
    "tiny-16-rb1-sc-focus7-cap20-ft6": _restart(seed=6, steps=6000, model=_FOCUS7.with_(p_drop_text=0.2)),
    # An eighth cycle for each of those two (`--init-from` the matching seventh), 4,500 steps on scenes from seed 7:
    # 0.507 and 0.528 from true z_i of 1,000 val images. The second is shapes-tiny's decoder since 2026-12-04.
    "tiny-16-rb1-sc-focus7-ft7": _restart(seed=7, steps=4500, model=_FOCUS7),
    "tiny-16-rb1-sc-focus7-cap20-ft7": _restart(seed=7, steps=4500, model=_FOCUS7.with_(p_drop_text=0.2)),
    # A ninth for the second (`--init-from` its model), 4,500 steps on scenes from seed 8 (24 min on 2 threads): 0.520
    # vs 0.528 from true z_i of 1,000 val images (-0.008 +- 0.010), so not shipped; the line has levelled off.
    "tiny-16-rb1-sc-focus7-cap20-ft8": _restart(seed=8, steps=4500, model=_FOCUS7.with_(p_drop_text=0.2)),
    # That ninth cycle with a caption adapter grown on (caption_encoder.CaptionAdapter: 2 bidirectional layers of 128
    # over the token ids and the CLIP's states, added to those states from zero): relations and lists fail most, and
    # the CLIP's causal states merge the words that tell them apart ("left" / "right" at cosine 0.99). `--init-from`
    # the eighth cycle (shapes-tiny's decoder); the same scenes and steps as "-ft8", its control. 24 min on 2 threads:
    # 0.520 from true z_i of 1,000 val images, the control's 0.520 (relation 0.176 vs 0.184), so not shipped.
    "tiny-16-rb1-sc-focus7-cap20-xa-ft8": _restart(seed=8, steps=4500, model=_FOCUS7.with_(
        p_drop_text=0.2, caption_adapter=CaptionEncoderConfig(layers=2))),
    # The ninth cycle grown wider instead (levels of 32, 48 and 64 channels and the z_i MLP, as "-sc-wide-ft5"),
    # `--init-from` the eighth (shapes-tiny's decoder), on scenes from seed 9 and for 10,000 steps: the matched
    # comparisons of growth so far were 4,500-6,000 steps long and came out a little ahead of their narrow controls
    # (+0.016, +0.010), too short for the new channels to be used; this gives them twice as long. 1 h 14 min on 2
    # threads. Measured: from true z_i 0.583 vs 0.546 on 1,000 val images (+0.037 +- 0.012), 0.602 vs 0.572 on the
    # 500 test images (single 0.986); through the pipeline 0.538 vs 0.506 on 500 test captions. shapes-tiny's
    # decoder from 2026-12-05 (evening) to 2026-12-06.
    "tiny-16-rb1-sc-focus7-cap20-wide-ft8": _restart(seed=9, steps=10000, model=_FOCUS7_CAP20_WIDE),
    # A tenth cycle for it, the same decoder `--init-from` the ninth on scenes from seed 10 for 10,000 steps. (Growing
    # it again was blocked then: the decoder blocks of its 64-channel level read 128 channels, which already have
    # GroupNorm's 32 groups, so a wider one changed the group size; UNetConfig.norm_group_size now keeps it.)
    # Trained 2026-12-06 (1 h 53 min on 2 threads): from true z_i + caption at the pipeline's sampling 0.627 vs 0.585
    # on 1,000 val images (+0.042 +- 0.012) and 0.636 vs 0.600 on the 500 test images (+0.036 +- 0.017, single 0.993);
    # through the pipeline 0.578 vs 0.538 on the 500 test captions (+0.040 +- 0.018). shapes-tiny's decoder since then.
    "tiny-16-rb1-sc-focus7-cap20-wide-ft9": _restart(seed=10, steps=10000, model=_FOCUS7_CAP20_WIDE),
    # An eleventh cycle, `--init-from` the tenth (shapes-tiny's decoder), on scenes from seed 11 for 7,000 steps (1 h
    # 41 min on one thread beside another run). Measured 2026-12-06: from true z_i 0.639 vs 0.627 on 1,000 val images
    # (+0.012 +- 0.012), 0.640 vs 0.636 on the 500 test images; through the pipeline 0.644 vs 0.652 on the 500 test
    # captions (-0.008 +- 0.018), 0.620 vs 0.604 on val. Within noise, so not shipped.
    "tiny-16-rb1-sc-focus7-cap20-wide-ft10": _restart(seed=11, steps=7000, model=_FOCUS7_CAP20_WIDE),
    # Two shorter siblings of that eleventh cycle, `--init-from` the tenth on scenes from seeds 12 and 13 for 5,000
    # steps each (1 h 34 min side by side, one thread each), to be averaged into one decoder (a uniform "model soup",
    # Wortsman et al. 2022; `unclip assemble --decoder A B`). Measured 2026-12-06 from true z_i on 1,000 val images:
    # 0.625 and 0.637 against the tenth's 0.627, their mean 0.632, the mean with the tenth 0.629, all within noise
    # (+-0.011), so none is shipped (docs/decoder-cycles-december.md).
    "tiny-16-rb1-sc-focus7-cap20-wide-ft10b": _restart(seed=12, steps=5000, model=_FOCUS7_CAP20_WIDE),
    "tiny-16-rb1-sc-focus7-cap20-wide-ft10c": _restart(seed=13, steps=5000, model=_FOCUS7_CAP20_WIDE),
    # The same two restarts on a mix weighted towards what the decoder draws worst: from true z_i the shipped one gets
    # 0.99 of single objects and 0.83 of counts right but 0.34 of pairs and of lists (500 test images), so scenes come
    # in proportions 1 : 3 : 3 : 2 (single, pair, list, count) instead of the world's equal ones. Measured on 1,000 val
    # images: 0.618 and 0.613 against their controls' 0.625 and 0.637; pairs and lists no better, counting 0.035-0.062
    # worse, so not shipped (docs/decoder-cycles-december.md, "More pairs and lists in training").
    # An eleventh cycle at four times the batch: the cycles at batch 32 had levelled off, which is what gradient noise
    # at the end of a schedule looks like, so this one takes 128 scenes a step at the same peak learning rate (a
    # quarter of the noise per step) for 1,400 steps, 179,200 scenes from seed 16, with the EMA's horizon kept near
    # 40,000 scenes (decay 0.997). `--init-from` the tenth (shapes-tiny's decoder); 1 h 51 min on one thread beside
    # another run. Measured 2026-12-07 against the shipped decoder, from true z_i: 0.641 vs 0.627 on 1,000 val images
    # (+0.014 +- 0.011), 0.658 vs 0.636 on the 500 test images (+0.022 +- 0.016); through the pipeline 0.652 vs 0.652
    # on the 500 test captions, 0.624 vs 0.604 on 500 val, novel 0.576 vs 0.532; on 1,000 test captions 0.609 vs 0.621
    # (-0.012 +- 0.012) (docs/decoder-larger-batch.md). The twelfth below continues from it.
    "tiny-16-rb1-sc-focus7-cap20-wide-ft10-b128": _restart(seed=16, steps=1400, model=_FOCUS7_CAP20_WIDE,
                                                          batch_size=128, warmup_steps=100, ema_decay=0.997),
    # A twelfth cycle, the same at batch 128 on scenes from seed 17, `--init-from` the eleventh above, to see whether
    # the gain held: from true z_i 0.651 vs the tenth's 0.627 on 1,000 val images (+0.024 +- 0.011), 0.658 vs 0.636 on
    # the 500 test images; through the pipeline 0.626 vs 0.621 on 1,000 test captions (+0.005 +- 0.013), 0.616 vs
    # 0.604 on 500 val, novel 0.588 vs 0.538 (+0.050 +- 0.019). Shipped in shapes-tiny since 2026-12-07 (1 h 34 min on
    # one thread; docs/decoder-larger-batch.md).
    "tiny-16-rb1-sc-focus7-cap20-wide-ft11-b128": _restart(seed=17, steps=1400, model=_FOCUS7_CAP20_WIDE,
                                                          batch_size=128, warmup_steps=100, ema_decay=0.997),
    # A thirteenth cycle trained on z_i noised to the prior's distance from the true z_i (image_embedding_noise 0.34:
    # cosine about 0.946, augment.py), and its control without: from true z_i the twelfth gained +0.024 over the tenth
    # and through the prior's z_i nothing (one candidate right 0.517 vs 0.515 on 1,000 test captions), so the decoder
    # follows z_i more closely than the prior's z_i deserve. Both `--init-from` the twelfth (runs/dec-bigbatch-ft11/
    # model, shapes-tiny's decoder) on scenes from seed 18 for 700 steps at batch 128, side by side on one thread each
    # (45 min). Measured 2026-12-07 against the twelfth: the noised one 0.527 vs 0.651 from true z_i of 1,000 val
    # images (-0.124 +- 0.015; stated positions 0.738 vs 0.992: noise of that size swamps what z_i says of position),
    # through the pipeline 0.582 vs 0.626 on 1,000 test captions (-0.044 +- 0.015) and 0.588 vs 0.616 on 500 val; the
    # control level (0.641, 0.624, 0.628). Neither shipped (docs/decoder-larger-batch.md, "The evening").
    "tiny-16-rb1-sc-focus7-cap20-wide-ft12-b128-zn34": _restart(
        seed=18, steps=700, model=_FOCUS7_CAP20_WIDE.with_(image_embedding_noise=0.34), batch_size=128,
        warmup_steps=100, ema_decay=0.997),
    "tiny-16-rb1-sc-focus7-cap20-wide-ft12-b128": _restart(seed=18, steps=700, model=_FOCUS7_CAP20_WIDE,
                                                          batch_size=128, warmup_steps=100, ema_decay=0.997),
    # The same thirteenth cycle with a caption adapter grown in (token ids read by a 2-layer transformer, added to the
    # CLIP's token states from zero; as "-xa-ft8"), to measure through the pipeline what "-xa-ft8" measured only from
    # true z_i: the CLIP's states put "left" and "right" at cosine 0.990, token ids do not. Same scenes and steps as
    # the control above; 30 min 41 s on 2 threads. Measured 2026-12-07 through the pipeline (per-caption seeds) against
    # the shipped twelfth: 0.634 vs 0.640 on 500 val captions (-0.006 +- 0.017), 0.624 vs 0.640 on the 500 test
    # captions (-0.016 +- 0.015), relation 0.372 / 0.321 vs 0.407 / 0.351: no gain, so not shipped.
    "tiny-16-rb1-sc-focus7-cap20-wide-ft12-b128-xa": _restart(
        seed=18, steps=700, model=_FOCUS7_CAP20_WIDE.with_(caption_adapter=CaptionEncoderConfig(layers=2)),
        batch_size=128, warmup_steps=100, ema_decay=0.997),
    "tiny-16-rb1-sc-focus7-cap20-wide-ft10b-forms": replace(
        _restart(seed=12, steps=5000, model=_FOCUS7_CAP20_WIDE), form_weights=_PAIRS_AND_LISTS),
    "tiny-16-rb1-sc-focus7-cap20-wide-ft10c-forms": replace(
        _restart(seed=13, steps=5000, model=_FOCUS7_CAP20_WIDE), form_weights=_PAIRS_AND_LISTS),
    # The tenth cycle grown wider again: levels of 48, 64 and 96 channels (2.69M parameters against 1.55M; 1.6x the
    # time a step), GroupNorm groups kept at 4 channels (norm_group_size) so the growth changes nothing it computes,
    # `--init-from` the tenth (shapes-tiny's decoder), on scenes from seed 14 for 7,000 steps: the eleventh cycles at
    # this width had levelled off (+0.012, -0.002, +0.010 on 1,000 val images), so the capacity is what is tried.
    # Trained 2026-12-07 (2 h 03 min on 2 threads): from true z_i 0.637 vs 0.627 on 1,000 val images (+0.010 +- 0.012),
    # 0.648 vs 0.636 on the 500 test images, sampling 1.43x slower; within noise, so not shipped
    # (docs/decoder-cycles-december.md).
    "tiny-16-rb1-sc-focus7-cap20-wider-ft10": _restart(seed=14, steps=7000, model=_WIDER),
    # A second cycle of that wider decoder, `--init-from` it (runs/dec-wider-ft10/model), on scenes from seed 15 for
    # 2,800 steps (1 h 40 min on one thread beside another run). Measured 2026-12-07 from true z_i on 1,000 val
    # images: 0.636 against its first cycle's 0.637 and the shipped 0.627; not shipped (docs/decoder-larger-batch.md).
    "tiny-16-rb1-sc-focus7-cap20-wider-ft11": _restart(seed=15, steps=2800, model=_WIDER, warmup_steps=100),
    # The decoder of the two-hour pipeline (shapes-2h): "tiny-16-rb1" trained from scratch with what the shipped
    # decoder's later cycles added that costs nothing a step (half the timesteps on the 7 the pipeline samples, the
    # caption kept 80% of the time, channels-last convolutions), for the 7,500 steps that fit beside the priors and
    # the upsampler on a 2-core CPU (`unclip train all --preset shapes-2h --jobs 2`). Measured: from true z_i 0.032
    # on the 500 test images, blobs in the right colours, not shapes (docs/pipeline.md, "The whole pipeline in
    # two hours").
    "tiny-16-rb1-fast": _FAST_2H,
    # The two-hour decoder with object pixels weighed 1 + 4 and 1 + 10 times a background pixel's (weighting.py;
    # DecoderConfig.foreground_weight): the same scenes, seed and steps, so each is paired with tiny-16-rb1-fast at
    # equal steps, to see whether shapes come sooner when the loss is not mostly background.
    "tiny-16-rb1-fast-fg4": DecoderRecipe(model=_FAST_2H.model.with_(foreground_weight=4.0), train=_FAST_2H.train),
    "tiny-16-rb1-fast-fg10": DecoderRecipe(model=_FAST_2H.model.with_(foreground_weight=10.0), train=_FAST_2H.train),
    # Read at step 2,000-3,000 both drew the right colours sooner than the plain recipe, but in blobs too large and
    # too many (the tilt weighting.py describes); -fg10 more so (stopped at step 3,550). The weights only where x_t
    # shows the objects (t < 0.6 T): the colours' head start without the tilt, if the tilt comes from the noisy steps.
    # Measured 2026-12-07 at step 7,500 from true z_i (weights then divided by the batch's mean, commit abc7133; now
    # by each image's): -fg4 0.030 and -fg4-t60 0.018 against 0.032 on the 500 test images, 0.020 and 0.020 against
    # 0.021 on 1,000 val images; no gain, so the two-hour recipe stays unweighted (docs/pipeline.md, "Weighing the
    # objects in the two-hour decoder's loss").
    "tiny-16-rb1-fast-fg4-t60": DecoderRecipe(model=_FAST_2H.model.with_(foreground_weight=4.0,
                                                                         foreground_weight_below=0.6),
                                              train=_FAST_2H.train),
    # A small, briefly trained decoder to guide the shipped one by autoguidance (Karras et al. 2024, "Guiding a
    # diffusion model with a bad version of itself"): half the width (model_channels 8, 0.23M parameters), no
    # self-conditioning, the shipped recipe's timestep focus and caption dropout, 8,000 steps. Read at steps 1,000 to
    # 3,000 (stopped there) it was too weak a guide: below classifier-free guidance at every scale
    # (docs/decoder-cycles-december.md, "Autoguidance"); the shipped guide is tiny-16-rb1 at step 20,000.
    "tiny-8-rb1-guide": DecoderRecipe(
        model=_FOCUS7.with_(unet=_FOCUS7.unet.with_(model_channels=8, head_channels=8, self_condition=False),
                            p_drop_text=0.2),
        train=replace(_TINY_TRAIN, steps=8000, checkpoint_every=1000, keep_checkpoints=8)),
    # The same at the shipped decoder's width (0.68M parameters, no self-conditioning), 12,000 steps. Read at steps
    # 2,000 to 8,000 (stopped there) it guided no better than classifier-free guidance (0.500-0.545 against 0.545 on
    # 200 val images), the step-20,000 tiny-16-rb1 guide 0.570.
    "tiny-16-rb1-guide": DecoderRecipe(
        model=_FOCUS7.with_(unet=_FOCUS7.unet.with_(self_condition=False), p_drop_text=0.2),
        train=replace(_TINY_TRAIN, steps=12000, checkpoint_every=2000, keep_checkpoints=6)),
    # 32 -> 128 on 32 px crops, 1.8M parameters.
    "tiny-up-128": DecoderRecipe(model=UpsamplerConfig(diffusion=FAST_DIFFUSION), train=TrainConfig(
        steps=1200, batch_size=32, lr=5e-4, warmup_steps=100, weight_decay=0.0, ema_decay=0.999, ema_warmup=True,
        checkpoint_every=250, log_every=25, hook_every=1000, seed=0)),
}
# Which `unclip train` stage each recipe belongs to, read off its model config.
STAGE_OF = {name: "upsampler" if isinstance(recipe.model, UpsamplerConfig) else "decoder"
            for name, recipe in RECIPES.items()}


def decoder_conditioning(decoder: Decoder, clip: CLIP, images: torch.Tensor,
                         captions: list[str]) -> tuple[torch.Tensor | None, dict[str, torch.Tensor]]:
    """z_i (B, E) of images in [-1, 1] (resized to CLIP's side if needed) through the frozen CLIP, None for a
    decoder without z_i input (GLIDE-style), and what the decoder reads for the captions (Decoder.caption_inputs:
    the CLIP's token states, or the token ids for a decoder with its own caption encoder)."""
    z_i = None
    if decoder.config.unet.clip_dim is not None:
        size = clip.config.image_size
        pixels = images if images.shape[-1] == size else F.interpolate(images, size=(size, size), mode="area")
        with torch.no_grad():
            z_i = F.normalize(clip.encode_image_pixels(pixels), dim=-1)
    return z_i, decoder.caption_inputs(clip.tokenizer(captions).to(images.device), clip=clip)


def decoder_loss(clip: CLIP):
    def loss_fn(model, batch, generator) -> dict[str, torch.Tensor]:
        core = model.module if hasattr(model, "module") else model
        z_i, caption = decoder_conditioning(core, clip, batch["image"], batch["caption"])
        return {"loss": model.loss(images=batch["image"], image_embedding=z_i, generator=generator, **caption)}

    return loss_fn


def upsampler_loss(model, batch, generator) -> dict[str, torch.Tensor]:
    return {"loss": model.loss(images=batch["image"], generator=generator)}


def _decoder_grid(clip: CLIP, steps: int, n: int):
    """Progress grids: n test scenes (top row) and the decoder's reconstructions from their z_i and captions."""
    def sample(model, captions, generator):
        data = ShapesDataset("test", size=model.config.image_size, length=n)
        images = torch.stack([data[i][0] for i in range(n)])
        z_i, caption = decoder_conditioning(model, clip, images, [data[i][1] for i in range(n)])
        out = model.sample(image_embedding=z_i, steps=steps, generator=generator, **caption)
        return [to_pil(x) for x in torch.cat([images, out])]

    return sample


def _read_model_config(stored: dict) -> dict:
    """A run directory's stored decoder or upsampler config as today's code reads it: the stage's config rebuilt
    from its JSON (fields added since, such as UNetConfig.self_condition, take their defaults), the run's other
    entries (stage, clip, init_from ...) as they were."""
    cls = UpsamplerConfig if stored.get("stage") == "upsampler" else DecoderConfig
    names = {f.name for f in fields(cls)}
    return stored | cls.from_dict({k: v for k, v in stored.items() if k in names}).to_dict()


# Decoder modules a preset may add to the model it starts from (--init-from): each starts as no change to what the
# saved decoder computes (a caption adapter's output projection is zero), so only its own weights are new.
ADDABLE_MODEL = ("caption_adapter",)


def _load_initial_weights(model: Decoder | Upsampler, directory: str | os.PathLike) -> None:
    """Copy a saved model's weights into `model`, refusing one of another kind or config. The differences allowed:
    `model` may be a grown copy of the saved one (GROWABLE; see grow.py), may add modules that start as no change
    (ADDABLE_MODEL), and may train with other TRAINING_ONLY diffusion settings."""
    saved = load_decoder(directory)
    mine, theirs = (network_config(m.config) for m in (model, saved))
    added = [k for k in ADDABLE_MODEL if k in mine and k not in theirs]  # new modules that start as no change
    mine = {k: v for k, v in mine.items() if k not in added}
    grown = type(saved) is type(model) and "unet" in mine and mine != theirs and mine == theirs | {
        "unet": theirs["unet"] | {k: mine["unet"][k] for k in GROWABLE}}
    if type(saved) is not type(model) or (mine != theirs and not grown):
        diff = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
        raise ValueError(f"--init-from {directory}: a {type(saved).__name__} whose config differs from the "
                         f"preset's {type(model).__name__} (in {diff or 'kind'}); start from a model of this preset, "
                         f"one it can grow from (in {', '.join(GROWABLE)} only) or one trained with other "
                         f"training-only settings ({', '.join(TRAINING_ONLY + TRAINING_ONLY_MODEL)})")
    if not grown and not added:
        model.load_state_dict(saved.state_dict(), strict=True)
        return
    if not grown:
        missing, unexpected = model.load_state_dict(saved.state_dict(), strict=False)
        if unexpected or any(not k.startswith(tuple(f"{name}." for name in added)) for k in missing):
            raise ValueError(f"--init-from {directory}: weights do not fit (missing {missing}, "
                             f"unexpected {unexpected})")
        return
    try:
        grow_unet(model.net, saved.net)
    except ValueError as error:
        raise ValueError(f"--init-from {directory}: {error}") from None
    rest = {k: v for k, v in saved.state_dict().items() if not k.startswith("net.")}  # e.g. a caption encoder
    missing, unexpected = model.load_state_dict(rest, strict=False)
    if unexpected or any(not k.startswith("net.") for k in missing):
        raise ValueError(f"--init-from {directory}: weights do not fit (missing {missing}, unexpected {unexpected})")


def train_decoder(*, preset_name: str, run_dir: str | os.PathLike, clip_dir: str | os.PathLike | None = None,
                  max_steps: int | None = None, device: str = "cpu", progress: bool = True,
                  dist_ctx: DistContext | None = None, init_from: str | os.PathLike | None = None,
                  channels_last: bool = False, train_changes: Mapping[str, object] | None = None,
                  max_seconds: float | None = None) -> Path:
    """Train (or resume) a decoder or upsampler preset; writes RUN_DIR/model and returns that path.

    `init_from` names a saved model (a `save_decoder` directory) of the preset's exact config whose weights the
    run starts from instead of random ones (fine-tuning; the EMA starts from them too). A resumed run reads its
    checkpoint, which supersedes them; the directory is recorded in the run's config, so resuming needs the same.

    `channels_last` runs the UNet's convolutions in NHWC (UNetConfig.channels_last, saved with the model, so it
    samples that way too): 1.10x the training and sampling speed of the shipped decoder's size on a 2-core CPU
    (benchmarks/train_speed.py). Only rounding changes; `init_from` may be either layout; resuming needs the same.

    `train_changes` replace fields of the preset's TrainConfig (`unclip train --set`; unclip/train/overrides.py);
    `max_seconds` stops the run early, checkpointed, and writes RUN_DIR/model from where it stopped (Trainer.fit)."""
    if preset_name not in RECIPES:
        raise ValueError(f"unknown decoder preset {preset_name!r}: expected one of {', '.join(RECIPES)}")
    recipe, run_dir, stage = RECIPES[preset_name], Path(run_dir), STAGE_OF[preset_name]
    recipe = replace(recipe, train=with_train_changes(recipe.train, train_changes))
    refuse_other_train_config(run_dir, recipe.train)  # before minutes of loading
    if channels_last:
        recipe = replace(recipe, model=recipe.model.with_(unet=recipe.model.unet.with_(channels_last=True)))
    ctx = dist_ctx or distributed.current()
    torch.manual_seed(recipe.train.seed)
    hooks = []
    if stage == "decoder":
        if clip_dir is None:
            raise ValueError("the decoder learns to invert a CLIP: pass clip_dir (--clip)")
        clip = load_clip(clip_dir, device=device).requires_grad_(False)
        image_dim = None if recipe.model.unet.clip_dim is None else clip.config.embed_dim
        cfg, encoder = recipe.model, recipe.model.caption_encoder
        if encoder is None:  # the UNet reads the CLIP's token states
            cfg = cfg.with_(unet=cfg.unet.with_(clip_dim=image_dim, text_width=clip.config.text_width))
        else:  # its own caption encoder reads the CLIP's token ids
            encoder = encoder.with_(vocab_size=clip.config.vocab_size, context_length=clip.config.context_length)
            cfg = cfg.with_(unet=cfg.unet.with_(clip_dim=image_dim, text_width=encoder.width), caption_encoder=encoder)
        # Seeded again here so the decoder's initial weights do not depend on how many random numbers building the
        # CLIP drew (a conv-stem CLIP draws a different count than a patch one): A/B runs across CLIPs start equal.
        torch.manual_seed(recipe.train.seed)
        model, loss_fn = Decoder(cfg), decoder_loss(clip)
        hooks.append(sample_grid_hook(_decoder_grid(clip, recipe.sample_steps, 6), ["real"] * 6 + ["decoded"] * 6,
                                      columns=6))
        extra = {"clip": str(clip_dir)}
    else:
        cfg, model, loss_fn, extra = recipe.model, Upsampler(recipe.model), upsampler_loss, {}
    if init_from is not None:
        _load_initial_weights(model, init_from)
        extra = extra | {"init_from": str(init_from)}
    dataset = ShapesItems("train", size=cfg.image_size, form_weights=recipe.form_weights)
    if recipe.form_weights is not None:
        extra = extra | {"form_weights": list(recipe.form_weights)}
    trainer = Trainer(model=model, loss_fn=loss_fn, dataset=dataset, config=recipe.train, run_dir=run_dir,
                      model_config={"stage": stage, **cfg.to_dict(), **extra}, collate_fn=collate_image_caption,
                      read_model_config=_read_model_config,
                      hooks=hooks, device=device, progress=progress, dist_ctx=ctx)
    trainer.fit(max_steps, max_seconds=max_seconds)
    out = run_dir / "model"
    if trainer.is_main:
        save_decoder(out, trainer.ema.shadow if trainer.ema is not None else trainer.module)
    return out

