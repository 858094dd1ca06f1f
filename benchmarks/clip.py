"""How well does a CLIP trained on the Shapes world read its images? (issue 5's measurements)

- 8-way: for each test image, the true caption against 7 captions that each change one attribute
  (one per applicable attribute among colour, shape, size, count, relation, position, background,
  the rest filled with further colour/shape/size/background changes); the 8-way accuracy, and per
  attribute how often the true caption out-scores that attribute's change.
- Text -> image recall@1 among 100 test images (averaged over blocks of 100).
- Zero-shot "which shape" / "which colour" on single-object test scenes, two ways over the same prompts (a
  class's prompts run over the other attribute: "a red {shape}", "a blue {shape}", ...): averaged and
  normalised, as open_clip does; and marginalised, p(shape | image) = sum over colours of the softmax over all
  48 colour-shape prompts (unclip.clip.marginal_class_scores). And shape with the colour known (the six prompts
  "a {its colour} {shape}").
- Diagnostics of where layout is lost: R^2 of a linear probe (least squares) from z_i to the object's
  centre (x, y) on single-object scenes, fitted on train scenes, measured on the test ones (does the
  image embedding know where the object is?), the accuracy of a linear probe from z_i to the object's
  shape (does it know what the object is, whatever the text tower reads?); and the cosine between z_t of
  captions that differ only in "left" / "right" (does the text embedding?).
Prints a table and writes benchmarks/results/clip.json.

    .venv/bin/python benchmarks/clip.py --model runs/clip-tiny/model
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from unclip.clip import load_clip, marginal_class_scores, recall_at_k
from unclip.world import ATTRIBUTES, ShapesDataset, perturb, sample_scene
from unclip.world.vocab import COLOURS, SHAPES
from report import write_report

FILLERS = ("colour", "shape", "size", "background")


def eight_captions(scene, rng) -> list[tuple[str, str]]:
    """(attribute, caption) for 7 distinct false captions of the scene."""
    out, seen = [], {scene.caption}
    for attribute in ATTRIBUTES:
        wrong = perturb(scene, attribute, rng)
        if wrong is not None and wrong not in seen:
            out.append((attribute, wrong))
            seen.add(wrong)
    tries = 0
    while len(out) < 7 and tries < 200:
        tries += 1
        attribute = FILLERS[int(rng.integers(len(FILLERS)))]
        wrong = perturb(scene, attribute, rng)
        if wrong is not None and wrong not in seen:
            out.append((attribute, wrong))
            seen.add(wrong)
    return out


def probes(model, size: int, *, test_images: torch.Tensor, test_truth, n_fit: int = 1500) -> dict:
    """What a linear read-out of unit z_i (plus a bias) knows about a single object, fitted by least squares on
    the first `n_fit` single-object train scenes and measured on the test ones given: R^2 of the centre's x and y,
    and the accuracy of the shape (argmax of a least-squares fit to the one-hot shape). The decoder can only draw
    what z_i carries, whatever the text tower makes of it."""
    scenes = ((i, sample_scene("train", i)) for i in range(8 * n_fit))
    fit = [(i, scene.objects[0]) for i, scene in scenes if scene.form == "single"][:n_fit]
    data = ShapesDataset("train", size=size, length=fit[-1][0] + 1)

    def features(images):  # unit z_i with a constant column for the intercept, (N, E+1)
        return F.pad(F.normalize(model.encode_image_pixels(images), dim=-1), (0, 1), value=1.0)

    def centre(objects):
        return torch.tensor([[o.cx, o.cy] for o in objects])

    def one_hot(objects):
        return F.one_hot(torch.tensor([SHAPES.index(o.shape) for o in objects]), len(SHAPES)).float()

    fit_features, test_features = features(torch.stack([data[i][0] for i, _ in fit])), features(test_images)
    weights = torch.linalg.lstsq(fit_features, centre([obj for _, obj in fit])).solution  # (E+1, 2)
    target = centre(test_truth)
    residual = ((test_features @ weights - target) ** 2).sum(0)
    r2 = (1 - residual / ((target - target.mean(0)) ** 2).sum(0)).tolist()
    shape_weights = torch.linalg.lstsq(fit_features, one_hot([obj for _, obj in fit])).solution  # (E+1, shapes)
    shape_acc = float(((test_features @ shape_weights).argmax(1) == one_hot(test_truth).argmax(1)).float().mean())
    return {"position_r2": r2, "shape_accuracy": shape_acc}


@torch.no_grad()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="runs/clip-tiny/model")
    parser.add_argument("--n", type=int, default=1000, help="test images for the 8-way and retrieval checks")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "clip.json"))
    args = parser.parse_args()
    model = load_clip(args.model)
    size = model.config.image_size
    started = time.time()
    data = ShapesDataset("test", size=size, length=args.n)
    images = torch.stack([data[i][0] for i in range(args.n)])
    z_image = F.normalize(model.encode_image_pixels(images), dim=-1)

    rng = np.random.default_rng(0)
    right, pair_right, pair_n = 0, {a: 0 for a in ATTRIBUTES}, {a: 0 for a in ATTRIBUTES}
    for i in range(args.n):
        scene = sample_scene("test", i)
        negatives = eight_captions(scene, rng)
        texts = [scene.caption] + [c for _, c in negatives]
        scores = model.encode_text(texts) @ z_image[i]  # (8,)
        right += int(scores.argmax() == 0)
        for k, (attribute, _) in enumerate(negatives, start=1):
            pair_n[attribute] += 1
            pair_right[attribute] += int(scores[0] > scores[k])
    eight_way = right / args.n

    z_text = model.encode_text([sample_scene("test", i).caption for i in range(args.n)])
    blocks = [recall_at_k(z_text[s:s + 100], z_image[s:s + 100], k=1) for s in range(0, args.n - 99, 100)]
    recall = float(np.mean(blocks))

    singles = [i for i in range(4 * args.n) if sample_scene("test", i).form == "single"][:500]
    wide = ShapesDataset("test", size=size, length=4 * args.n)
    single_images = torch.stack([wide[i][0] for i in singles])
    # Prompts are captions of the world's grammar ("a red circle", "an orange star"): the text tower
    # has only seen such captions, so a bare "red circle" would test it out of distribution.
    article = lambda colour: "an" if colour[0] in "aeiou" else "a"
    # every prompt "a {colour} {shape}" encoded once: (shapes, colours, E), unit rows
    grid = model.encode_text([f"{article(c)} {c} {s}" for s in SHAPES for c in COLOURS]).view(
        len(SHAPES), len(COLOURS), -1)
    z_single = F.normalize(model.encode_image_pixels(single_images), dim=-1)  # (N, E)
    truth = [sample_scene("test", i).objects[0] for i in singles]
    shape_truth = torch.tensor([SHAPES.index(o.shape) for o in truth])
    colour_truth = torch.tensor([list(COLOURS).index(o.colour) for o in truth])
    accuracy = lambda scores, labels: float((scores.argmax(1) == labels).float().mean())  # noqa: E731
    # open_clip's class vectors: each class's prompts (over the other attribute) averaged, normalised
    shape_acc = accuracy(z_single @ F.normalize(grid.mean(1), dim=-1).t(), shape_truth)
    colour_acc = accuracy(z_single @ F.normalize(grid.mean(0), dim=-1).t(), colour_truth)
    # marginalised over the other attribute: the softmax over all 48 prompts at CLIP's temperature, summed
    scale = float(model.scale)
    shape_marginal = accuracy(marginal_class_scores(z_single, grid, logit_scale=scale), shape_truth)
    colour_marginal = accuracy(marginal_class_scores(z_single, grid.transpose(0, 1), logit_scale=scale), colour_truth)
    # the same question with the colour known: the six prompts "a {its colour} {shape}" for each image
    shape_given_colour = accuracy(torch.einsum("nse,ne->ns", grid[:, colour_truth].transpose(0, 1), z_single),
                                  shape_truth)

    probe = probes(model, size, test_images=single_images, test_truth=truth)
    position_r2 = probe["position_r2"]
    mean_cos = lambda a, b: float((model.encode_text(a) * model.encode_text(b)).sum(-1).mean())  # noqa: E731
    pairs = [(f"{article(c)} {c} {s}", f"a blue {'square' if s != 'square' else 'circle'}") for c in list(COLOURS)[:4]
             for s in SHAPES[:3]]
    side_cos = {"position": mean_cos([f"{a} on the left" for a, _ in pairs], [f"{a} on the right" for a, _ in pairs]),
                "relation": mean_cos([f"{a} to the left of {b}" for a, b in pairs],
                                     [f"{a} to the right of {b}" for a, b in pairs])}

    print(f"model {args.model}: {size} px, {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters")
    print(f"8-way true caption vs one-attribute changes, {args.n} test images: {eight_way:.3f} (target >= 0.90)")
    print(f"{'changed attribute':<20}{'n':>6}{'true wins':>11}")
    for a in ATTRIBUTES:
        if pair_n[a]:
            print(f"{a:<20}{pair_n[a]:>6}{pair_right[a] / pair_n[a]:>11.3f}")
    print(f"text -> image recall@1 among 100: {recall:.3f} (target >= 0.80)")
    print(f"zero-shot on {len(singles)} single-object scenes (target >= 0.98), marginalised over the other "
          f"attribute: shape {shape_marginal:.3f}, colour {colour_marginal:.3f}; prompts averaged: shape "
          f"{shape_acc:.3f}, colour {colour_acc:.3f}; shape with the colour known: {shape_given_colour:.3f}")
    print(f"z_i -> object centre, linear probe R^2 on test single objects: x {position_r2[0]:.3f}, "
          f"y {position_r2[1]:.3f}; shape read linearly from z_i: {probe['shape_accuracy']:.3f}")
    print(f"cos(z_t) of captions differing in left/right: position "
          f"{side_cos['position']:.4f}, relation {side_cos['relation']:.4f}")
    report = {"benchmark": "clip", "model": args.model, "n": args.n, "eight_way": eight_way,
              "pairwise_by_attribute": {a: pair_right[a] / pair_n[a] for a in ATTRIBUTES if pair_n[a]},
              "pairs_by_attribute": pair_n, "recall_at_1_among_100": recall, "zeroshot_shape": shape_acc,
              "zeroshot_colour": colour_acc, "zeroshot_shape_marginal": shape_marginal,
              "zeroshot_colour_marginal": colour_marginal, "zeroshot_shape_given_colour": shape_given_colour,
              "position_probe_r2": {"x": position_r2[0], "y": position_r2[1]},
              "shape_probe_accuracy": probe["shape_accuracy"],
              "left_right_text_cos": side_cos, "seconds": round(time.time() - started, 1)}
    write_report(args.out, report)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
