"""`unclip eval`: generate for test and novel captions, then measure (issue 9). Sampling and metrics are
separate steps: images and prompts.jsonl are written first, then every metric reads them back.

    OUT/test/, OUT/novel/, OUT/diversity/   generated PNGs + prompts.jsonl (OUT/val/ for test with --split val)
    OUT/metrics.json                        {"overall": scorer accuracy on test captions, ...}
    OUT/report.md                           the same as tables

Metrics: the world's scorer by skill (test) and on held-out pairs (novel); the prior metrics of the
pipeline's prior; with an evaluation encoder (a CLIP trained separately: `unclip train clip --preset
eval`; never the decoder's own CLIP, so the model does not grade its own homework): Fréchet distance,
KID and k-NN precision/recall between generated and real test images, a real-vs-real floor from two
disjoint halves of real images, CLIP score, and diversity (mean pairwise feature distance among K samples
of one caption); seconds per image and network evaluations per image.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image

from ..clip import CLIP
from ..data.images import to_pil, to_tensor
from ..data.sources import make_dataset
from ..outputs import generate
from ..pipeline import UnCLIP
from ..samplers.common import timesteps_for
from ..world import ShapesDataset, read_manifest, render, sample_scene, score_entries, summarise
from ..world.captions import SKILLS
from .features import frechet_distance, kernel_inception_distance, mean_pairwise_distance, precision_recall
from .plots import write_plots
from .prior_metrics import prior_metrics


@torch.no_grad()
def encode_images(encoder: CLIP, images: list[Image.Image], *, batch: int = 256) -> torch.Tensor:
    """(N, E) unit-norm evaluation features of PIL images (resized to the encoder's side)."""
    size = encoder.config.image_size
    parts = [F.normalize(encoder.encode_image_pixels(torch.stack([to_tensor(im, size) for im in images[s:s + batch]])),
                         dim=-1) for s in range(0, len(images), batch)]
    return torch.cat(parts)


def _load(directory: Path) -> tuple[list[Image.Image], list[str]]:
    entries, errors = read_manifest(directory)
    if errors:
        raise ValueError(f"{directory}: {errors[0]}")
    return [Image.open(directory / e.file).convert("RGB") for e in entries], [e.caption for e in entries]


def nfe_per_image(pipe: UnCLIP, kind: str, *, upsample: bool = True) -> int:
    """Network evaluations per image: prior (x best-of, x2 when guided) x its draws (PipelineConfig.prior_draws, the
    candidates by default) and decoder (x2 at its guided steps) x the re-ranking candidates, then the upsamplers once
    (upsample=False: the images stop at the decoder)."""
    cfg = pipe.config
    prior = {"diffusion": cfg.prior.steps * cfg.best_of * (1 if cfg.prior.guidance_scale == 1 else 2),
             "ar": (pipe.ar_prior.config.components if pipe.ar_prior else 0) * (1 if cfg.ar_guidance_scale == 1
                                                                                else 2)}.get(kind, 0)
    decoder = cfg.decoder.steps
    # a guided step runs both branches (or, with autoguidance, the decoder and its guide): twice, where it guides;
    # a distilled decoder's guidance is in its weights, one evaluation a step
    if cfg.decoder.guidance_scale != 1 and not cfg.distilled:
        interval = pipe.decoder.guided_timesteps(cfg.decoder.guidance_interval)
        decoder += sum(interval is None or interval[0] <= t <= interval[1]
                       for t in timesteps_for(pipe.decoder.diffusion, cfg.decoder.steps))
    return (prior * (cfg.prior_draws or cfg.candidates) + decoder * cfg.candidates
            + (cfg.upsampler.steps * len(pipe.upsamplers) if upsample else 0))


def reranker(pipe: UnCLIP) -> str:
    """What chooses among the pipeline's candidates: "judge" (its judge stage, PipelineConfig.judge) or "clip"."""
    return "judge" if pipe.config.judge else "clip"


def decoder_guidance(pipe: UnCLIP) -> str:
    """How the pipeline guides its decoder, in words: "classifier-free 2", "autoguidance 2.5", "none", or
    "distilled from autoguidance 2.5" where it samples its distilled decoder."""
    scale = pipe.config.decoder.guidance_scale
    if scale == 1:
        return "none"
    guided = f"{'autoguidance' if pipe.config.autoguidance else 'classifier-free'} {scale:g}"
    return f"distilled from {guided}" if pipe.config.distilled else guided


@torch.no_grad()
def evaluate(pipe: UnCLIP, out: str | os.PathLike, *, n: int = 500, n_novel: int | None = None,
             eval_encoder: CLIP | None = None, prior: str | None = None, upsample: bool = False,
             diversity_captions: int = 25, diversity_k: int = 4, seed: int = 0, split: str = "test",
             data: str = "shapes", progress: Callable[[str], None] = lambda _: None) -> dict:
    """Generate, measure, and write metrics.json, report.md and PNG plots into `out`; returns the metrics.

    data: "shapes" (the world's test and novel captions, scored exactly), or another source of captioned images
    (`emoji`, `emoji:test`, `folder:DIR`, ...; a bare `emoji` means its held-out `test` split), measured against its
    own images with the evaluation encoder alone, since nothing there has a scorer (evaluate_source).

    split: the world's split whose captions are scored and whose renders the encoder metrics compare against,
    "test" (for reporting) or "val" (for choosing between models: a model picked on the test captions scores too
    well there against any challenger). The novel split is drawn either way."""
    if split not in ("test", "val"):
        raise ValueError(f"split must be 'test' or 'val', got {split!r}")
    if data != "shapes":
        return evaluate_source(pipe, out, data=data, n=n, eval_encoder=eval_encoder, prior=prior, upsample=upsample,
                               diversity_captions=diversity_captions, diversity_k=diversity_k, seed=seed,
                               progress=progress)
    out = Path(out)
    kind = prior or pipe.config.prior_kind
    n_novel = n // 2 if n_novel is None else n_novel
    metrics: dict = {"model": pipe.source, "prior": kind, "split": split, "n": n, "n_novel": n_novel,
                     "upsample": upsample, "candidates": pipe.config.candidates,
                     "reranker": reranker(pipe),
                     "decoder_guidance": decoder_guidance(pipe),
                     "nfe_per_image": nfe_per_image(pipe, kind, upsample=upsample)}
    # ----- sampling: images + manifests ------------------------------------------------------------------
    prompts = {split: [{"caption": sample_scene(split, i).caption, "split": split, "index": i} for i in range(n)],
               "novel": [{"caption": sample_scene("novel", i).caption, "split": "novel", "index": i}
                         for i in range(n_novel)]}
    started = time.perf_counter()
    for name, records in prompts.items():
        if records:
            progress(f"generating {len(records)} {name} captions")
            generate(pipe, records, out / name, seed=seed, prior=kind, upsample=upsample)
    metrics["seconds_per_image"] = (time.perf_counter() - started) / max(n + n_novel, 1)

    # ----- the world's scorer ----------------------------------------------------------------------------
    progress("scoring")
    test_summary = summarise(list(score_entries(out / split, read_manifest(out / split)[0])))
    metrics["overall"] = test_summary["overall"]
    metrics["skills"] = test_summary["skills"]
    metrics["counts"] = test_summary["counts"]
    if n_novel:
        novel_summary = summarise(list(score_entries(out / "novel", read_manifest(out / "novel")[0])))
        metrics["novel_overall"] = novel_summary["overall"]
        metrics["heldout"] = novel_summary["skills"].get("heldout")

    # ----- prior metrics (in the pipeline's own CLIP) ------------------------------------------------------
    if kind != "none":
        progress("prior metrics")
        data = ShapesDataset(split, size=pipe.clip.config.image_size, length=n)
        metrics["prior_metrics"] = _prior_metrics(pipe, kind, [r["caption"] for r in prompts[split]],
                                                  torch.stack([data[i][0] for i in range(n)]), seed=seed)

    # ----- evaluation-encoder metrics ---------------------------------------------------------------------
    if eval_encoder is not None and n >= 4:
        progress("evaluation-encoder metrics")
        size = eval_encoder.config.image_size
        metrics["eval_encoder"] = _encoder_metrics(
            pipe, out, out / split, encoder=eval_encoder,
            real=[render(sample_scene(split, i), size) for i in range(n)],
            other=[render(sample_scene(split, n + i), size) for i in range(n)],
            diversity_records=prompts[split][:diversity_captions], diversity_k=diversity_k, kind=kind,
            upsample=upsample, seed=seed, progress=progress)
    return _write(out, metrics)


def _write(out: Path, metrics: dict) -> dict:
    metrics["plots"] = write_plots(out, metrics)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    (out / "report.md").write_text(report(metrics))
    return metrics


def _prior_metrics(pipe: UnCLIP, kind: str, captions: list[str], pixels: torch.Tensor, *, seed: int) -> dict:
    """The prior's z_i for the captions against the true z_i of their images (pixels (N, 3, S, S) at the CLIP's
    side), in the pipeline's own CLIP."""
    true = F.normalize(pipe.clip.encode_image_pixels(pixels.to(pipe.device)), dim=-1)
    z_t, _, _ = pipe.text_conditioning(captions)
    g = torch.Generator(pipe.device).manual_seed(seed)
    pred = torch.cat([pipe.image_embeddings(captions[s:s + 100], prior=kind, generator=g)
                      for s in range(0, len(captions), 100)])
    return prior_metrics(pred.cpu(), true.cpu(), z_t.cpu())


def _encoder_metrics(pipe: UnCLIP, out: Path, samples: Path, *, encoder: CLIP, real: list[Image.Image],
                     other: list[Image.Image], diversity_records: list[dict], diversity_k: int, kind: str,
                     upsample: bool, seed: int, progress: Callable[[str], None]) -> dict:
    """FD, KID, precision/recall and CLIP score of the images in `samples` (a generated folder) against the real
    images, each beside its real-vs-real floor (`other`: as many different real images), and diversity over K
    samples of each record (generated into out/diversity)."""
    fake_images, captions = _load(samples)
    fake, real_f, other_f = (encode_images(encoder, images) for images in (fake_images, real, other))
    n = len(real)
    kid, kid_std = kernel_inception_distance(real_f, fake, subset_size=min(100, n))
    floor_kid, _ = kernel_inception_distance(real_f, other_f, subset_size=min(100, n))
    precision, recall = precision_recall(real_f, fake, k=3)
    text = F.normalize(encoder.encode_text(captions), dim=-1)
    metrics = {"fd": frechet_distance(real_f, fake), "fd_real_vs_real": frechet_distance(real_f, other_f),
               "kid": kid, "kid_std": kid_std, "kid_real_vs_real": floor_kid, "precision": precision,
               "recall": recall, "clip_score": float(100 * (fake * text).sum(-1).clamp(min=0).mean()),
               "clip_score_real": float(100 * (real_f * text).sum(-1).clamp(min=0).mean())}
    if diversity_records:
        progress("diversity")
        generate(pipe, diversity_records, out / "diversity", n_per_prompt=diversity_k, seed=seed + 1, prior=kind,
                 upsample=upsample)
        images, _ = _load(out / "diversity")
        feats = encode_images(encoder, images).reshape(len(diversity_records), diversity_k, -1)
        metrics["diversity"] = mean_pairwise_distance(feats)
    return metrics


def _source_split(data: str) -> str:
    """A bare `emoji` is its held-out split; every other spec is read as given."""
    return "emoji:test" if data == "emoji" else data


@torch.no_grad()
def evaluate_source(pipe: UnCLIP, out: str | os.PathLike, *, data: str, n: int = 500, eval_encoder: CLIP | None,
                    prior: str | None = None, upsample: bool = False, diversity_captions: int = 25,
                    diversity_k: int = 4, seed: int = 0, progress: Callable[[str], None] = lambda _: None) -> dict:
    """`unclip eval --data SOURCE`: generate for the captions of n of a source's images and measure the samples
    against those images in the evaluation encoder's features (FD, KID, precision/recall, CLIP score, diversity),
    with a real-vs-real floor from n more, and the prior's metrics against the images' own z_i. The 2n images are
    the first of a permutation of the source seeded by `seed` (a source's own order is often by kind: emoji start
    with flags). With fewer than 2n usable images n becomes half of what there is, so the floor has as many."""
    if eval_encoder is None:
        raise ValueError(f"--data {data}: a source without the world's scorer is measured only in the evaluation "
                         "encoder's features; pass --eval-encoder DIR")
    out, spec, kind = Path(out), _source_split(data), prior or pipe.config.prior_kind
    dataset = make_dataset(spec, size=eval_encoder.config.image_size)
    items, skipped = [], 0
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed)).tolist()  # a spread, seeded
    for i in order:
        if len(items) == 2 * n:
            break
        item = dataset[i]
        if item is None:
            continue
        try:
            pipe.tokens([item["caption"]])  # a caption past the pipeline's context is left out, and counted
        except ValueError:
            skipped += 1
            continue
        items.append(item)
    m = min(n, len(items) // 2)
    if m < 4:
        raise ValueError(f"--data {data} holds {len(items)} readable images whose captions fit the pipeline's context "
                         f"({skipped} did not); need at least 8 (4 to generate for, 4 for the real-vs-real floor)")
    real_items, other_items = items[:m], items[m:2 * m]
    records = [{"caption": item["caption"], "split": spec, "index": i} for i, item in enumerate(real_items)]
    metrics: dict = {"model": pipe.source, "data": spec, "prior": kind, "n": m, "n_novel": 0, "upsample": upsample,
                     "candidates": pipe.config.candidates, "reranker": reranker(pipe),
                     "overall": None, "captions_past_context": skipped,
                     "decoder_guidance": decoder_guidance(pipe),
                     "nfe_per_image": nfe_per_image(pipe, kind, upsample=upsample)}
    progress(f"generating {m} {spec} captions")
    started = time.perf_counter()
    generate(pipe, records, out / "test", seed=seed, prior=kind, upsample=upsample)
    metrics["seconds_per_image"] = (time.perf_counter() - started) / m

    if kind != "none":
        progress("prior metrics")
        size = pipe.clip.config.image_size
        metrics["prior_metrics"] = _prior_metrics(pipe, kind, [r["caption"] for r in records], torch.stack(
            [to_tensor(to_pil(item["image"]), size) for item in real_items]), seed=seed)

    progress("evaluation-encoder metrics")
    metrics["eval_encoder"] = _encoder_metrics(
        pipe, out, out / "test", encoder=eval_encoder, real=[to_pil(item["image"]) for item in real_items],
        other=[to_pil(item["image"]) for item in other_items], diversity_records=records[:diversity_captions],
        diversity_k=diversity_k, kind=kind, upsample=upsample, seed=seed, progress=progress)
    return _write(out, metrics)


def report(m: dict) -> str:
    source = m.get("data", "shapes")
    what = (f"{m['n']} {m.get('split', 'test')} and {m['n_novel']} novel captions" if source == "shapes" else
            f"the captions of {m['n']} images of `{source}` (no scorer: measured against those images; "
            f"{m.get('captions_past_context', 0)} captions past the pipeline's context left out)")
    lines = [f"# unclip eval: {m.get('model')}", "", f"prior `{m['prior']}`, {what}, "
             f"{'upsampled' if m['upsample'] else 'decoder-size'} images"
             + (f" (each the best of {m['candidates']} by {'its judge' if m.get('reranker') == 'judge' else 'CLIP'})"
                if m.get("candidates", 1) > 1 else "")
             + (f", decoder guidance {m['decoder_guidance']}" if "decoder_guidance" in m else "")
             + f", {m['nfe_per_image']} network evaluations and {m['seconds_per_image']:.2f} s per image.", ""]
    if m["overall"] is not None:
        lines += ["| skill | n | accuracy |", "|---|--:|--:|"]
        for tag in SKILLS:
            if tag in m["skills"]:
                lines.append(f"| {tag} | {m['counts'][tag]} | {m['skills'][tag]:.3f} |")
        lines.append(f"| **overall** | {m['n']} | **{m['overall']:.3f}** |")
        if m.get("novel_overall") is not None:
            lines.append(f"| novel split (held-out pairs) | {m['n_novel']} | {m['novel_overall']:.3f} |")
    if "prior_metrics" in m:
        lines += ["", "| prior metric | value |", "|---|--:|"] + [f"| {k} | {v:.3f} |" for k, v in
                                                                 m["prior_metrics"].items()]
    if "eval_encoder" in m:
        lines += ["", "| evaluation-encoder metric | value |", "|---|--:|"] + [f"| {k} | {v:.4f} |" for k, v in
                                                                              m["eval_encoder"].items()]
    else:
        lines += ["", "No evaluation encoder given (--eval-encoder): FD, KID, precision/recall, CLIP score and "
                  "diversity were not measured."]
    if m.get("plots"):
        lines += [""] + [f"![{name}]({name})" for name in m["plots"]]
    return "\n".join(lines) + "\n"
