"""`unclip train STAGE`: one stage on the training engine, or every stage in order."""

from __future__ import annotations


def _check_preset(stage: str, preset: str) -> None:
    """Refuse a preset the stage has no recipe of, naming the ones it has."""
    from .presets import preset_names

    if preset not in (names := preset_names()[stage]):
        raise SystemExit(f"unclip train {stage}: unknown preset {preset!r}; expected one of {names}")


def _train(args) -> int:
    if args.list_presets:
        from .presets import format_presets

        print(format_presets(args.stage))
        return 0
    if not args.run_dir:
        raise SystemExit(f"unclip train {args.stage}: --run-dir DIR is required (where checkpoints, logs and the "
                         "model go)")
    if (args.train_changes or args.max_minutes is not None) and args.stage == "all":
        raise SystemExit("unclip train all: --set and --max-minutes are for one stage (each stage's recipe has its "
                         "own batch and schedule); train the stage alone with them")
    if args.max_minutes is not None and not args.max_minutes > 0:
        raise SystemExit(f"unclip train {args.stage}: --max-minutes must be > 0, got {args.max_minutes}")
    max_seconds = None if args.max_minutes is None else 60 * args.max_minutes
    from ..train.overrides import parse_train_changes

    try:
        changes = parse_train_changes(args.train_changes)
    except ValueError as e:
        raise SystemExit(f"unclip train {args.stage}: {e}") from None
    if changes.get("precision") == "bf16" and not args.device.startswith("cuda"):  # before minutes of loading
        raise SystemExit(f"unclip train {args.stage}: --set precision=bf16 is for --device cuda (got --device "
                         f"{args.device}); on a CPU train in fp32, bf16 is ~100x slower here")
    import torch

    from ..train.distributed import init_from_env

    if args.threads:
        torch.set_num_threads(args.threads)
    if not args.no_malloc_tuning:  # keep freed memory for the next step (unclip/train/malloc.py); glibc only
        from ..train.malloc import keep_freed_memory

        keep_freed_memory()
    ctx = init_from_env()  # under torchrun: join the process group; otherwise rank 0 of 1
    device = f"cuda:{ctx.local_rank}" if args.device == "cuda" and ctx.enabled else args.device
    if args.jobs != 1 and ctx.enabled:
        raise SystemExit("unclip train all --jobs 2 runs its own two processes: start it with python, not torchrun")
    if args.stage == "all":
        from ..train_all import train_all

        preset = "shapes-tiny" if args.preset == "tiny" else args.preset
        out = train_all(preset_name=preset, run_dir=args.run_dir, device=device, jobs=args.jobs, threads=args.threads)
    elif args.jobs != 1:
        raise SystemExit(f"unclip train {args.stage}: --jobs is for `train all` (got --jobs {args.jobs})")
    elif args.init_from and args.stage == "clip":
        raise SystemExit("unclip train clip: --init-from is for the priors, the decoder and the upsampler")
    elif args.model and args.stage != "decoder-distill":
        raise SystemExit(f"unclip train {args.stage}: --model is for decoder-distill (the pipeline it distils)")
    elif args.channels_last and args.stage not in ("decoder", "upsampler"):
        raise SystemExit(f"unclip train {args.stage}: --channels-last is for the decoder and the upsampler")
    elif args.stage == "clip":
        from ..clip.train import train_clip

        out = train_clip(preset_name=args.preset, run_dir=args.run_dir, max_steps=args.max_steps, data=args.data,
                         device=device, dist_ctx=ctx, train_changes=changes,
                         max_seconds=max_seconds)
    elif args.stage in ("decoder", "upsampler"):
        from ..decoder.train import train_decoder

        preset = args.preset if args.preset != "tiny" or args.stage == "decoder" else "tiny-up-128"
        _check_preset(args.stage, preset)
        if args.stage == "decoder" and not args.clip:
            raise SystemExit("unclip train decoder: --clip DIR (the frozen CLIP whose z_i it inverts) is required")
        out = train_decoder(preset_name=preset, run_dir=args.run_dir, clip_dir=args.clip, max_steps=args.max_steps,
                            device=device, dist_ctx=ctx, init_from=args.init_from, channels_last=args.channels_last,
                            train_changes=changes, max_seconds=max_seconds)
    elif args.stage == "decoder-distill":
        from ..decoder.distill import train_distilled_decoder

        _check_preset(args.stage, args.preset)
        if not args.model:
            raise SystemExit("unclip train decoder-distill: --model DIR (the pipeline whose guided decoder it "
                             "distils) is required")
        if args.init_from or args.clip or args.data != "shapes" or changes:
            raise SystemExit("unclip train decoder-distill: the student starts from the pipeline's decoder and learns "
                             "from its CLIP on Shapes scenes: --init-from, --clip, --data and --set do not apply")
        out = train_distilled_decoder(model_dir=args.model, preset_name=args.preset, run_dir=args.run_dir,
                                      max_steps=args.max_steps, device=device, max_seconds=max_seconds)
    elif args.stage == "judge":
        from ..judge.train import train_judge

        _check_preset(args.stage, args.preset)
        if not args.clip:
            raise SystemExit("unclip train judge: --clip DIR (the pipeline's CLIP, which the judge reads) is required")
        if args.init_from or args.data != "shapes":
            raise SystemExit("unclip train judge: it learns from Shapes scenes and their near-miss captions from "
                             "scratch: --init-from and --data do not apply")
        out = train_judge(preset_name=args.preset, clip_dir=args.clip, run_dir=args.run_dir,
                          max_steps=args.max_steps, device=device, train_changes=changes, max_seconds=max_seconds)
    else:
        from ..prior.train import train_prior

        if not args.clip:
            raise SystemExit(f"unclip train {args.stage}: --clip DIR (the frozen CLIP the prior learns in) is required")
        kind = "diffusion" if args.stage == "prior" else "autoregressive"
        out = train_prior(kind=kind, preset_name=args.preset, clip_dir=args.clip, run_dir=args.run_dir,
                          max_steps=args.max_steps, data=args.data, device=device, dist_ctx=ctx,
                          init_from=args.init_from, train_changes=changes, max_seconds=max_seconds)
    if ctx.rank == 0:
        print(f"wrote {out}")
    return 0

