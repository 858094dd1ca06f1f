"""How exact is the Shapes world's scorer? The full counts behind issue 2's targets.

Renders fresh scenes and scores them against their own captions (clean at 32/64/128 px, at 64 px
after a 1-px Gaussian blur or noise of sigma 10/255, novel-split scenes, and scenes drawn by an
independent Pillow renderer of WORLD.md), then scores captions with one attribute changed, which
must be called incorrect. Prints a table and writes benchmarks/results/scorer.json.

    .venv/bin/python benchmarks/scorer.py            # 2,000 scenes per row (about 4 minutes on 2 cores)
    .venv/bin/python benchmarks/scorer.py --n 200    # a quick look
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from unclip.world import ATTRIBUTES, perturb, render_array, sample_scene, score_image  # noqa: E402
from unclip.world.corrupt import gaussian_blur, gaussian_noise  # noqa: E402
from report import write_report

# (name, split, size, corruption, target: the share the scorer must call correct)
ACCEPT_ROWS = [
    ("clean 32 px", "test", 32, None, 0.97),
    ("clean 64 px", "test", 64, None, 0.995),
    ("clean 128 px", "test", 128, None, 0.995),
    ("clean 256 px", "test", 256, None, 0.995),
    ("blur 1 px, 64 px", "test", 64, "blur", 0.95),
    ("noise 10/255, 64 px", "test", 64, "noise", 0.95),
    ("blur 1 px, 32 px (no target)", "test", 32, "blur", None),
    ("noise 10/255, 32 px (no target)", "test", 32, "noise", None),
    ("novel split, 64 px", "novel", 64, None, 0.995),
    ("independent renderer, 64 px", "test", 64, "independent", 0.99),
]


def _accept_chunk(args):
    split, size, corruption, indices = args
    rng = np.random.default_rng(indices[0])
    out = []
    for i in indices:
        scene = sample_scene(split, i)
        if corruption == "independent":
            from test_world_score import _independent_render  # the test's second implementation of WORLD.md
            image = _independent_render(scene, size)
        else:
            image = render_array(scene, size)
            if corruption == "blur":
                image = gaussian_blur(image, 1.0)
            elif corruption == "noise":
                image = gaussian_noise(image, 10.0, rng)
        t0 = time.perf_counter()
        result = score_image(image, scene.caption)
        out.append((i, result.correct, time.perf_counter() - t0, scene.caption, result.reason))
    return out


def _reject_chunk(indices):
    rng = np.random.default_rng(10_000 + indices[0])
    out = []
    for i in indices:
        scene = sample_scene("test", i)
        image = render_array(scene, 64)
        for attribute in ATTRIBUTES:
            wrong = perturb(scene, attribute, rng)
            if wrong is not None:
                out.append((attribute, not score_image(image, wrong).correct, wrong))
    return out


def _chunks(n, parts):
    return [list(range(n))[k::parts] for k in range(parts)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=2000, help="scenes per row (default: 2000)")
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "scorer.json"))
    args = parser.parse_args()

    rows, started = [], time.time()
    with ProcessPoolExecutor(args.workers) as pool:
        for name, split, size, corruption, target in ACCEPT_ROWS:
            jobs = [(split, size, corruption, idx) for idx in _chunks(args.n, 4 * args.workers)]
            results = [r for chunk in pool.map(_accept_chunk, jobs) for r in chunk]
            share = sum(r[1] for r in results) / len(results)
            rows.append({
                "row": name, "kind": "accept", "n": len(results), "value": share, "target": target,
                "pass": None if target is None else share >= target,
                "ms_per_image": 1000 * statistics.median(r[2] for r in results),
                "failures": [{"index": r[0], "caption": r[3], "reason": r[4]} for r in results if not r[1]][:5],
            })
        attr = [r for chunk in pool.map(_reject_chunk, _chunks(args.n, 4 * args.workers)) for r in chunk]
    for attribute in ATTRIBUTES:
        hits = [r for r in attr if r[0] == attribute]
        share = sum(r[1] for r in hits) / len(hits)
        rows.append({"row": f"one {attribute} changed", "kind": "reject", "n": len(hits), "value": share,
                     "target": 0.99, "pass": share >= 0.99,
                     "failures": [{"caption": r[2]} for r in hits if not r[1]][:5]})
    share = sum(r[1] for r in attr) / len(attr)
    rows.append({"row": "one attribute changed (all)", "kind": "reject", "n": len(attr), "value": share,
                 "target": 0.99, "pass": share >= 0.99})

    print(f"{'condition':<34}{'n':>7}{'share':>9}{'target':>8}  {'ok':<4}{'ms/img':>7}")
    for row in rows:
        verdict = "called correct" if row["kind"] == "accept" else "called wrong"
        ms = f"{row['ms_per_image']:.1f}" if "ms_per_image" in row else ""
        print(f"{row['row']:<34}{row['n']:>7}{row['value']:>9.4f}{row['target'] or '-':>8}  "
              f"{ {True: 'yes', False: 'NO', None: '-'}[row['pass']]:<4}{ms:>7}   ({verdict})")
    report = {"benchmark": "scorer", "n_per_row": args.n, "seconds": round(time.time() - started, 1),
              "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}", "rows": rows}
    write_report(args.out, report)
    print(f"wrote {args.out} ({report['seconds']} s)")


if __name__ == "__main__":
    main()
