"""Is the decoder's reconstruction gap a sampling problem? The same decoder, the same true z_i and captions, sampled
every way unclip can (issue 7).

For each setting (sampler, network evaluations, DDIM eta, x0 clipping, guidance scale), the decoder decodes the
true z_i + caption of --n test images (through the frozen CLIP, as benchmarks/decoder.py's reconstruction check),
batch k always seeded k, and the world's scorer checks each image against its caption. Every setting sees the same
scenes, so each row's gain over the first row is a paired difference: it is reported with its standard error,
sqrt(var(d) / n) over the per-image differences d in {-1, 0, 1}. Prints a table and writes
benchmarks/results/decoder_samplers.json.

    .venv/bin/python benchmarks/decoder_samplers.py --decoder models/shapes-tiny/decoder --threads 2

Under each row, the images called wrong are split by the first thing wrong (decoder.py's first_failure: the object
count, the colours, the shapes, which colour goes with which shape, or else a size, relation, position or background),
as shares of all images, per scene form.

Given several decoders (`--decoder A B ...`), every setting runs on each, and the gains pair every row with the first
decoder's first setting: two networks compared on the same scenes and seeds.

A setting is SAMPLER:STEPS[:key=value ...] with keys eta, threshold (static|none), guidance, for a
self-conditioned decoder estimate (carry: each step reads the step before's x0 estimate, the default; zeros: never,
as the manipulations sample), drops (what guidance's unconditional branch drops: both, the default, caption or
image) and guide (a weaker decoder's directory: autoguidance, the scale applied to decoder - guide instead), e.g.
`ddim:25:eta=1`, `dpm++:7:guidance=2`, `ddim:25:estimate=zeros`, `ddpm:7:guidance=3:guide=runs/g/model`; defaults
eta 0, static clipping, guidance --guidance.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import torch

from unclip.clip import load_clip
from unclip.decoder import load_decoder
from unclip.decoder.train import decoder_conditioning
from unclip.samplers import SAMPLERS
from unclip.world import ShapesDataset
from decoder import FAILURES, batches, failure_kinds, score_results, verdicts_and_skills
from report import write_report

DEFAULT_SETTINGS = ("ddim:25", "ddim:25:threshold=none", "ddim:25:eta=1", "ddpm:25", "dpm++:25", "dpm++:15",
                    "dpm++:7:guidance=2", "ddim:50", "ddpm:100")


def parse_setting(text: str, *, guidance: float) -> dict:
    """'ddim:25:eta=1' -> the keyword arguments of Decoder.sample (sampler, steps, eta, threshold, guidance_scale)."""
    parts = text.split(":")
    if len(parts) < 2 or parts[0] not in SAMPLERS or not parts[1].isdigit() or int(parts[1]) < 1:
        raise ValueError(f"setting {text!r}: expected SAMPLER:STEPS[:key=value ...] with SAMPLER one of "
                         f"{', '.join(SAMPLERS)} and STEPS a positive integer")
    out = dict(sampler=parts[0], steps=int(parts[1]), eta=0.0, threshold="static", guidance_scale=guidance)
    for item in parts[2:]:
        key, _, value = item.partition("=")
        if key == "eta":
            out["eta"] = float(value)
        elif key == "guidance":
            out["guidance_scale"] = float(value)
        elif key == "threshold" and value in ("static", "none"):
            out["threshold"] = None if value == "none" else value
        elif key == "guide" and value:
            out["guide"] = value
        elif key == "drops" and value in ("both", "caption", "image"):
            out["guidance_drops"] = value
        elif key == "estimate" and value in ("carry", "zeros"):
            out["carry_estimate"] = value == "carry"
        else:
            raise ValueError(f"setting {text!r}: unknown option {item!r} (eta=F, guidance=F, threshold=static|none, "
                             "estimate=carry|zeros, drops=both|caption|image, guide=DIR)")
    if out["eta"] and out["sampler"] != "ddim":
        raise ValueError(f"setting {text!r}: eta applies to ddim only")
    return out


def paired_gain(verdicts: list[bool], reference: list[bool]) -> tuple[float, float]:
    """Mean and standard error of the per-image difference between two settings' verdicts on the same images."""
    d = [int(a) - int(b) for a, b in zip(verdicts, reference)]
    mean = sum(d) / len(d)
    var = sum((x - mean) ** 2 for x in d) / max(len(d) - 1, 1)
    return mean, math.sqrt(var / len(d))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clip", default="models/shapes-tiny/clip", help="the frozen CLIP the decoder inverts")
    parser.add_argument("--decoder", nargs="+", default=["models/shapes-tiny/decoder"],
                        help="one or more decoder directories; rows pair against the first one's first setting")
    parser.add_argument("--n", type=int, default=500, help="images (default: 500)")
    parser.add_argument("--split", default="test", choices=("test", "val"),
                        help="the world's split the images come from (default: test). The shipped decoder was chosen "
                        "on the first 500 test images and seeds, so its score there is biased upwards against any "
                        "challenger; val gives images no choice has seen")
    parser.add_argument("--guidance", type=float, default=3.0, help="guidance where a setting names none (default: 3)")
    parser.add_argument("--settings", nargs="+", default=list(DEFAULT_SETTINGS),
                        help="SAMPLER:STEPS[:eta=F][:threshold=static|none][:guidance=F] ... (default: nine)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "decoder_samplers.json"))
    args = parser.parse_args()
    try:  # bad settings fail before any work
        settings = [parse_setting(s, guidance=args.guidance) for s in args.settings]
    except ValueError as error:
        parser.error(str(error))
    torch.set_num_threads(args.threads)
    clip = load_clip(args.clip)
    rows, reference, guides = [], None, {}
    print(f"{'decoder / setting':<44}{'correct':>9}{'vs row 1':>16}{'single':>8}{'counting':>10}{'relation':>10}"
          f"{'s/image':>9}   ({args.n} {args.split} images from true z_i + caption)")
    for path in args.decoder:
        decoder = load_decoder(path)
        data = ShapesDataset(args.split, size=decoder.config.image_size, length=args.n)
        conditions, captions, scenes = [], [], []
        for sl in batches(args.n, 50):
            items = [data[i] for i in range(sl.start, sl.stop)]
            caps = [item[1] for item in items]
            conditions.append(decoder_conditioning(decoder, clip, torch.stack([item[0] for item in items]), caps))
            captions += caps
            scenes += [item[2] for item in items]
        for text, kwargs in zip(args.settings, settings):
            started = time.perf_counter()
            sampling = kwargs | ({"guide": guides.setdefault(kwargs["guide"], load_decoder(kwargs["guide"]))}
                                 if "guide" in kwargs else {})
            with torch.no_grad():
                out = torch.cat([decoder.sample(image_embedding=z_i, generator=torch.Generator().manual_seed(k),
                                                **caption, **sampling)
                                 for k, (z_i, caption) in enumerate(conditions)])
            seconds = (time.perf_counter() - started) / args.n
            results = score_results(out, captions)
            verdicts, skills = verdicts_and_skills(results)
            if reference is None:  # the first row is what every row's gain is paired against
                reference = verdicts
            gain, se = paired_gain(verdicts, reference)
            kinds = failure_kinds(results, scenes)
            rows.append({"decoder": path, "setting": text, **kwargs, "correct": sum(verdicts) / len(verdicts),
                         "gain_vs_first": gain, "gain_se": se, "skills": skills, "failures": kinds,
                         "seconds_per_image": seconds})
            skill = lambda name, width: f"{skills[name]:>{width}.3f}" if name in skills else f"{'-':>{width}}"
            label = text if len(args.decoder) == 1 else f"{Path(path).parent.name}/{Path(path).name} {text}"
            print(f"{label[-43:]:<44}{rows[-1]['correct']:>9.3f}{gain:>+10.3f} ±{se:.3f}{skill('single', 8)}"
                  f"{skill('counting', 10)}{skill('relation', 10)}{seconds:>9.3f}", flush=True)
            print("    wrong, by the first thing wrong: " + "  ".join(
                f"{form} " + "/".join(f"{kinds[form][k]:.2f}" for k in FAILURES)
                for form in ("all", "single", "pair", "list", "count") if form in kinds) + f"  ({'/'.join(FAILURES)})")
    decoders = args.decoder[0] if len(args.decoder) == 1 else args.decoder
    write_report(args.out, {"benchmark": "decoder_samplers", "decoder": decoders, "clip": args.clip, "n": args.n,
                            "split": args.split, "threads": args.threads, "rows": rows})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
