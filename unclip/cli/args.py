"""Argument types and the sampling options the pipeline verbs share."""

from __future__ import annotations

import argparse
from pathlib import Path

SAMPLER_CHOICES = ("ddim", "ddpm", "dpm++")  # pipeline.SAMPLERS, named here so that --help needs no torch
DEFAULT_MODEL = Path(__file__).resolve().parents[2] / "models" / "shapes-tiny"


def _non_negative_float(text: str) -> float:
    """argparse type: a float >= 0, refused with the bad value named."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}") from None
    if not value >= 0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {value}")
    return value


def _positive_int(text: str) -> int:
    """argparse type: an integer >= 1, refused with the bad value named (0 would otherwise mean 'the default')."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _add_sampling_args(parser, *, prior: bool) -> None:
    parser.add_argument("--model", default=str(DEFAULT_MODEL), help="pipeline directory (default: the shipped "
                        "models/shapes-tiny)")
    if prior:
        parser.add_argument("--prior", choices=["diffusion", "ar", "text-embedding", "none"], default=None,
                            help="caption -> z_i route (default: the pipeline's, diffusion)")
        parser.add_argument("--prior-steps", type=_positive_int, default=None, help="diffusion prior sampling steps")
        parser.add_argument("--prior-sampler", choices=SAMPLER_CHOICES, default=None,
                            help="diffusion prior sampler (default: the pipeline's)")
        parser.add_argument("--best-of", type=_positive_int, default=None,
                            help="diffusion prior samples per caption, the one with the highest z_i . z_t kept "
                            "(unCLIP §2.2: 2; default: the pipeline's)")
        parser.add_argument("--candidates", type=_positive_int, default=None, metavar="K",
                            help="decoder images drawn per image asked for, the one the pipeline's CLIP rates closest "
                            "to the caption kept (CLIP re-ranking, as DALL-E 1 samples; K times the prior's and "
                            "decoder's work; default: the pipeline's: 2 for models/shapes-tiny, 1 to turn it off)")
        parser.add_argument("--decoder-sampler", choices=SAMPLER_CHOICES, default=None,
                            help="decoder sampler: ddim, ddpm or dpm++ (DPM-Solver++(2M); default: the pipeline's)")
    parser.add_argument("--decoder-steps", type=_positive_int, default=None,
                        help="decoder sampling steps (default: pipeline's; for the manipulations, the pipeline's "
                        "manipulation_steps where it sets them; the manipulations always run DDIM, which "
                        "their inversion needs)")
    if prior:
        parser.add_argument("--guidance", type=float, default=None,
                            help="decoder guidance scale (default: pipeline's)")
        parser.add_argument("--guidance-interval", type=float, nargs=2, default=None, metavar=("LO", "HI"),
                            help="guide only the decoder steps whose t / (T - 1) lies in [LO, HI], the others reading "
                            "the conditional branch alone at half the cost (Kynkäänniemi et al. 2024); 0 1 guides "
                            "every step (default: the pipeline's)")
        parser.add_argument("--autoguidance", action=argparse.BooleanOptionalAction, default=None,
                            help="guide the decoder by the pipeline's weaker guide decoder instead of classifier-free "
                            "guidance, --guidance weighing decoder - guide (Karras et al. 2024; needs a pipeline with "
                            "a decoder_guide stage; default: the pipeline's)")
        parser.add_argument("--distilled", action=argparse.BooleanOptionalAction, default=None,
                            help="sample the pipeline's distilled decoder, one network trained to draw what the "
                            "guided decoder draws at one evaluation a step (unclip train decoder-distill; needs a "
                            "decoder_distilled stage; default: the pipeline's). --guidance, --guidance-interval or "
                            "--autoguidance without --distilled guide the decoder itself instead")
        parser.add_argument("--judge", action=argparse.BooleanOptionalAction, default=None,
                            help="re-rank the --candidates by the pipeline's judge, an image-text matching network "
                            "trained on near-miss captions (unclip train judge; needs a judge stage), instead of by "
                            "the CLIP's cosine (default: the pipeline's)")
    else:
        parser.add_argument("--guidance", type=float, default=None,
                            help="decoder guidance of the manipulation's decode (default: 1, unguided like the DDIM "
                            "inversion, which drifts under guidance; larger values sharpen variations at high --eta)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


