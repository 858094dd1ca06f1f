"""Reconstruction at equal training time: unclip's decoder against lucidrains' dalle2-pytorch `Unet` (issue 7).

Both sides train at once, each in its own process on its own core (one thread each, pinned), for the same wall
time on the same Shapes scenes in the same order (train split, batch 32), conditioned through the same frozen CLIP:
z_i (dropped 10%) and the caption's token states (dropped 50%), unCLIP §2.1. Each keeps an EMA of its weights
(decay 0.999, as the shipped recipe), and both use AdamW at the recipe's learning rate with the same linear warm-up
and gradient clipping. Each side is its own implementation end to end:
- unclip: `Decoder` of RECIPES[--preset] (v-prediction on a cosine schedule rescaled to zero terminal SNR);
- the peer: its `Unet` built as benchmarks/decoder_peer.py builds it (same levels, multipliers, blocks,
  attention), at the `dim` whose parameter count is closest to unclip's (at the shipped size that is 8, its
  GroupNorm minimum, with about twice unclip's parameters), inside its own `Decoder` (v-prediction on its cosine
  schedule), which noises the batch and returns the loss.
When the time is up each side decodes the true z_i and caption of --n test images (25 DDIM steps, guidance 3,
the EMA weights), and the world's scorer checks them against the captions (benchmarks/decoder.py's measures);
the first 16 of each side go into a PNG grid beside the JSON (framed green where the scorer calls them correct).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/decoder_race.py --minutes 25 --clip models/shapes-tiny/clip

The peer's install line is in benchmarks/decoder_peer.py; without it this prints a "skipped" JSON and exits 0.
Writes benchmarks/results/decoder_race.json.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

from unclip.clip import load_clip
from unclip.data.images import to_pil
from unclip.decoder import Decoder
from unclip.decoder.train import RECIPES, decoder_conditioning
from unclip.grid import captioned_grid
from unclip.world import ShapesDataset
from decoder import attributes, batches, score
from decoder_peer import import_peer, match_peer_dim, n_params, peer_decoder, skip, unclip_config, versions
from report import write_report

BATCH, WARMUP, CLIP_NORM, EMA_DECAY = 32, 200, 1.0, 0.999


class UnclipSide:
    def __init__(self, preset: str):
        torch.manual_seed(0)
        self.model = Decoder(unclip_config(preset))
        self.params = n_params(self.model.net)
        self.generator = torch.Generator().manual_seed(0)

    def loss(self, images, z_i, caption) -> torch.Tensor:
        return self.model.loss(images=images, image_embedding=z_i, generator=self.generator, **caption)

    def sample(self, ema, z_i, caption, seed: int) -> torch.Tensor:
        return ema.sample(image_embedding=z_i, steps=25, sampler="ddim", guidance_scale=3.0,
                          generator=torch.Generator().manual_seed(seed), **caption)


class PeerSide:
    def __init__(self, preset: str, dim: int):
        dp, _ = import_peer()
        torch.manual_seed(0)
        self.model = peer_decoder(dp, config=unclip_config(preset), dim=dim, sample_steps=25)
        self.params = n_params(self.model.unets[0])

    @staticmethod
    def _text(caption) -> torch.Tensor:
        """The token states with padding rows zeroed: the peer reads its text mask off them."""
        return caption["text_states"] * caption["text_mask"][..., None]

    def loss(self, images, z_i, caption) -> torch.Tensor:
        return self.model(images, image_embed=z_i, text_encodings=self._text(caption))

    def sample(self, ema, z_i, caption, seed: int) -> torch.Tensor:
        torch.manual_seed(seed)  # the peer draws its noise from the global generator
        return ema.sample(image_embed=z_i, text_encodings=self._text(caption), cond_scale=3.0).clamp(-1, 1)


def run_side(args) -> None:
    """One side of the race, in this process: train for --minutes, then decode --n test images; JSON to stdout."""
    torch.set_num_threads(1)
    clip = load_clip(args.clip).eval()
    # both sides read the conditioning unclip's decoder training reads (decoder_conditioning: z_i through the frozen
    # CLIP, resized to its side if needed, and the caption's token states); this decoder only names what it needs
    reference = Decoder(unclip_config(args.preset))
    side = UnclipSide(args.preset) if args.side == "unclip" else PeerSide(args.preset, args.peer_dim)
    model = side.model
    ema = copy.deepcopy(model).eval()
    lr = RECIPES[args.preset].train.lr
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    data = ShapesDataset("train", size=32, length=10 ** 8)
    losses, step, start = [], 0, time.perf_counter()
    while time.perf_counter() - start < args.minutes * 60:
        items = [data[step * BATCH + j] for j in range(BATCH)]
        images = torch.stack([x for x, _, _ in items])
        z_i, caption = decoder_conditioning(reference, clip, images, [c for _, c, _ in items])
        for group in opt.param_groups:
            group["lr"] = lr * min(1.0, (step + 1) / WARMUP)
        model.train()
        opt.zero_grad(set_to_none=True)
        loss = side.loss(images, z_i, caption)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP_NORM)
        opt.step()
        with torch.no_grad():
            for e, p in zip(ema.parameters(), model.parameters()):
                e.lerp_(p, 1 - EMA_DECAY)
        losses.append(loss.item())
        step += 1
    seconds = time.perf_counter() - start
    test = ShapesDataset("test", size=32, length=args.n)
    outs, captions, scenes = [], [], []
    for k, sl in enumerate(batches(args.n, 50)):
        items = [test[i] for i in range(sl.start, sl.stop)]
        images, caps = torch.stack([x for x, _, _ in items]), [c for _, c, _ in items]
        with torch.no_grad():
            outs.append(side.sample(ema, *decoder_conditioning(reference, clip, images, caps), seed=k))
        captions += caps
        scenes += [s for _, _, s in items]
    verdicts, skills = score(torch.cat(outs), captions)
    grid = captioned_grid([to_pil(x) for x in torch.cat(outs)[:16]], captions[:16], columns=8, cell=96,
                          verdicts=verdicts[:16])
    grid.save(Path(args.out).with_name(f"{Path(args.out).stem}_{args.side}.png"))
    tail = losses[-200:]
    print(json.dumps({"side": args.side, "parameters": side.params, "steps": step, "train_seconds": seconds,
                      "samples_per_s": step * BATCH / seconds, "final_loss_mean_200": sum(tail) / len(tail),
                      "correct": sum(verdicts) / len(verdicts), "skills": skills,
                      "attributes": attributes(torch.cat(outs), scenes)}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=25.0, help="training wall time per side (default: 25)")
    parser.add_argument("--clip", default="models/shapes-tiny/clip", help="the frozen CLIP both sides invert")
    parser.add_argument("--preset", default="tiny-16-rb1", help="unclip's decoder recipe (default: the shipped one)")
    parser.add_argument("--n", type=int, default=300, help="test images decoded per side (default: 300)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "decoder_race.json"))
    parser.add_argument("--side", choices=("unclip", "peer"), help=argparse.SUPPRESS)
    parser.add_argument("--peer-dim", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        return run_side(args)
    dp, error = import_peer()
    if dp is None:
        return skip(error, benchmark="decoder_race")
    target = n_params(Decoder(unclip_config(args.preset)).net)
    dim, peer_params = match_peer_dim(dp, target, unclip_config(args.preset).unet)
    cores = sorted(os.sched_getaffinity(0))
    base = [sys.executable, __file__, "--minutes", str(args.minutes), "--clip", args.clip, "--preset", args.preset,
            "--n", str(args.n), "--peer-dim", str(dim), "--out", args.out]
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    print(f"racing unclip {args.preset} ({target:,} parameters) against dalle2-pytorch Unet dim {dim} "
          f"({peer_params:,}) for {args.minutes:g} min each, one core each, then {args.n} test reconstructions")
    procs = []
    for k, side in enumerate(("unclip", "peer")):
        cmd = base + ["--side", side]
        if len(cores) >= 2:  # one core each, so neither slows the other
            cmd = ["taskset", "-c", str(cores[k]), *cmd]
        procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, env=env, text=True))
    results = []
    for p in procs:
        out, _ = p.communicate()
        if p.returncode:
            raise SystemExit(f"a side failed (exit {p.returncode})")
        results.append(json.loads(out.strip().splitlines()[-1]))
    print(f"\n{'':>16}{'params':>10}{'steps':>7}{'samples/s':>11}{'loss':>8}{'correct':>9}{'single':>8}"
          f"{'background':>12}{'count':>7}{'colours':>9}{'shapes':>8}")
    for r in results:
        a = r["attributes"]
        print(f"{r['side']:>16}{r['parameters']:>10,}{r['steps']:>7}{r['samples_per_s']:>11.1f}"
              f"{r['final_loss_mean_200']:>8.4f}{r['correct']:>9.3f}{r['skills'].get('single', 0):>8.3f}"
              f"{a['background']:>12.3f}{a['count']:>7.3f}{a['colours']:>9.3f}{a['shapes']:>8.3f}")
    print("(loss: each side's own training loss, mean of its last 200 steps; the two schedules differ, so compare "
          "the scorer's columns)")
    write_report(args.out, {"benchmark": "decoder_race", "minutes": args.minutes, "preset": args.preset,
                            "clip": args.clip, "n": args.n, "batch": BATCH, "peer_dim": dim, "versions": versions(),
                            "results": results})


if __name__ == "__main__":
    main()
