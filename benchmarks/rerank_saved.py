"""Judges compared on saved candidates: what each keeps of the same images, without drawing them again.

`benchmarks/rerank_rules.py --save FILE.npz` writes the candidates the pipeline drew for N captions (K each), their
verdicts by the world's scorer and every rule's scores. This reads that file and re-ranks the same candidates with
each judge given (a judge directory, `unclip train judge`'s RUN_DIR/model, or a run directory, whose checkpoint
--step, by default the last, is read): kept accuracy overall and by skill, the gain over the saved CLIP cosine and
over the first judge given, paired by caption, and the same for the first --k candidates of each caption (the
pipeline keeps the best of its first K when it draws K). Given several judges it also keeps by their mean logit (an
ensemble).

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/rerank_saved.py --cands runs/cands_val.npz \\
        --judge models/shapes-tiny/judge runs/judge-c --k 3 4
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from unclip.clip import load_clip
from unclip.judge import Judge, JudgeConfig, load_judge
from unclip.rerank import judge_scores
from unclip.train.checkpoint import list_checkpoints, load_checkpoint
from unclip.world.captions import parse_caption
from unclip.world.score import accuracy_by_skill

SKILLS = ("single", "two", "counting", "relation", "position", "background")


def load_any(path: Path, step: int | None) -> tuple[Judge, str]:
    """A judge from its model directory, or from a run directory's checkpoint `step` (default: the last)."""
    if (path / "judge_config.json").is_file():
        return load_judge(path), str(path)
    found = dict(list_checkpoints(path / "checkpoints"))
    if not found:
        raise SystemExit(f"{path}: neither a judge directory (judge_config.json) nor a run with checkpoints")
    step = max(found) if step is None else step
    if step not in found:
        raise SystemExit(f"{path}: no checkpoint at step {step}; it has {sorted(found)}")
    model = json.loads((path / "config.json").read_text())["model"]
    judge = Judge(JudgeConfig.from_dict({k: v for k, v in model.items() if k in JudgeConfig.__dataclass_fields__}))
    judge.load_state_dict(load_checkpoint(found[step])[0]["model"], strict=True)
    return judge.eval(), f"{path} step {step}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cands", required=True, help="a .npz written by rerank_rules.py --save")
    parser.add_argument("--judge", nargs="+", required=True, help="judge directories or judge run directories")
    parser.add_argument("--step", type=int, default=None, help="the runs' checkpoint step (default: the last)")
    parser.add_argument("--clip", default="models/shapes-tiny/clip", help="the CLIP the judges read (the pipeline's)")
    parser.add_argument("--k", type=int, nargs="+", default=None, help="candidates kept from (default: all saved)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    saved = np.load(args.cands)
    images = torch.from_numpy(saved["images"]).float() / 127.5 - 1  # (N, K, 3, S, S)
    captions, correct, cosine = list(saved["captions"]), saved["correct"], saved["score_cosine"]
    n, k_all = correct.shape
    clip = load_clip(args.clip)
    tokens = clip.tokenizer([c for c in captions for _ in range(k_all)])
    skills = [parse_caption(c).skills for c in captions]
    scores = {"cosine (saved)": cosine}
    for path in args.judge:
        judge, name = load_any(Path(path), args.step)
        with torch.no_grad():
            scores[name] = judge_scores(judge, clip, images.flatten(0, 1), tokens).view(n, k_all).numpy()
    judged = [name for name in scores if name != "cosine (saved)"]
    if len(judged) > 1:  # an ensemble: the judges' mean logit
        scores["mean of the judges"] = np.mean([scores[name] for name in judged], axis=0)
    rows, rank = {}, np.arange(n)
    print(f"{n} captions, {k_all} saved candidates each ({args.cands})\n")
    print("| judge | K | kept | vs cosine | vs the first judge | oracle | " + " | ".join(SKILLS) + " |")
    print("|---|--:|--:|--:|--:|--:|" + "--:|" * len(SKILLS))
    for k in args.k or [k_all]:
        if not 2 <= k <= k_all:
            raise SystemExit(f"--k {k}: between 2 and the {k_all} saved candidates")
        base = correct[rank, cosine[:, :k].argmax(1)].astype(float)
        first = correct[rank, scores[judged[0]][:, :k].argmax(1)].astype(float)
        oracle = correct[:, :k].any(1).mean()
        for name, value in scores.items():
            right = correct[rank, value[:, :k].argmax(1)]
            diff, other = right - base, right - first
            row = accuracy_by_skill(zip(right, skills)) | {
                "gain": float(diff.mean()), "gain_se": float(diff.std(ddof=1) / np.sqrt(n)),
                "vs_first_judge": float(other.mean()), "vs_first_judge_se": float(other.std(ddof=1) / np.sqrt(n)),
                "oracle": float(oracle)}
            rows[f"{name} K={k}"] = row
            print(f"| {name} | {k} | {row['overall']:.3f} | {row['gain']:+.3f} ± {row['gain_se']:.3f} | "
                  f"{row['vs_first_judge']:+.3f} ± {row['vs_first_judge_se']:.3f} | {oracle:.3f} | "
                  + " | ".join(f"{row['skills'].get(t, float('nan')):.3f}" for t in SKILLS) + " |")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"benchmark": "rerank_saved", "cands": args.cands, "n": n,
                                              "rows": rows}, indent=1))
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
