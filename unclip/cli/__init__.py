"""The `unclip` command line. Thin: every verb calls library functions and prints what they return."""

from __future__ import annotations

import argparse

from ..world import SPLITS
from .args import DEFAULT_MODEL, SAMPLER_CHOICES, _add_sampling_args, _non_negative_float
from .pipeline import _assemble, _eval, _generate, _interpolate, _pipeline, _textdiff, _vary
from .presets import STAGES
from .train import _train
from .world import _demo, _world_sample, _world_score, _world_show

__all__ = ["DEFAULT_MODEL", "SAMPLER_CHOICES", "_pipeline", "build_parser", "main"]



def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="unclip",
        description="unclip: DALL-E 2 (unCLIP) you can train and test on a CPU. "
        "Run `unclip VERB --help` for each verb.",
    )
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    world = verbs.add_parser("world", help="the built-in Shapes world: sample scenes, score images, show a grid",
                             description="The Shapes world (shared/WORLD.md): captioned scenes rendered on the fly, "
                             "and an exact scorer that checks any image against its caption.")
    world_verbs = world.add_subparsers(dest="world_verb", required=True, metavar="ACTION")

    sample = world_verbs.add_parser(
        "sample", help="render scenes to DIR/000000.png ... and DIR/prompts.jsonl",
        description="Render scenes START..START+N-1 of a split as PNGs, with a prompts.jsonl manifest "
        "(one {\"file\", \"caption\", \"split\", \"index\"} per line). Deterministic: the same split, index "
        "and size give byte-identical files on every run.")
    sample.add_argument("--split", choices=SPLITS, default="test", help="which split (default: test)")
    sample.add_argument("--n", type=int, required=True, help="how many scenes")
    sample.add_argument("--size", type=int, default=64, help="image side in pixels, 16..1024 (default: 64)")
    sample.add_argument("--out", required=True, help="output directory")
    sample.add_argument("--start", type=int, default=0, help="index of the first scene (default: 0)")
    sample.add_argument("--quiet", action="store_true", help="no progress bar")
    sample.set_defaults(run=_world_sample)

    score = world_verbs.add_parser(
        "score", help="score every image of DIR/prompts.jsonl against its caption",
        description="Parse every image listed in DIR/prompts.jsonl and check it against its caption. "
        "Prints accuracy per skill tag, then, as its last line, one JSON object "
        "{\"n\", \"overall\", \"skills\", \"errors\"}. Missing or unreadable images are reported per file "
        "on stderr and left out of n; the rest are still scored.")
    score.add_argument("dir", help="directory holding prompts.jsonl and the images it lists")
    score.add_argument("--show-failures", type=int, default=0, metavar="K",
                       help="print why the first K wrong images are wrong")
    score.add_argument("--quiet", action="store_true", help="no progress bar")
    score.set_defaults(run=_world_score)

    show = world_verbs.add_parser("show", help="write a captioned grid of scenes as a PNG",
                                  description="Render N scenes of a split into one captioned PNG grid.")
    show.add_argument("--split", choices=SPLITS, default="train", help="which split (default: train)")
    show.add_argument("--n", type=int, default=16, help="how many scenes (default: 16)")
    show.add_argument("--size", type=int, default=128, help="image side in pixels (default: 128)")
    show.add_argument("--start", type=int, default=0, help="index of the first scene (default: 0)")
    show.add_argument("--columns", type=int, default=None, help="grid width (default: about square)")
    show.add_argument("--out", required=True, help="PNG file to write")
    show.set_defaults(run=_world_show)

    gen = verbs.add_parser(
        "generate", help="captions -> images (PNGs + prompts.jsonl + grid.png in --out)",
        description="Generate images for captions through the whole pipeline (prior, decoder, upsamplers). Writes "
        "NNNNNN.png and prompts.jsonl (one {\"file\", \"caption\", ...} a line, which `unclip world score` "
        "reads) into --out. Prompt i is seeded with --seed + i, so its images are the same at any --batch-size.")
    gen.add_argument("captions", nargs="*", help="captions to draw")
    gen.add_argument("--prompts-file", default=None, help="prompts.jsonl (a {\"caption\"} object a line; other keys "
                     "are carried over) or a text file with a caption a line")
    gen.add_argument("--out", required=True, help="output directory")
    gen.add_argument("--n-per-prompt", type=int, default=1, help="images per caption (default: 1)")
    gen.add_argument("--batch-size", type=int, default=32, help="prompts per batch (default: 32)")
    gen.add_argument("--no-upsample", action="store_true",
                     help="write the decoder's images, skipping the upsamplers (faster; the scorer reads any size)")
    _add_sampling_args(gen, prior=True)
    gen.set_defaults(run=_generate)

    vary = verbs.add_parser(
        "vary", help="variations of images (unCLIP §3.1)",
        description="Encode each image to (z_i, x_T) by CLIP and DDIM inversion of the decoder, then decode with "
        "DDIM at --eta (0 reconstructs; larger wanders further). prompts.jsonl lines carry 'source', the input path.")
    vary.add_argument("images", nargs="+", help="input images")
    vary.add_argument("--n", type=int, default=4, help="variations per image (default: 4)")
    vary.add_argument("--eta", type=_non_negative_float, default=None,
                      help="DDIM eta of the resampling: 0 gives the image back, larger values wander further "
                      "(default: 0.2, the largest measured to keep the scene in 80%% of variations)")
    vary.add_argument("--caption", default=None, help="caption to record in prompts.jsonl (default: empty)")
    vary.add_argument("--out", required=True, help="output directory")
    _add_sampling_args(vary, prior=False)
    vary.set_defaults(run=_vary)

    interp = verbs.add_parser(
        "interpolate", help="a strip between two images (unCLIP §3.2)",
        description="Slerp between the two images' z_i, and between their DDIM-inverted x_T (or, with "
        "--fixed-noise, one x_T for all frames).")
    interp.add_argument("a", help="first image")
    interp.add_argument("b", help="last image")
    interp.add_argument("--steps", type=int, default=7, help="frames, ends included (default: 7)")
    interp.add_argument("--fixed-noise", action="store_true", help="one x_T for every frame instead of slerping")
    interp.add_argument("--out", required=True, help="output directory")
    _add_sampling_args(interp, prior=False)
    interp.set_defaults(run=_interpolate)

    diff = verbs.add_parser(
        "textdiff", help="edit an image by a change of caption (unCLIP §3.3)",
        description="z_d = normalise(z_t(--to) - z_t(--from)); decode slerp(z_i, z_d, theta) for theta from 0 to "
        "--max-theta, with x_T fixed from DDIM inversion of the image.")
    diff.add_argument("image", help="input image")
    diff.add_argument("--from", dest="from_caption", required=True, help="caption of the image as it is")
    diff.add_argument("--to", dest="to_caption", required=True, help="caption of the image as wanted")
    diff.add_argument("--steps", type=int, default=5, help="frames (default: 5)")
    diff.add_argument("--max-theta", type=float, default=0.5, help="largest slerp angle fraction (default: 0.5)")
    diff.add_argument("--out", required=True, help="output directory")
    _add_sampling_args(diff, prior=False)
    diff.set_defaults(run=_textdiff)

    asm = verbs.add_parser(
        "assemble", help="put trained stages together into a pipeline directory",
        description="Load each trained stage (the model/ directories that `unclip train` writes) and save them as "
        "one pipeline directory that `--model` accepts (float16 weights unless --full-precision).")
    asm.add_argument("--clip", required=True, help="CLIP directory")
    asm.add_argument("--decoder", required=True, nargs="+", metavar="DIR",
                     help="decoder directory; several decoders of one config (fine-tunes of one decoder) are averaged "
                     "weight for weight into one (a uniform model soup)")
    asm.add_argument("--prior", default=None, help="diffusion prior directory")
    asm.add_argument("--ar-prior", default=None, help="autoregressive prior directory")
    asm.add_argument("--upsampler", action="append", default=[], help="upsampler directory (repeat, in order)")
    asm.add_argument("--decoder-guide", default=None, metavar="DIR",
                     help="a weaker decoder of the same images and inputs to guide the decoder with (autoguidance, "
                     "Karras et al. 2024), on by default in the pipeline written")
    asm.add_argument("--decoder-distilled", default=None, metavar="DIR",
                     help="the decoder distilled to draw what the guided decoder draws at one evaluation a step "
                     "(unclip train decoder-distill), sampled by default in the pipeline written")
    asm.add_argument("--judge", default=None, metavar="DIR",
                     help="an image-text matching judge (unclip train judge) to re-rank candidate images with instead "
                     "of the CLIP's cosine, on by default in the pipeline written")
    asm.add_argument("--out", required=True, help="pipeline directory to write")
    asm.add_argument("--full-precision", action="store_true", help="keep float32 weights")
    asm.set_defaults(run=_assemble)

    ev = verbs.add_parser(
        "eval", help="generate for test and novel captions, then measure (report.md, metrics.json)",
        description="Generate images for N test-split (or --split val) and N/2 novel-split captions into --out "
        "(PNGs + prompts.jsonl, which `unclip world score` reads too), then report the scorer's accuracy by skill, "
        "held-out-pair accuracy, the prior's metrics and, with --eval-encoder (a CLIP trained by `unclip train clip "
        "--preset eval`), FD, KID, precision/recall, CLIP score and diversity; writes report.md, metrics.json, "
        "samples.png and (with matplotlib) accuracy_by_skill.png. --data emoji measures against held-out emoji "
        "instead.")
    ev.add_argument("--n", type=int, default=500, help="test (or --split) captions (default: 500)")
    ev.add_argument("--split", default="test", choices=("test", "val"),
                    help="the world's split to score on (default: test, for reporting); val is for choosing between "
                    "models, whose score on captions they were chosen on would be biased upwards")
    ev.add_argument("--n-novel", type=int, default=None, help="novel-split captions (default: n / 2)")
    ev.add_argument("--eval-encoder", default=None, help="evaluation CLIP directory (not the pipeline's own)")
    ev.add_argument("--upsample", action="store_true", help="score the upsampled images (default: decoder size)")
    ev.add_argument("--data", default="shapes",
                    help="what to generate for and measure against: shapes (default: the world's test and novel "
                    "captions, scored exactly) or another source of captioned images, e.g. emoji (its held-out test "
                    "split; needs the emoji extra) or folder:DIR, measured with --eval-encoder only (FD, KID, "
                    "precision/recall, CLIP score, diversity against the source's own images: 2N of them, drawn by a "
                    "seeded permutation, N to generate for and N for the real-vs-real floor)")
    ev.add_argument("--out", required=True, help="output directory")
    _add_sampling_args(ev, prior=True)
    ev.set_defaults(run=_eval)

    train = verbs.add_parser(
        "train", help="train a stage on the engine (rerun on the same --run-dir to resume)",
        description="Train one stage. Rerunning the same command on the same run directory resumes from its last "
        "complete checkpoint and ends exactly where an uninterrupted run would. Stages: clip (the image and text "
        "encoders, trained contrastively on the Shapes world), prior and ar-prior (the diffusion and the "
        "autoregressive prior, unCLIP §2.2: caption -> CLIP image embedding inside the frozen CLIP given by --clip), "
        "decoder (z_i and caption -> 32 px image, inverting the CLIP given by --clip), upsampler (32 -> 128 px), "
        "decoder-distill (the guided decoder distilled into one evaluation a step), judge (the image-text matcher "
        "that re-ranks candidate images, on the frozen CLIP given by --clip), or "
        "all (every stage in order, then RUN_DIR/pipeline: preset shapes-tiny, the shipped model's recipes, or "
        "shapes-2h, a whole pipeline in under two hours on a 2-core CPU with --jobs 2). Each stage has several "
        "presets: the shipped model's, the paper's baselines (the decoder's tiny-glide and tiny-16-rb1-glide read "
        "the caption alone) and candidates that were measured and not kept. --list-presets names them and marks "
        "the ones `train all` uses. A decoder preset ending in -ftN continues a trained decoder: give it the "
        "previous cycle's model with --init-from (a wider or self-conditioned one grows it first, still computing "
        "what it did). What each preset is and what it measured is written beside it in unclip/STAGE/train.py; "
        "docs/ holds the record.")
    train.add_argument("stage", choices=[*STAGES, "all"],
                       help="which stage")
    train.add_argument("--preset", default="tiny",
                       help="the stage's recipe (default: tiny; for all: shapes-tiny); --list-presets lists them")
    train.add_argument("--list-presets", action="store_true",
                       help="print the stage's presets (every stage's for all), marked where `train all` uses them, "
                       "and exit")
    train.add_argument("--model", default=None, metavar="DIR",
                       help="decoder-distill: the pipeline directory whose guided decoder is distilled, with its "
                       "CLIP, guide and decoder sampling settings (required)")
    train.add_argument("--clip", default=None, metavar="DIR",
                       help="priors and decoder: the trained CLIP directory whose embeddings they learn; judge: the "
                       "pipeline's CLIP, which it reads (required)")
    train.add_argument("--run-dir", default=None,
                       help="directory for checkpoints, logs and the final model (required unless --list-presets)")
    train.add_argument("--max-steps", type=int, default=None,
                       help="stop after this optimizer step (default: the preset's full schedule)")
    train.add_argument("--data", default="shapes",
                       help="data source: shapes[:SPLIT] (default), emoji[:SPLIT], folder:DIR, shards:DIR; "
                       "priors also take embeddings:DIR (precomputed img_emb/ and text_emb/ .npy shards)")
    train.add_argument("--init-from", default=None, metavar="DIR",
                       help="priors, decoder and upsampler: start from the weights of this saved model (of the "
                       "preset's exact config, or for the decoder one the preset grows: a z_i MLP added, wider "
                       "levels) instead of random "
                       "ones, to fine-tune it; a grown model starts out computing what the saved one does; resuming "
                       "needs the same DIR")
    train.add_argument("--channels-last", action="store_true",
                       help="decoder and upsampler: run the UNet's convolutions in NHWC, saved with the model (1.10x "
                       "the training and sampling speed at the shipped decoder's size on a 2-core CPU; only rounding "
                       "changes; resuming needs the same flag)")
    train.add_argument("--no-malloc-tuning", action="store_true",
                       help="leave glibc's allocator at its defaults instead of keeping the memory each step frees "
                       "for the next (which saves the kernel's page faults: 1.03x on a 2-core CPU)")
    train.add_argument("--jobs", type=int, choices=(1, 2), default=1,
                       help="all: 2 trains the decoder beside the priors and upsamplers, two processes of half the "
                       "threads each, after the CLIP (on a 2-core CPU two 1-thread trainings get more done than one "
                       "2-thread training); 1 (default) trains every stage in turn")
    train.add_argument("--max-minutes", type=float, default=None, metavar="M",
                       help="one stage: stop after the step that ends M minutes into training, checkpointed, and "
                       "write the model from there (rerun without it to resume the schedule); for a time-boxed "
                       "session or a GPU lent for minutes")
    train.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="train_changes",
                       help="one stage: change a field of the preset's training config (repeatable), e.g. on a GPU "
                       "--set batch_size=256 --set num_workers=12 --set precision=bf16; also steps, lr, "
                       "warmup_steps, checkpoint_every ...; saved in the run's config, so resuming needs the same "
                       "(except log_every, checkpoint_every, keep_checkpoints, hook_every and max_bad_steps, which "
                       "may change between sittings)")
    train.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    train.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    train.set_defaults(run=_train)

    demo = verbs.add_parser("demo", help="the main job on the built-in default (what `make demo` runs)",
                            description="With the shipped pipeline (--model): generate images for 8 captions, "
                            "vary a Shapes image, interpolate between two, apply a text diff, and write them all "
                            "with index.html. Always: render real test scenes, score them with the exact scorer and "
                            "write a grid framed green (correct) or red.")
    demo.add_argument("--model", default=str(DEFAULT_MODEL), help="pipeline directory (default: models/shapes-tiny)")
    demo.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    demo.add_argument("--out", default="demo", help="output directory (default: demo)")
    demo.add_argument("--n", type=int, default=16, help="how many scenes (default: 16)")
    demo.set_defaults(run=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, FileNotFoundError) as error:
        parser.exit(2, f"unclip: error: {error}\n")


