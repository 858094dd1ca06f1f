"""The `unclip` command line. Thin: every verb calls library functions and prints what they return."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from PIL import Image
from tqdm import tqdm

from .grid import captioned_grid
from .world import SPLITS, read_manifest, render, sample_scene, score_entries, summarise, write_world_samples
from .world.captions import SKILLS
from .world.vocab import check_image_size, check_split


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
    if args.stage == "clip":
        from .clip.train import train_clip

        out = train_clip(preset_name=args.preset, run_dir=args.run_dir, max_steps=args.max_steps, data=args.data,
                         device=device, dist_ctx=ctx)
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
    """Until the pipeline exists: render test scenes, score them, and lay them out in a grid."""
    out = Path(args.out)
    samples = out / "world"
    write_world_samples(samples, split="test", n=args.n, size=64)
    entries, _ = read_manifest(samples)
    scores = list(score_entries(samples, entries))
    images = [Image.open(samples / entry.file) for entry in entries]
    grid_path = out / "shapes_grid.png"
    captioned_grid(images, [s.caption for s in scores], columns=4, verdicts=[s.correct for s in scores]).save(grid_path)
    summary = summarise(scores)
    _print_table(summary)
    print(f"wrote {args.n} Shapes-world scenes to {samples}/ and their captioned grid to {grid_path}")
    return 0


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

    train = verbs.add_parser(
        "train", help="train a stage on the engine (rerun on the same --run-dir to resume)",
        description="Train one stage. Rerunning the same command on the same run directory resumes from its last "
        "complete checkpoint and ends exactly where an uninterrupted run would. Stages: clip (presets "
        "tiny: the Shapes world on a CPU, ~17 min; tiny-long: 3x the steps; eval: the separate evaluation encoder), "
        "prior (the diffusion prior, unCLIP §2.2) and ar-prior (the autoregressive prior), both learning "
        "caption -> CLIP image embedding inside the frozen CLIP given by --clip (preset tiny).")
    train.add_argument("stage", choices=["clip", "prior", "ar-prior"], help="which stage")
    train.add_argument("--preset", default="tiny", help="size preset (clip: tiny, tiny-long, eval; priors: tiny)")
    train.add_argument("--clip", default=None, metavar="DIR",
                       help="priors: the trained CLIP directory whose embeddings they learn (required for priors)")
    train.add_argument("--run-dir", required=True, help="directory for checkpoints, logs and the final model")
    train.add_argument("--max-steps", type=int, default=None,
                       help="stop after this optimizer step (default: the preset's full schedule)")
    train.add_argument("--data", default="shapes",
                       help="data source: shapes[:SPLIT] (default), emoji[:SPLIT], folder:DIR, shards:DIR; "
                       "priors also take embeddings:DIR (precomputed img_emb/ and text_emb/ .npy shards)")
    train.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    train.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    train.set_defaults(run=_train)

    demo = verbs.add_parser("demo", help="the main job on the built-in default (what `make demo` runs)",
                            description="Render Shapes-world test scenes, score them with the exact scorer, "
                            "and write a captioned grid, each image framed green where the scorer calls it correct, "
                            "red where not.")
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
