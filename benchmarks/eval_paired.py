"""Pair `unclip eval` runs on the same captions: each run's accuracy and its gain over the first, with standard errors.

`unclip eval` draws the same test (or `--split val`) and novel captions in the same order for every pipeline setting,
so two runs' verdicts on image i are a paired sample: the gain's standard error is that of the per-image
differences, far smaller than two independent accuracies' (n = 500: about 0.015 against 0.031). Each run directory
is re-scored from its PNGs by the world's scorer, so the verdicts are the scorer's, not a copy of the run's metrics.

    python benchmarks/eval_paired.py runs/eval-base runs/eval-new [...] --json benchmarks/results/NAME.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/ itself, for decoder_samplers

from decoder_samplers import paired_gain  # noqa: E402

from unclip.world import read_manifest, score_entries  # noqa: E402


def scored_split(run: Path) -> str:
    """The split an eval run scored besides novel: its metrics.json's `split` (`unclip eval --split`), test if none."""
    path = run / "metrics.json"
    return json.loads(path.read_text()).get("split", "test") if path.is_file() else "test"


def verdicts(run: Path, split: str) -> tuple[list[str], list[bool]]:
    """Captions and the scorer's verdicts for one split of an eval run, in manifest order (unscorable: wrong)."""
    if not (run / split).is_dir():
        raise SystemExit(f"{run} has no {split}/ folder: pass `unclip eval --out` directories")
    entries, errors = read_manifest(run / split)
    if not entries:
        raise SystemExit(f"{run / split} holds no images (an eval run with --n-novel 0?): nothing to pair")
    if errors:
        raise ValueError(f"{run / split}: {len(errors)} unreadable manifest lines, the first: {errors[0]}")
    scores = list(score_entries(run / split, entries))
    return [s.caption for s in scores], [bool(s.correct) for s in scores]


def run_metrics(run: Path) -> dict:
    """What the run's own metrics.json says of its cost and spread (empty where it has none)."""
    path = run / "metrics.json"
    if not path.is_file():
        return {}
    metrics = json.loads(path.read_text())
    encoder = metrics.get("eval_encoder") or {}
    return {"nfe_per_image": metrics.get("nfe_per_image"), "seconds_per_image": metrics.get("seconds_per_image"),
            "candidates": metrics.get("candidates"), "fd": encoder.get("fd"), "diversity": encoder.get("diversity")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path,
                        help="`unclip eval --out` directories; the first is the reference")
    parser.add_argument("--json", type=Path, default=None, help="write the table here as JSON")
    args = parser.parse_args()

    main_splits = {scored_split(run) for run in args.runs}
    if len(main_splits) > 1:
        raise SystemExit(f"the runs scored different splits ({', '.join(sorted(main_splits))}): pair runs of one "
                         "`unclip eval --split`")
    splits = (main_splits.pop(), "novel")
    table: dict[str, dict] = {}
    for split in splits:
        reference_captions, reference = verdicts(args.runs[0], split)
        for run in args.runs:
            captions, verdict = verdicts(run, split)
            if captions != reference_captions:
                raise SystemExit(f"{run / split} was generated for other captions than {args.runs[0] / split}: "
                                 "pair only runs of the same --n, --n-novel and --seed")
            gain, se = paired_gain(verdict, reference)
            table.setdefault(str(run), {"metrics": run_metrics(run)})[split] = {
                "n": len(verdict), "accuracy": sum(verdict) / len(verdict), "gain": gain, "gain_se": se}

    print(f"{'run':<32} {'NFE':>4} {splits[0]:>6} {'gain':>15} {'novel':>6} {'gain':>15}")
    for run, row in table.items():
        cells = [f"{row[s]['accuracy']:6.3f} {row[s]['gain']:+7.3f} ± {row[s]['gain_se']:.3f}" for s in splits]
        nfe = row["metrics"].get("nfe_per_image")
        print(f"{Path(run).name:<32} {'?' if nfe is None else nfe:>4} {cells[0]} {cells[1]}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        summary = {"reference": str(args.runs[0]), "split": splits[0], "runs": table}
        args.json.write_text(json.dumps(summary, indent=1) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
