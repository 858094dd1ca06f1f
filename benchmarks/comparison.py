"""The paper's comparisons at Shapes scale (issue 9), one script: the table, the curves and benchmarks/RESULTS.md.

Rows (unCLIP Table 2 and §5's ablation, each measured by the same `unclip eval` harness):
  unCLIP + diffusion prior, unCLIP + autoregressive prior, the decoder fed z_t (no prior), a GLIDE-style
  decoder (the same decoder and training recipe, conditioned on the caption alone) and real renders (the ceiling).
Curves: decoder guidance scale vs (scorer accuracy, diversity) for unCLIP and for GLIDE (the paper's Figure 9
trade-off), and decoder sampling steps (NFE) vs (accuracy, FD) for unCLIP, one curve per decoder sampler
(DPM-Solver++ and DDIM by default).

    .venv/bin/python benchmarks/comparison.py --model runs/cmp-unclip-27k --glide runs/cmp-glide-27k \\
        --eval-encoder runs/clip-eval/model --n 500 --out runs/comparison-27k-b

(--model and --glide: pipelines whose decoders had the same training, e.g. tiny-16-rb1 and tiny-16-rb1-glide at the
same step; the README's Evaluation section has the commands that build them. Every row draws one image per caption,
as the paper samples: a pipeline's CLIP re-ranking, PipelineConfig.candidates, is turned off here.)

Prints the tables, writes benchmarks/results/comparison.json, benchmarks/RESULTS.md and (with matplotlib, the
`plots` extra) benchmarks/results/comparison_guidance.png and comparison_nfe.png.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from unclip.clip import load_clip
from unclip.eval.features import frechet_distance, kernel_inception_distance, precision_recall
from unclip.eval.harness import encode_images, evaluate
from unclip.pipeline import SAMPLERS, UnCLIP
from unclip.world import render, sample_scene, score_image
from unclip.world.captions import SKILLS

HERE = Path(__file__).resolve().parent
SKILL_COLUMNS = [s for s in SKILLS if s != "heldout"]


def real_row(*, n: int, n_novel: int, size: int, encoder) -> dict:
    """The ceiling: the world's own renders at the decoder's size, measured like a model's samples."""
    tests = [sample_scene("test", i) for i in range(n)]
    verdicts = [score_image(render(s, size), s.caption) for s in tests]
    skills = {t: [v.correct for v in verdicts if t in v.skills] for t in SKILLS}
    novel = [score_image(render(s, size), s.caption).correct for s in (sample_scene("novel", i)
                                                                        for i in range(n_novel))]
    real = encode_images(encoder, [render(s, encoder.config.image_size) for s in tests])
    other = encode_images(encoder, [render(sample_scene("test", n + i), encoder.config.image_size) for i in range(n)])
    text = F.normalize(encoder.encode_text([s.caption for s in tests]), dim=-1)
    precision, recall = precision_recall(real, other, k=3)
    return {"overall": sum(v.correct for v in verdicts) / n,
            "skills": {t: sum(v) / len(v) for t, v in skills.items() if v},
            "novel_overall": sum(novel) / max(len(novel), 1),
            "eval_encoder": {"fd": frechet_distance(real, other),
                             "kid": kernel_inception_distance(real, other, subset_size=min(100, n))[0],
                             "precision": precision, "recall": recall,
                             "clip_score": float(100 * (real * text).sum(-1).clamp(min=0).mean())},
            "seconds_per_image": None, "nfe_per_image": 0}


def with_decoder(pipe: UnCLIP, **changes) -> UnCLIP:
    pipe.config = pipe.config.with_(decoder=dataclasses.replace(pipe.config.decoder, **changes))
    return pipe


def fmt(value, digits=3) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def table(rows: dict[str, dict]) -> list[str]:
    head = ["row", "overall", *SKILL_COLUMNS, "held-out pairs", "FD", "KID", "precision", "recall", "diversity",
            "CLIP score", "s/image", "NFE"]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "--:|" * (len(head) - 1)]
    for name, m in rows.items():
        e = m.get("eval_encoder", {})
        cells = [name, f"**{m['overall']:.3f}**", *[fmt(m["skills"].get(s)) for s in SKILL_COLUMNS],
                 fmt(m.get("novel_overall")), fmt(e.get("fd")), fmt(e.get("kid"), 4), fmt(e.get("precision")),
                 fmt(e.get("recall")), fmt(e.get("diversity")), fmt(e.get("clip_score"), 1),
                 fmt(m.get("seconds_per_image"), 2), str(m.get("nfe_per_image", "—"))]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def plot(results: dict, out_dir: Path) -> list[str]:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed (pip install -e '.[plots]'): no PNG plots", file=sys.stderr)
        return []
    written = []
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for name, curve in results["guidance"].items():
        scales = [p["guidance"] for p in curve]
        axes[0].plot(scales, [p["overall"] for p in curve], "o-", label=name)
        axes[1].plot(scales, [p["fd"] for p in curve], "o-", label=name)
        axes[2].plot(scales, [p["diversity"] for p in curve], "o-", label=name)
    axes[0].set(xlabel="decoder guidance scale", ylabel="scorer accuracy", title="fidelity: the scorer")
    axes[1].set(xlabel="decoder guidance scale", ylabel="FD (evaluation encoder)", title="fidelity: FD", yscale="log")
    axes[2].set(xlabel="decoder guidance scale", ylabel="mean pairwise feature distance", title="diversity")
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(out_dir / "comparison_guidance.png", dpi=110)
    written.append("comparison_guidance.png")
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    for sampler, curve in nfe_curves(results).items():
        label = SAMPLER_NAMES.get(sampler, sampler)
        axes[0].plot([p["nfe"] for p in curve], [p["overall"] for p in curve], "o-", label=label)
        axes[1].plot([p["nfe"] for p in curve], [p["fd"] for p in curve], "o-", label=label)
    axes[0].set(xlabel="decoder network evaluations", ylabel="scorer accuracy", xscale="log")
    axes[1].set(xlabel="decoder network evaluations", ylabel="FD (evaluation encoder)", xscale="log")
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(out_dir / "comparison_nfe.png", dpi=110)
    written.append("comparison_nfe.png")
    plt.close("all")
    return written


SAMPLER_NAMES = {"ddim": "DDIM", "dpm++": "DPM-Solver++", "ddpm": "DDPM"}


def sampler_name(results: dict) -> str:
    """The pipeline's decoder sampler, which the guidance curves ran with (results written before it was recorded
    ran DDIM)."""
    sampler = results.get("pipeline_decoder_sampler", "ddim")
    return SAMPLER_NAMES.get(sampler, sampler)


def nfe_curves(results: dict) -> dict[str, list[dict]]:
    """{sampler: [points]} (results written before several samplers were measured hold one list, the pipeline's)."""
    nfe = results["nfe"]
    return nfe if isinstance(nfe, dict) else {results.get("pipeline_decoder_sampler", "ddim"): nfe}


def results_md(results: dict, plots: list[str]) -> str:
    a = results["args"]
    lines = ["# unclip results: the paper's comparisons at Shapes scale", "",
             "Regenerate everything on this page (tables, plots, benchmarks/results/comparison.json) with:", "",
             "```", results["command"], "```", "",
             f"Measured {results['date']} on {results['machine']}; {a['n']} test-split captions (and {a['n'] // 2} "
             f"novel-split captions for the held-out-pair column), images scored at the decoder's size "
             f"({results['size']} px) by the world's exact scorer; FD, KID, precision/recall (k=3), CLIP score and "
             f"diversity (mean pairwise distance among {a['diversity_k']} samples of each of {a['diversity_captions']}"
             f" captions) in the features of a separate evaluation encoder (`{a['eval_encoder']}`, trained by "
             "`unclip train clip --preset eval`, not the CLIP the models are conditioned on). Model rows share one "
             "decoder training budget (the same recipe and step count; see the model READMEs).", "",
             "## Table (unCLIP Table 2 / §5 ablation at Shapes scale)", "", *table(results["rows"]), "",
             "## Guidance scale vs fidelity and diversity (unCLIP Figure 9 at Shapes scale)", "",
             f"{a['curve_n']} test captions per point, decoder {sampler_name(results)} "
             f"{results['pipeline_decoder_steps']} steps.", "",
             "| model | guidance | accuracy | diversity | FD |", "|---|--:|--:|--:|--:|"]
    for name, curve in results["guidance"].items():
        lines += [f"| {name} | {p['guidance']:g} | {p['overall']:.3f} | {fmt(p['diversity'])} | {fmt(p['fd'])} |"
                  for p in curve]
    lines += ["", "## Decoder sampling steps vs accuracy and FD (unCLIP, diffusion prior)", "",
              f"{a['curve_n']} test captions per point, decoder guidance at the pipeline's scale.", "",
              "| sampler | steps | decoder NFE | accuracy | FD |", "|---|--:|--:|--:|--:|"]
    lines += [f"| {SAMPLER_NAMES.get(sampler, sampler)} | {p['steps']} | {p['nfe']} | {p['overall']:.3f} | "
              f"{fmt(p['fd'])} |" for sampler, curve in nfe_curves(results).items() for p in curve]
    if plots:
        lines += [""] + [f"![{name}](results/{name})" for name in plots]
    lines += ["", "## What holds at this scale", "", results.get("verdict", "(see the closing note of issue 9)"), ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="models/shapes-tiny", help="unCLIP pipeline directory (both priors)")
    p.add_argument("--glide", help="pipeline directory of the GLIDE-style (caption-only) decoder")
    p.add_argument("--eval-encoder", help="the evaluation CLIP (unclip train clip --preset eval)")
    p.add_argument("--n", type=int, default=200, help="test captions per table row (novel: n / 2)")
    p.add_argument("--curve-n", type=int, default=100, help="test captions per curve point")
    p.add_argument("--guidance", type=float, nargs="+", default=[1, 2, 3, 5, 8])
    p.add_argument("--steps", type=int, nargs="+", default=[5, 10, 25, 50],
                   help="decoder sampling steps for the NFE curves")
    p.add_argument("--samplers", nargs="+", default=["dpm++", "ddim"], choices=list(SAMPLERS),
                   help="decoder samplers, one NFE curve each")
    p.add_argument("--diversity-captions", type=int, default=25)
    p.add_argument("--diversity-k", type=int, default=4)
    p.add_argument("--machine", default="2-core AMD EPYC CPU, 1 thread", help="recorded in RESULTS.md")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="runs/comparison", help="where the generated images go")
    p.add_argument("--verdict", default=None, help="a file whose text is the 'what holds' section")
    p.add_argument("--from-json", action="store_true",
                   help="measure nothing: rewrite RESULTS.md and the plots from benchmarks/results/comparison.json")
    args = p.parse_args(argv)
    if args.from_json:
        results = json.loads((HERE / "results" / "comparison.json").read_text())
        if args.verdict:
            results["verdict"] = Path(args.verdict).read_text().strip()
            (HERE / "results" / "comparison.json").write_text(json.dumps(results, indent=2) + "\n")
        (HERE / "RESULTS.md").write_text(results_md(results, plot(results, HERE / "results")))
        print(f"wrote {HERE / 'RESULTS.md'} from {HERE / 'results' / 'comparison.json'}")
        return 0
    if not (args.glide and args.eval_encoder):
        p.error("--glide and --eval-encoder are required (unless --from-json)")
    torch.set_num_threads(args.threads)
    out, encoder = Path(args.out), load_clip(args.eval_encoder).eval()
    common = dict(eval_encoder=encoder, diversity_captions=args.diversity_captions, diversity_k=args.diversity_k)
    unclip_pipe, glide_pipe = UnCLIP.from_pretrained(args.model), UnCLIP.from_pretrained(args.glide)
    for pipe in (unclip_pipe, glide_pipe):  # the paper samples without CLIP re-ranking: every row draws one image
        if pipe.config.candidates != 1:
            print(f"{pipe.source}: re-ranking of {pipe.config.candidates} candidates turned off for the comparison")
            pipe.config = pipe.config.with_(candidates=1)
    size = unclip_pipe.decoder.config.image_size
    rows, started = {}, time.perf_counter()
    for name, pipe, kind in (("unCLIP, diffusion prior", unclip_pipe, "diffusion"),
                             ("unCLIP, AR prior", unclip_pipe, "ar"),
                             ("decoder fed z_t (no prior)", unclip_pipe, "text-embedding"),
                             ("GLIDE-style (caption only)", glide_pipe, "none")):
        print(f"[{time.perf_counter() - started:6.0f} s] row: {name}", flush=True)
        rows[name] = evaluate(pipe, out / kind, n=args.n, prior=kind, **common)
    rows["real renders (ceiling)"] = real_row(n=args.n, n_novel=args.n // 2, size=size, encoder=encoder)
    print("\n".join(table(rows)), flush=True)

    guidance = {}
    base_scale = unclip_pipe.config.decoder.guidance_scale
    for name, pipe, kind in (("unCLIP", unclip_pipe, "diffusion"), ("GLIDE-style", glide_pipe, "none")):
        curve = []
        for g in args.guidance:
            print(f"[{time.perf_counter() - started:6.0f} s] guidance {name} {g:g}", flush=True)
            m = evaluate(with_decoder(pipe, guidance_scale=g), out / f"guidance-{kind}-{g:g}", n=args.curve_n,
                         n_novel=0, prior=kind, **common)
            curve.append({"guidance": g, "overall": m["overall"], "diversity": m["eval_encoder"].get("diversity"),
                          "fd": m["eval_encoder"]["fd"]})
        with_decoder(pipe, guidance_scale=base_scale)
        guidance[name] = curve
    nfe, base_steps, base_sampler = {}, unclip_pipe.config.decoder.steps, unclip_pipe.config.decoder.sampler
    for sampler, steps in ((sampler, steps) for sampler in args.samplers for steps in args.steps):
        print(f"[{time.perf_counter() - started:6.0f} s] decoder {sampler} steps {steps}", flush=True)
        m = evaluate(with_decoder(unclip_pipe, steps=steps, sampler=sampler), out / f"steps-{sampler}-{steps}",
                     n=args.curve_n, n_novel=0, prior="diffusion", eval_encoder=encoder, diversity_captions=0)
        nfe.setdefault(sampler, []).append({"steps": steps, "nfe": steps * (1 if base_scale == 1 else 2),
                                            "overall": m["overall"], "fd": m["eval_encoder"]["fd"]})
    with_decoder(unclip_pipe, steps=base_steps, sampler=base_sampler)

    results = {"benchmark": "comparison", "date": time.strftime("%Y-%m-%d"), "machine": args.machine,
               "command": "python benchmarks/comparison.py " + " ".join(argv if argv is not None else sys.argv[1:]),
               "args": vars(args), "size": size, "pipeline_decoder_steps": base_steps,
               "pipeline_decoder_sampler": unclip_pipe.config.decoder.sampler, "rows": rows,
               "guidance": guidance, "nfe": nfe, "seconds": time.perf_counter() - started}
    if args.verdict:
        results["verdict"] = Path(args.verdict).read_text().strip()
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "comparison.json").write_text(json.dumps(results, indent=2) + "\n")
    plots = plot(results, HERE / "results")
    (HERE / "RESULTS.md").write_text(results_md(results, plots))
    print(f"wrote {HERE / 'RESULTS.md'} and {HERE / 'results' / 'comparison.json'} "
          f"({results['seconds'] / 60:.1f} min)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
