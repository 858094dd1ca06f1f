"""The `unclip` command line. Thin: every verb calls library functions and prints what they return."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

from PIL import Image
from tqdm import tqdm

from .grid import captioned_grid
from .world import SPLITS, read_manifest, render, sample_scene, score_entries, summarise, write_world_samples
from .world.captions import SKILLS
from .world.vocab import check_image_size, check_split

SAMPLER_CHOICES = ("ddim", "ddpm", "dpm++")  # pipeline.SAMPLERS, named here so that --help needs no torch


def _world_sample(args) -> int:
    check_split(args.split)
    check_image_size(args.size)
    with tqdm(total=args.n, desc="rendering", unit="img", disable=args.quiet) as bar:
        path = write_world_samples(args.out, split=args.split, n=args.n, size=args.size, start=args.start,
                                   progress=bar.update)
    print(f"wrote {args.n} images and {path}")
    return 0


def _print_table(summary: dict) -> None:
    print(f"{'skill':<12}{'n':>7}{'accuracy':>10}")
    for tag in SKILLS:
        if tag in summary["skills"]:
            print(f"{tag:<12}{summary['counts'][tag]:>7}{summary['skills'][tag]:>10.3f}")
    overall = summary["overall"]
    print(f"{'overall':<12}{summary['n']:>7}{overall if overall is None else format(overall, '.3f'):>10}")
    if summary["errors"]:
        print(f"{summary['errors']} file(s) could not be scored (listed on stderr)")


def _world_score(args) -> int:
    entries, errors = read_manifest(args.dir)
    for error in errors:
        print(error, file=sys.stderr)
    scores = []
    for score in tqdm(score_entries(args.dir, entries), total=len(entries), desc="scoring", unit="img",
                      disable=args.quiet):
        scores.append(score)
        if score.correct is None:
            tqdm.write(f"error: {score.reason}", file=sys.stderr)
    summary = summarise(scores)
    summary["errors"] += len(errors)
    failures = [s for s in scores if s.correct is False][: args.show_failures]
    for s in failures:
        print(f"wrong: {s.file}: {s.caption!r}: {s.reason}")
    _print_table(summary)
    print(json.dumps({"n": summary["n"], "overall": summary["overall"], "skills": summary["skills"],
                      "errors": summary["errors"]}))
    return 0 if summary["n"] else 1


def _world_show(args) -> int:
    scenes = [sample_scene(args.split, args.start + k) for k in range(args.n)]
    images = [render(scene, args.size) for scene in scenes]
    grid = captioned_grid(images, [scene.caption for scene in scenes], columns=args.columns)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    grid.save(args.out)
    print(f"wrote {args.out}")
    return 0


def _train(args) -> int:
    import torch

    from .train.distributed import init_from_env

    if args.threads:
        torch.set_num_threads(args.threads)
    ctx = init_from_env()  # under torchrun: join the process group; otherwise rank 0 of 1
    device = f"cuda:{ctx.local_rank}" if args.device == "cuda" and ctx.enabled else args.device
    if args.stage == "all":
        from .train_all import train_all

        preset = "shapes-tiny" if args.preset == "tiny" else args.preset
        out = train_all(preset_name=preset, run_dir=args.run_dir, device=device)
    elif args.init_from and args.stage not in ("decoder", "upsampler"):
        raise SystemExit(f"unclip train {args.stage}: --init-from is for the decoder and the upsampler")
    elif args.stage == "clip":
        from .clip.train import train_clip

        out = train_clip(preset_name=args.preset, run_dir=args.run_dir, max_steps=args.max_steps, data=args.data,
                         device=device, dist_ctx=ctx)
    elif args.stage in ("decoder", "upsampler"):
        from .decoder.train import RECIPES, STAGE_OF, train_decoder

        preset = args.preset if args.preset != "tiny" or args.stage == "decoder" else "tiny-up-128"
        if preset not in RECIPES or STAGE_OF[preset] != args.stage:
            names = [name for name, stage in STAGE_OF.items() if stage == args.stage]
            raise SystemExit(f"unclip train {args.stage}: unknown preset {preset!r}; expected one of {names}")
        if args.stage == "decoder" and not args.clip:
            raise SystemExit("unclip train decoder: --clip DIR (the frozen CLIP whose z_i it inverts) is required")
        out = train_decoder(preset_name=preset, run_dir=args.run_dir, clip_dir=args.clip, max_steps=args.max_steps,
                            device=device, dist_ctx=ctx, init_from=args.init_from)
    else:
        from .prior.train import train_prior

        if not args.clip:
            raise SystemExit(f"unclip train {args.stage}: --clip DIR (the frozen CLIP the prior learns in) is required")
        kind = "diffusion" if args.stage == "prior" else "autoregressive"
        out = train_prior(kind=kind, preset_name=args.preset, clip_dir=args.clip, run_dir=args.run_dir,
                          max_steps=args.max_steps, data=args.data, device=device, dist_ctx=ctx)
    if ctx.rank == 0:
        print(f"wrote {out}")
    return 0


def _demo(args) -> int:
    """The pipeline's demo page when a model is there; the scored world grid always."""
    out = Path(args.out)
    samples = out / "world"
    write_world_samples(samples, split="test", n=args.n, size=64)
    entries, _ = read_manifest(samples)
    scores = list(score_entries(samples, entries))
    images = [Image.open(samples / entry.file) for entry in entries]
    grid_path = out / "shapes_grid.png"
    captioned_grid(images, [s.caption for s in scores], columns=4, verdicts=[s.correct for s in scores]).save(grid_path)
    _print_table(summarise(scores))
    print(f"wrote {args.n} real Shapes-world test scenes to {samples}/ and their scored grid to {grid_path}")
    if not (Path(args.model) / "pipeline.json").is_file():
        print(f"no pipeline at {args.model}: train one with `unclip train all --preset shapes-tiny --run-dir DIR`")
        return 0
    import torch

    from .demo import make_demo
    from .pipeline import UnCLIP

    if args.threads:
        torch.set_num_threads(args.threads)
    pipe = UnCLIP.from_pretrained(args.model)
    index = make_demo(pipe, out)
    print(f"open {index}")
    return 0


DEFAULT_MODEL = Path(__file__).resolve().parents[1] / "models" / "shapes-tiny"


def _pipeline(args):
    """Load --model with the sampling settings given on the command line."""
    import torch

    from .pipeline import UnCLIP

    if args.threads:
        torch.set_num_threads(args.threads)
    model = Path(args.model)
    if not (model / "pipeline.json").is_file():
        raise SystemExit(f"--model {model}: no pipeline.json there. Train one with `unclip train all --preset "
                         "shapes-tiny --run-dir DIR` (it writes DIR/pipeline), or pass the directory of one.")
    pipe = UnCLIP.from_pretrained(model, device=args.device)
    cfg = pipe.config
    changes = {}
    if getattr(args, "prior", None):
        changes["prior_kind"] = args.prior
    if getattr(args, "prior_steps", None):
        changes["prior"] = replace(cfg.prior, steps=args.prior_steps)
    if getattr(args, "prior_sampler", None):
        changes["prior"] = replace(changes.get("prior", cfg.prior), sampler=args.prior_sampler)
    if getattr(args, "best_of", None):
        changes["best_of"] = args.best_of
    if getattr(args, "candidates", None):
        changes["candidates"] = args.candidates
    if args.decoder_steps:
        changes["decoder"] = replace(changes.get("decoder", cfg.decoder), steps=args.decoder_steps)
        changes["manipulation_steps"] = args.decoder_steps  # the verbs that invert read these
    if getattr(args, "decoder_sampler", None):
        changes["decoder"] = replace(changes.get("decoder", cfg.decoder), sampler=args.decoder_sampler)
    if args.guidance is not None:
        changes["decoder"] = replace(changes.get("decoder", cfg.decoder), guidance_scale=args.guidance)
    pipe.config = cfg.with_(**changes)
    return pipe


def _note_sizes(images, paths, size: int) -> None:
    for image, path in zip(images, paths):
        if image.size != (size, size):
            print(f"note: {path} is {image.width}x{image.height}; centre-cropped and resized to {size}x{size} px",
                  file=sys.stderr)


def _generate(args) -> int:
    from .outputs import generate, read_prompts

    if bool(args.captions) == bool(args.prompts_file):
        raise SystemExit("unclip generate: give captions or --prompts-file FILE (not both)")
    prompts = read_prompts(args.prompts_file) if args.prompts_file else [{"caption": c} for c in args.captions]
    pipe = _pipeline(args)
    with tqdm(total=len(prompts), desc="generating", unit="prompt", disable=args.quiet) as bar:
        path = generate(pipe, prompts, args.out, n_per_prompt=args.n_per_prompt, seed=args.seed,
                        batch_size=args.batch_size, upsample=not args.no_upsample, progress=bar.update)
    if len(prompts) * args.n_per_prompt <= 64:
        from .world import read_manifest

        entries, _ = read_manifest(args.out)
        captioned_grid([Image.open(Path(args.out) / e.file) for e in entries], [e.caption for e in entries],
                       columns=args.n_per_prompt if args.n_per_prompt > 1 else None).save(Path(args.out) / "grid.png")
    print(f"wrote {len(prompts) * args.n_per_prompt} images and {path}")
    return 0


def _manipulation_guidance(args) -> float:
    from .manipulate import MANIPULATION_GUIDANCE

    return MANIPULATION_GUIDANCE if args.guidance is None else args.guidance


def _vary(args) -> int:
    from .manipulate import VARIATION_ETA, variations
    from .outputs import open_images, write_outputs

    eta = VARIATION_ETA if args.eta is None else args.eta
    images = open_images(args.images)
    pipe = _pipeline(args)
    _note_sizes(images, args.images, pipe.decoder.config.image_size)
    out_images, records = [], []
    for path, image in zip(args.images, tqdm(images, desc="varying", unit="img", disable=args.quiet)):
        x = variations(pipe, image, n=args.n, eta=eta, seed=args.seed, guidance_scale=_manipulation_guidance(args))
        out_images += pipe.final_images(x, seed=args.seed)
        records += [{"caption": args.caption or "", "source": str(path), "sample": j, "eta": eta}
                    for j in range(args.n)]
    path = write_outputs(args.out, out_images, records, grid_columns=args.n)
    print(f"wrote {len(out_images)} variations and {path}")
    return 0


def _interpolate(args) -> int:
    from .manipulate import interpolate
    from .outputs import open_images, write_outputs

    images = open_images([args.a, args.b])
    pipe = _pipeline(args)
    _note_sizes(images, [args.a, args.b], pipe.decoder.config.image_size)
    x = interpolate(pipe, images[0], images[1], steps=args.steps, fixed_noise=args.fixed_noise, seed=args.seed,
                    guidance_scale=_manipulation_guidance(args))
    records = [{"caption": f"{k / (args.steps - 1):.2f}", "source": [args.a, args.b], "theta": k / (args.steps - 1)}
               for k in range(args.steps)]
    path = write_outputs(args.out, pipe.final_images(x, seed=args.seed), records, grid_columns=args.steps)
    print(f"wrote a {args.steps}-step interpolation and {path}")
    return 0


def _textdiff(args) -> int:
    from .manipulate import text_diff
    from .outputs import open_images, write_outputs

    images = open_images([args.image])
    pipe = _pipeline(args)
    _note_sizes(images, [args.image], pipe.decoder.config.image_size)
    x = text_diff(pipe, images[0], old=args.from_caption, new=args.to_caption, steps=args.steps,
                  max_theta=args.max_theta, guidance_scale=_manipulation_guidance(args))
    thetas = [args.max_theta * k / (args.steps - 1) for k in range(args.steps)]
    records = [{"caption": f"theta {t:.2f}", "source": args.image, "from": args.from_caption, "to": args.to_caption,
                "theta": t} for t in thetas]
    path = write_outputs(args.out, pipe.final_images(x), records, grid_columns=args.steps)
    print(f"wrote a {args.steps}-step text diff and {path}")
    return 0


def _assemble(args) -> int:
    from .clip import load_clip
    from .decoder import load_decoder
    from .pipeline import PipelineConfig, UnCLIP
    from .prior import load_prior

    decoder = load_decoder(args.decoder)
    default_kind = ("diffusion" if args.prior else "ar" if args.ar_prior else
                    "none" if decoder.config.unet.clip_dim is None else "text-embedding")
    pipe = UnCLIP(clip=load_clip(args.clip), decoder=decoder,
                  prior=load_prior(args.prior) if args.prior else None,
                  ar_prior=load_prior(args.ar_prior) if args.ar_prior else None,
                  upsamplers=[load_decoder(d) for d in args.upsampler],
                  config=PipelineConfig(prior_kind=default_kind))
    out = pipe.save_pretrained(args.out, half=not args.full_precision)
    size = sum(f.stat().st_size for f in Path(out).rglob("*") if f.is_file())
    print(f"wrote {out} ({size / 1e6:.1f} MB)")
    return 0


def _eval(args) -> int:
    from .clip import load_clip
    from .eval.harness import evaluate

    pipe = _pipeline(args)
    encoder = load_clip(args.eval_encoder) if args.eval_encoder else None
    if args.data != "shapes" and encoder is None:
        raise SystemExit(f"unclip eval --data {args.data}: only the world has a scorer; another source is measured in "
                         "the features of an evaluation encoder: pass --eval-encoder DIR")
    metrics = evaluate(pipe, args.out, n=args.n, n_novel=args.n_novel, eval_encoder=encoder, prior=args.prior,
                       upsample=args.upsample, seed=args.seed, data=args.data,
                       progress=lambda text: print(text, flush=True))
    print((Path(args.out) / "report.md").read_text())
    e = metrics.get("eval_encoder", {})
    headline = (f"overall {metrics['overall']:.3f}" if metrics["overall"] is not None else
                f"FD {e['fd']:.3f}, real-vs-real {e['fd_real_vs_real']:.3f}")
    print(f"wrote {Path(args.out) / 'metrics.json'} ({headline})")
    return 0


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
    else:
        parser.add_argument("--guidance", type=float, default=None,
                            help="decoder guidance of the manipulation's decode (default: 1, unguided like the DDIM "
                            "inversion, which drifts under guidance; larger values sharpen variations at high --eta)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


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
        "reads) into --out. Batch b of --batch-size prompts is seeded with --seed + b.")
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
    asm.add_argument("--decoder", required=True, help="decoder directory")
    asm.add_argument("--prior", default=None, help="diffusion prior directory")
    asm.add_argument("--ar-prior", default=None, help="autoregressive prior directory")
    asm.add_argument("--upsampler", action="append", default=[], help="upsampler directory (repeat, in order)")
    asm.add_argument("--out", required=True, help="pipeline directory to write")
    asm.add_argument("--full-precision", action="store_true", help="keep float32 weights")
    asm.set_defaults(run=_assemble)

    ev = verbs.add_parser(
        "eval", help="generate for test and novel captions, then measure (report.md, metrics.json)",
        description="Generate images for N test-split and N/2 novel-split captions into --out (PNGs + prompts.jsonl, "
        "which `unclip world score` reads too), then report the scorer's accuracy by skill, held-out-pair accuracy, "
        "the prior's metrics and, with --eval-encoder (a CLIP trained by `unclip train clip --preset eval`), "
        "FD, KID, precision/recall, CLIP score and diversity; writes report.md, metrics.json, samples.png and (with "
        "matplotlib) accuracy_by_skill.png. --data emoji measures against held-out emoji instead.")
    ev.add_argument("--n", type=int, default=500, help="test captions (default: 500)")
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
        "complete checkpoint and ends exactly where an uninterrupted run would. Stages: clip (presets "
        "tiny: the Shapes world on a CPU, ~17 min; tiny-long: 3x the steps; eval: the separate evaluation encoder), "
        "prior (the diffusion prior, unCLIP §2.2) and ar-prior (the autoregressive prior), both learning "
        "caption -> CLIP image embedding inside the frozen CLIP given by --clip (preset tiny), decoder (z_i and "
        "caption -> 32 px image, inverting the CLIP given by --clip; presets tiny, tiny-long: twice the steps, "
        "tiny-xf: with its own caption encoder, GLIDE's text transformer trained with the decoder, in place of "
        "the CLIP's token states, tiny-glide: the GLIDE-style baseline, the same decoder conditioned on the "
        "caption alone, tiny-glide-xf: that baseline with its own caption encoder, tiny-16 and tiny-16-rb1: "
        "narrower decoders with longer schedules, tiny-16-rb1 being shapes-tiny's, and tiny-16-rb1-glide: the "
        "GLIDE-style baseline at that size, tiny-16-rb1-lr1e3 and tiny-16-rb1-b16: that recipe at twice the "
        "learning rate and at half the batch, candidates that measured no better) and "
        "upsampler (32 -> 128 px; preset tiny-up-128, which `tiny` also names), or all (every stage in order, "
        "then RUN_DIR/pipeline; preset shapes-tiny).")
    train.add_argument("stage", choices=["clip", "prior", "ar-prior", "decoder", "upsampler", "all"],
                       help="which stage")
    train.add_argument("--preset", default="tiny",
                       help="size preset (clip: tiny, tiny-long, eval; priors: tiny; decoder: tiny, tiny-long, "
                       "tiny-xf, tiny-glide, tiny-glide-xf, tiny-16, tiny-16-rb1, tiny-16-rb1-glide, "
                       "tiny-16-rb1-lr1e3, tiny-16-rb1-b16, tiny-16-rb1-ft (a second learning-rate cycle "
                       "for a trained tiny-16-rb1: use with --init-from); upsampler: tiny-up-128; all: shapes-tiny)")
    train.add_argument("--clip", default=None, metavar="DIR",
                       help="priors and decoder: the trained CLIP directory whose embeddings they learn (required)")
    train.add_argument("--run-dir", required=True, help="directory for checkpoints, logs and the final model")
    train.add_argument("--max-steps", type=int, default=None,
                       help="stop after this optimizer step (default: the preset's full schedule)")
    train.add_argument("--data", default="shapes",
                       help="data source: shapes[:SPLIT] (default), emoji[:SPLIT], folder:DIR, shards:DIR; "
                       "priors also take embeddings:DIR (precomputed img_emb/ and text_emb/ .npy shards)")
    train.add_argument("--init-from", default=None, metavar="DIR",
                       help="decoder and upsampler: start from the weights of this saved model (of the preset's "
                       "exact config) instead of random ones, to fine-tune it; resuming needs the same DIR")
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


if __name__ == "__main__":
    sys.exit(main())
