"""`unclip world ...` and `unclip demo`: the built-in Shapes world's verbs, and the main job on the default."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from PIL import Image
from tqdm import tqdm

from ..grid import captioned_grid
from ..world import read_manifest, render, sample_scene, score_entries, summarise, write_world_samples
from ..world.captions import SKILLS
from ..world.vocab import check_image_size, check_split


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

    from ..demo import make_demo
    from ..pipeline import UnCLIP

    if args.threads:
        torch.set_num_threads(args.threads)
    pipe = UnCLIP.from_pretrained(args.model)
    index = make_demo(pipe, out)
    print(f"open {index}")
    return 0

