"""The pipeline verbs: `unclip generate`, `vary`, `interpolate`, `textdiff`, `assemble` and `eval`."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

from PIL import Image
from tqdm import tqdm

from ..grid import captioned_grid


def _pipeline(args):
    """Load --model with the sampling settings given on the command line."""
    import torch

    from ..pipeline import UnCLIP

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
    if getattr(args, "guidance_interval", None) is not None:
        changes["decoder"] = replace(changes.get("decoder", cfg.decoder),
                                     guidance_interval=tuple(args.guidance_interval))
    if getattr(args, "autoguidance", None) is not None:
        if args.autoguidance and pipe.decoder_guide is None:
            raise SystemExit(f"--autoguidance: {model} has no decoder_guide stage to guide the decoder with "
                             "(unclip assemble --decoder-guide DIR adds one)")
        changes["autoguidance"] = args.autoguidance
    guiding = ", ".join("--" + f.replace("_", "-") for f in ("guidance", "guidance_interval", "autoguidance")
                        if getattr(args, f, None) is not None)
    distilled = getattr(args, "distilled", None)
    if distilled and pipe.decoder_distilled is None:
        raise SystemExit(f"--distilled: {model} has no decoder_distilled stage (unclip assemble --decoder-distilled "
                         "DIR adds one)")
    if distilled and guiding:
        raise SystemExit(f"--distilled samples the distilled decoder, whose guidance is built in: {guiding} do not "
                         "apply to it (drop them, or pass --no-distilled to guide the decoder)")
    if distilled is None and guiding and cfg.distilled:
        distilled = False  # guidance settings are asked of the decoder itself
        print(f"note: {guiding} given: sampling the guided decoder, not the distilled one", file=sys.stderr)
    if distilled is not None:
        changes["distilled"] = distilled
    judge = getattr(args, "judge", None)
    if judge and pipe.judge is None:
        raise SystemExit(f"--judge: {model} has no judge stage (unclip assemble --judge DIR adds one)")
    if judge is not None:
        changes["judge"] = judge
    pipe.config = cfg.with_(**changes)
    return pipe


def _note_sizes(images, paths, size: int) -> None:
    for image, path in zip(images, paths):
        if image.size != (size, size):
            print(f"note: {path} is {image.width}x{image.height}; centre-cropped and resized to {size}x{size} px",
                  file=sys.stderr)


def _generate(args) -> int:
    from ..outputs import generate, read_prompts

    if bool(args.captions) == bool(args.prompts_file):
        raise SystemExit("unclip generate: give captions or --prompts-file FILE (not both)")
    prompts = read_prompts(args.prompts_file) if args.prompts_file else [{"caption": c} for c in args.captions]
    pipe = _pipeline(args)
    with tqdm(total=len(prompts), desc="generating", unit="prompt", disable=args.quiet) as bar:
        path = generate(pipe, prompts, args.out, n_per_prompt=args.n_per_prompt, seed=args.seed,
                        batch_size=args.batch_size, upsample=not args.no_upsample, progress=bar.update)
    if len(prompts) * args.n_per_prompt <= 64:
        from ..world import read_manifest

        entries, _ = read_manifest(args.out)
        captioned_grid([Image.open(Path(args.out) / e.file) for e in entries], [e.caption for e in entries],
                       columns=args.n_per_prompt if args.n_per_prompt > 1 else None).save(Path(args.out) / "grid.png")
    print(f"wrote {len(prompts) * args.n_per_prompt} images and {path}")
    return 0


def _manipulation_guidance(args) -> float:
    from ..manipulate import MANIPULATION_GUIDANCE

    return MANIPULATION_GUIDANCE if args.guidance is None else args.guidance


def _vary(args) -> int:
    from ..manipulate import VARIATION_ETA, variations
    from ..outputs import open_images, write_outputs

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
    from ..manipulate import interpolate
    from ..outputs import open_images, write_outputs

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
    from ..manipulate import text_diff
    from ..outputs import open_images, write_outputs

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
    from ..clip import load_clip
    from ..decoder import average_decoders, load_decoder
    from ..judge import load_judge
    from ..pipeline import PipelineConfig, UnCLIP
    from ..prior import load_prior

    decoder = average_decoders(args.decoder)  # one directory: that decoder as saved
    default_kind = ("diffusion" if args.prior else "ar" if args.ar_prior else
                    "none" if decoder.config.unet.clip_dim is None else "text-embedding")
    pipe = UnCLIP(clip=load_clip(args.clip), decoder=decoder,
                  prior=load_prior(args.prior) if args.prior else None,
                  ar_prior=load_prior(args.ar_prior) if args.ar_prior else None,
                  upsamplers=[load_decoder(d) for d in args.upsampler],
                  decoder_guide=load_decoder(args.decoder_guide) if args.decoder_guide else None,
                  decoder_distilled=load_decoder(args.decoder_distilled) if args.decoder_distilled else None,
                  judge=load_judge(args.judge) if args.judge else None,
                  config=PipelineConfig(prior_kind=default_kind, autoguidance=bool(args.decoder_guide),
                                        distilled=bool(args.decoder_distilled), judge=bool(args.judge)))
    out = pipe.save_pretrained(args.out, half=not args.full_precision)
    size = sum(f.stat().st_size for f in Path(out).rglob("*") if f.is_file())
    print(f"wrote {out} ({size / 1e6:.1f} MB)")
    return 0


def _eval(args) -> int:
    from ..clip import load_clip
    from ..eval.harness import evaluate

    pipe = _pipeline(args)
    encoder = load_clip(args.eval_encoder) if args.eval_encoder else None
    if args.data != "shapes" and encoder is None:
        raise SystemExit(f"unclip eval --data {args.data}: only the world has a scorer; another source is measured in "
                         "the features of an evaluation encoder: pass --eval-encoder DIR")
    metrics = evaluate(pipe, args.out, n=args.n, n_novel=args.n_novel, eval_encoder=encoder, prior=args.prior,
                       upsample=args.upsample, seed=args.seed, split=args.split, data=args.data,
                       progress=lambda text: print(text, flush=True))
    print((Path(args.out) / "report.md").read_text())
    e = metrics.get("eval_encoder", {})
    headline = (f"overall {metrics['overall']:.3f}" if metrics["overall"] is not None else
                f"FD {e['fd']:.3f}, real-vs-real {e['fd_real_vs_real']:.3f}")
    print(f"wrote {Path(args.out) / 'metrics.json'} ({headline})")
    return 0


