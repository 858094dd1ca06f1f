"""Does the prior put things on the side the caption names?

For Shapes-world captions that say "left" or "right" (one object with a position, or two in a left/right
relation), render the scene and its mirror image: every shape here is left-right symmetric, so the mirror is the
same scene with the sides swapped. A prior's ẑ_i "picks the right side" when it is nearer (cosine) to the true
image's z_i than to the mirror's. Chance is 0.5. A second, looser measure for the single objects: a linear
probe (logistic regression) fitted on true z_i of training scenes to tell "left" from "right", then read on the
true z_i of the measured scenes (its ceiling), on z_t and on each prior's ẑ_i. Also printed: how far apart CLIP
itself puts the two sides (cos(z_i, mirrored z_i), and cos(z_t, z_t of the caption with left and right
swapped)), which bounds what a prior reading only CLIP's text side can tell.

    .venv/bin/python benchmarks/prior_sides.py --clip models/shapes-tiny/clip \
        --prior models/shapes-tiny/prior runs/prior-tok/model --split val --n 300

Prints a table; writes benchmarks/results/prior_sides.json.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image

from unclip.clip import load_clip
from unclip.prior import image_embeddings, load_prior
from unclip.world.render import render
from unclip.world.scene import sample_scene
from report import write_report

# (sampler, steps, best_of): the shipped pipeline's sampling, and the paper's
SETTINGS = (("dpm++", 2, 1), ("ddim", 64, 2))


def side_captions(split: str, n: int) -> dict[str, list]:
    """Up to n scenes per group ("single": one object placed left or right, "relation": left/right of)."""
    groups: dict[str, list] = {"single": [], "relation": []}
    index = 0
    while min(len(g) for g in groups.values()) < n and index < 200 * n:
        scene = sample_scene(split, index)
        index += 1
        words = scene.caption.split()
        if "left" not in words and "right" not in words:
            continue
        if "of" in words:
            key = "relation"
        elif len(scene.objects) == 1:
            key = "single"
        else:
            continue
        if len(groups[key]) < n:
            groups[key].append(scene)
    return groups


def side_probe(clip, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(w, b) of a logistic regression telling "left" (1) from "right" (0) on the true z_i of n training-split
    single objects placed on one side."""
    scenes = side_captions("train", n)["single"]
    z = F.normalize(clip.encode_image([render(s, clip.config.image_size) for s in scenes]), dim=-1)
    y = torch.tensor([is_left(s.caption) for s in scenes], dtype=z.dtype)
    with torch.enable_grad():
        w, b = torch.zeros(z.shape[1], requires_grad=True), torch.zeros(1, requires_grad=True)
        opt = torch.optim.LBFGS([w, b], max_iter=300)

        def closure():
            opt.zero_grad()
            loss = F.binary_cross_entropy_with_logits(z @ w + b, y) + 1e-4 * w.square().sum()
            loss.backward()
            return loss

        opt.step(closure)
    return w.detach(), b.detach()


def is_left(caption: str) -> bool:
    return "left" in caption.split()


def probe_accuracy(probe, z: torch.Tensor, captions: list[str]) -> float:
    w, b = probe
    y = torch.tensor([is_left(c) for c in captions])
    return float(((z @ w + b > 0) == y).float().mean())


def swap_sides(caption: str) -> str:
    return " ".join({"left": "right", "right": "left"}.get(w, w) for w in caption.split())


@torch.no_grad()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clip", default="models/shapes-tiny/clip")
    parser.add_argument("--prior", nargs="+", default=["models/shapes-tiny/prior"], help="diffusion prior directories")
    parser.add_argument("--split", default="val", choices=["train", "val", "test", "novel"])
    parser.add_argument("--n", type=int, default=300, help="captions per group")
    parser.add_argument("--seeds", type=int, default=3, help="draws per caption (different seeds)")
    parser.add_argument("--probe-n", type=int, default=1500, help="training scenes the linear side probe is fitted on")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "prior_sides.json"))
    args = parser.parse_args()
    if args.n < 1 or args.seeds < 1:
        parser.error(f"--n and --seeds must be positive, got {args.n} and {args.seeds}")
    torch.set_num_threads(args.threads)
    clip = load_clip(args.clip)
    size = clip.config.image_size
    report = {"benchmark": "prior_sides", "clip": args.clip, "split": args.split, "seeds": args.seeds,
              "groups": {}, "rows": []}
    probe = side_probe(clip, args.probe_n)
    data = {}
    for key, scenes in side_captions(args.split, args.n).items():
        captions = [s.caption for s in scenes]
        images = [render(s, size) for s in scenes]
        z_i = F.normalize(clip.encode_image(images), dim=-1)
        z_m = F.normalize(clip.encode_image([im.transpose(Image.FLIP_LEFT_RIGHT) for im in images]), dim=-1)
        z_t, z_s = clip.encode_text(captions), clip.encode_text([swap_sides(c) for c in captions])
        data[key] = (captions, z_i, z_m)
        probe_cols = {"probe_true_z_i": probe_accuracy(probe, z_i, captions),
                      "probe_z_t": probe_accuracy(probe, F.normalize(z_t, dim=-1), captions)} if key == "single" else {}
        report["groups"][key] = {"n": len(captions), "cos_image_mirror": float((z_i * z_m).sum(-1).mean()),
                                 "cos_text_swapped": float((F.normalize(z_t, dim=-1) * F.normalize(z_s, dim=-1))
                                                           .sum(-1).mean()),
                                 "z_t_right_side": float(((z_t * z_i).sum(-1) > (z_t * z_m).sum(-1)).float().mean()),
                                 **probe_cols}
        g = report["groups"][key]
        print(f"{key}: {g['n']} captions; CLIP cos(z_i, mirrored z_i) {g['cos_image_mirror']:.4f}, "
              f"cos(z_t, z_t swapped) {g['cos_text_swapped']:.4f}; z_t itself nearer the right side "
              f"{g['z_t_right_side']:.3f}" + (f"; the linear side probe reads true z_i {g['probe_true_z_i']:.3f}, "
                                             f"z_t {g['probe_z_t']:.3f}" if probe_cols else ""))
    print(f"\n{'prior':<36}{'sampling':<16}" + "".join(f"{k + ' side':>15}{'cos true':>10}" for k in data)
          + f"{'probe':>8}")
    for directory in args.prior:
        prior = load_prior(directory)
        for sampler, steps, best_of in SETTINGS:
            row = {"prior": directory, "sampler": sampler, "steps": steps, "best_of": best_of}
            for key, (captions, z_i, z_m) in data.items():
                right, cos, probed = [], [], []
                for seed in range(args.seeds):
                    pred = image_embeddings("diffusion", clip=clip, captions=captions, prior=prior,
                                            generator=torch.Generator().manual_seed(seed), steps=steps,
                                            sampler=sampler, best_of=best_of)
                    right.append(((pred * z_i).sum(-1) > (pred * z_m).sum(-1)).float().mean())
                    cos.append((pred * z_i).sum(-1).mean())
                    probed.append(probe_accuracy(probe, pred, captions))
                row[key] = {"right_side": float(torch.stack(right).mean()), "cos_true": float(torch.stack(cos).mean())}
                if key == "single":
                    row[key]["probe"] = sum(probed) / len(probed)
            report["rows"].append(row)
            print(f"{directory[-36:]:<36}{f'{sampler} {steps}, best {best_of}':<16}"
                  + "".join(f"{row[k]['right_side']:>15.3f}{row[k]['cos_true']:>10.3f}" for k in data)
                  + f"{row['single']['probe']:>8.3f}")
    write_report(args.out, report)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
