"""How well do the priors predict CLIP image embeddings? (issue 6's measurements)

For N test captions of the Shapes world, with the CLIP the priors were trained in:
- cos(predicted z_i, true z_i): the mean (goal >= 0.85 for the diffusion prior);
- cos(predicted z_i, z_t) beside cos(true z_i, z_t) (goal: within 0.02), and cos(predicted z_i, the z_t
  of an unrelated caption) (should sit well below);
- retrieval: the predicted z_i finds its own test image among 100 (recall@1, goal >= 0.70);
for the diffusion prior, the autoregressive prior and the `text-embedding` baseline (z_t itself), and
the diffusion prior's quality against sampling steps (DDIM and DPM-Solver++, NFE 4 ... 64, best-of-1, so
the curve shows the sampler alone). Also the PCA's reconstruction error on test z_i.
Prints tables and writes benchmarks/results/prior.json.

    .venv/bin/python benchmarks/prior.py --clip runs/clip-tiny/model --prior runs/prior-tiny/model \
        --ar-prior runs/ar-prior-tiny/model
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from unclip.clip import load_clip
from unclip.eval.prior_metrics import prior_metrics as metrics
from unclip.prior import image_embeddings, load_prior
from unclip.world import ShapesDataset
from report import write_report


def batched(fn, n: int, batch: int = 250) -> torch.Tensor:
    return torch.cat([fn(slice(s, min(s + batch, n))) for s in range(0, n, batch)])


@torch.no_grad()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clip", default="runs/clip-tiny/model")
    parser.add_argument("--prior", default="runs/prior-tiny/model", help="diffusion prior directory ('' to skip)")
    parser.add_argument("--ar-prior", default="runs/ar-prior-tiny/model", help="autoregressive prior ('' to skip)")
    parser.add_argument("--n", type=int, default=1000, help="test captions")
    parser.add_argument("--steps", type=int, default=64, help="diffusion prior steps for the main table")
    parser.add_argument("--guidance", type=float, default=1.0, help="guidance scale of both priors")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "prior.json"))
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    clip = load_clip(args.clip)
    data = ShapesDataset("test", size=clip.config.image_size, length=args.n)
    items = [data[i] for i in range(args.n)]
    captions = [caption for _, caption, _ in items]
    true = F.normalize(clip.encode_image_pixels(torch.stack([image for image, _, _ in items])), dim=-1)
    z_t = clip.encode_text(captions)
    report = {"benchmark": "prior", "clip": args.clip, "n": args.n, "guidance": args.guidance,
              "true": {"cos_text": float((true * z_t).sum(-1).mean()),
                       "cos_unrelated_text": float((true * z_t.roll(args.n // 2, 0)).sum(-1).mean())},
              "rows": {}, "nfe_curve": []}

    rows = [("text-embedding", None, {})]
    prior = load_prior(args.prior) if args.prior else None
    if prior is not None:
        rows.append(("diffusion", prior, dict(steps=args.steps, sampler="ddim", guidance_scale=args.guidance,
                                              best_of=2)))
    if args.ar_prior:
        ar = load_prior(args.ar_prior)
        rows.append(("ar", ar, dict(guidance_scale=args.guidance)))
        test_codes = ar.encode(true)
        recon = ar.pca.inverse(ar.pca.transform(true))
        report["pca"] = {"components": ar.config.components, "embed_dim": ar.config.embed_dim,
                         "variance_kept": float(ar.pca.variance.sum() / torch.cov(true.t()).trace()),
                         "cos_pca_reconstruction": float((F.normalize(recon, dim=-1) * true).sum(-1).mean()),
                         "cos_quantised_reconstruction": float((ar.decode(test_codes) * true).sum(-1).mean())}
    print(f"{args.n} test captions; true z_i: cos(z_i, z_t) {report['true']['cos_text']:.3f}, "
          f"to an unrelated caption {report['true']['cos_unrelated_text']:.3f}")
    print(f"{'prior':<16}{'cos true':>10}{'cos z_t':>9}{'gap':>8}{'unrelated':>11}{'R@1/100':>9}{'s/caption':>11}")
    for name, model, options in rows:
        started = time.perf_counter()
        g = torch.Generator().manual_seed(0)
        pred = batched(lambda sl: image_embeddings(name, clip=clip, captions=captions[sl], prior=model, generator=g,
                                                   **options), args.n)
        seconds = (time.perf_counter() - started) / args.n
        m = metrics(pred, true, z_t) | {"seconds_per_caption": seconds}
        report["rows"][name] = m
        print(f"{name:<16}{m['cos_true']:>10.3f}{m['cos_text']:>9.3f}{m['cos_text_gap']:>+8.3f}"
              f"{m['cos_unrelated_text']:>11.3f}{m['recall_at_1_among_100']:>9.3f}{seconds * 1e3:>9.1f}ms")

    if prior is not None:
        print(f"\ndiffusion prior vs sampling steps (best-of-1, guidance {args.guidance})")
        print(f"{'sampler':<8}{'NFE':>5}{'cos true':>10}{'R@1/100':>9}")
        for sampler in ("ddim", "dpm++"):
            for steps in (4, 8, 16, 32, 64):
                g = torch.Generator().manual_seed(0)
                pred = batched(lambda sl: image_embeddings("diffusion", clip=clip, captions=captions[sl], prior=prior,
                                                           generator=g, steps=steps, sampler=sampler,
                                                           guidance_scale=args.guidance, best_of=1), args.n)
                m = metrics(pred, true, z_t)
                nfe = steps * (1 if args.guidance == 1 else 2)
                report["nfe_curve"].append({"sampler": sampler, "steps": steps, "nfe": nfe} | m)
                print(f"{sampler:<8}{nfe:>5}{m['cos_true']:>10.3f}{m['recall_at_1_among_100']:>9.3f}")
    if "pca" in report:
        p = report["pca"]
        print(f"\nAR prior codebook: {p['components']} of {p['embed_dim']} PCA components; cos(reconstruction, z_i) "
              f"{p['cos_pca_reconstruction']:.4f} after PCA, {p['cos_quantised_reconstruction']:.4f} after quantising")
    write_report(args.out, report)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
