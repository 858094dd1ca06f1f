"""The decoder against its peer: unclip's tiny decoder UNet vs. lucidrains' dalle2-pytorch `Unet`, one run.

Both at 32 px, conditioned on a 64-d z_i and CLIP token states (B, 24, 128), predicting v on a 1000-step cosine
schedule with a fixed variance, z_i dropped 10% and the caption 50% of the time (unCLIP §2.1). The peer's `dim`
is searched (in steps of its 8 GroupNorm groups) for the parameter count closest to unclip's; both counts print.
The peer is driven through its own `Decoder` wrapper (no CLIP: it accepts image_embed and text_encodings), whose
forward noises the batch at random timesteps and returns the loss, as unclip's `Decoder.loss` does.

Measured, interleaved (unclip, peer, unclip, peer ...) after warm-up steps, medians reported:
- training: one step = loss forward + backward + AdamW step at `--batch` (32) images; samples/s and s/step;
- sampling: DDIM, 25 network evaluations, one batch of `--sample-batch` images, no guidance; s/image;
- peak memory: peak RSS (VmHWM) of a fresh subprocess per model that builds it, samples once, then trains two
  steps (ru_maxrss would not do: Linux carries the parent's peak across fork + exec).
The goal (issue): unclip's decoder at least 1.5x the peer's training throughput at equal parameter count.

The peer, into this venv, without torch or torchvision (a stand-in for torchvision's few image transforms lives
in benchmarks/peer_stubs and goes on sys.path here; dalle2-pytorch never calls them in this benchmark):

    .venv/bin/pip install --no-deps dalle2-pytorch==1.15.6 einops==0.8.2 kornia==0.9.0 kornia-rs==0.2.0 \\
        ftfy==6.3.1 wcwidth==0.9.4 regex==2026.11.15 vector-quantize-pytorch==1.32.0 einx==0.4.3 \\
        frozendict==2.5.1 loguru==0.7.3 torch-einops-utils==0.2.0 resize-right==0.0.2 \\
        rotary-embedding-torch==0.9.1 x-clip==0.14.4 coca-pytorch==0.1.0 pytorch-warmup==0.2.0 \\
        ema-pytorch==0.8.3 accelerate==1.15.0

Run (about 4 minutes on a 2-core CPU shared with other work; without dalle2-pytorch it prints a "skipped"
JSON and exits 0):

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/decoder_peer.py --threads 2
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/decoder_peer.py --preset tiny-16-rb1 --threads 1 --steps 20 \\
        --out benchmarks/results/decoder_peer_tiny16rb1.json     # the shipped decoder's size
    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/decoder_peer.py --preset tiny-16-rb1 --model-channels 24 \\
        --threads 2 --steps 20 --out benchmarks/results/decoder_peer_rb1_mc24.json   # the peer's smallest size
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from unclip.decoder import Decoder, DecoderConfig, UNetConfig
from unclip.decoder.train import RECIPES
from report import write_report

STUBS = Path(__file__).parent / "peer_stubs"
# The versions this benchmark was run with (the peer's own requirements are loose; newer ones may behave differently).
PEER_PACKAGES = {
    "dalle2-pytorch": "1.15.6", "einops": "0.8.2", "kornia": "0.9.0", "kornia-rs": "0.2.0", "ftfy": "6.3.1",
    "wcwidth": "0.9.4", "regex": "2026.11.15", "vector-quantize-pytorch": "1.32.0", "einx": "0.4.3",
    "frozendict": "2.5.1", "loguru": "0.7.3", "torch-einops-utils": "0.2.0", "resize-right": "0.0.2",
    "rotary-embedding-torch": "0.9.1", "x-clip": "0.14.4", "coca-pytorch": "0.1.0", "pytorch-warmup": "0.2.0",
    "ema-pytorch": "0.8.3", "accelerate": "1.15.0",
}
INSTALL = ".venv/bin/pip install --no-deps " + " ".join(f"{k}=={v}" for k, v in PEER_PACKAGES.items())
TEXT_LEN = 24  # the tiny CLIP's context length
LR = RECIPES["tiny"].train.lr  # AdamW for both, no weight decay, as the tiny recipe


def import_peer():
    """dalle2_pytorch with the torchvision stand-in on sys.path, or the ImportError's message."""
    if str(STUBS) not in sys.path:
        sys.path.insert(0, str(STUBS))
    try:
        import dalle2_pytorch
        from dalle2_pytorch import dalle2_pytorch as peer_module
    except ImportError as e:
        return None, f"{type(e).__name__}: {e}"
    peer_module.tqdm = partial(peer_module.tqdm, disable=True)  # its samplers draw progress bars; no work is skipped
    return dalle2_pytorch, None


def versions() -> dict[str, str | None]:
    out = {"torch": torch.__version__}
    for name in PEER_PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def comparable(config) -> bool:
    """A decoder the peer can stand beside: conditioned on z_i and on CLIP token states (no caption encoder)."""
    return isinstance(config, DecoderConfig) and config.unet.clip_dim is not None and config.caption_encoder is None


def unclip_config(preset: str, *, model_channels: int | None = None, channels_last: bool = False) -> DecoderConfig:
    """The decoder of RECIPES[preset]: 32 px, z_i 64, token states 128, v-prediction, zero terminal SNR; with
    `model_channels`, at that base width instead, its heads as wide in proportion (the same number of heads); with
    `channels_last`, its convolutions in NHWC (`unclip train --channels-last`)."""
    config = RECIPES[preset].model
    config = config.with_(unet=config.unet.with_(channels_last=channels_last))
    if not comparable(config):
        raise SystemExit(f"--preset {preset!r} is not a decoder on z_i and CLIP token states")
    if model_channels is not None:
        unet = config.unet
        heads = unet.model_channels // unet.head_channels
        if model_channels < heads or model_channels % heads:
            raise SystemExit(f"--model-channels {model_channels}: must be a positive multiple of the preset's "
                             f"{heads} head(s) at the base width")
        config = config.with_(unet=unet.with_(model_channels=model_channels, head_channels=model_channels // heads))
    return config


def peer_unet_kwargs(dim: int, unet: UNetConfig) -> dict:
    """The peer's `Unet` as close to unclip's UNet as its options go: the same levels and channel multipliers (for
    `tiny`: 32, 16, 8 px at (1, 2, 3)), residual blocks per level, self-attention at the same resolutions (and its
    bottleneck, always), heads of unclip's width and unclip's count at the lowest resolution, context width 128, z_i
    added to the time embedding and read as 4 tokens, the 24 caption tokens (the default max_text_len of 256 would
    pad every caption with 232 null tokens)."""
    levels = [unet.image_size // 2 ** i for i in range(len(unet.channel_mult))]
    heads = unet.model_channels * unet.channel_mult[-1] // unet.head_channels
    return dict(dim=dim, image_embed_dim=64, text_embed_dim=128, cond_dim=128, num_image_tokens=4,
                cond_on_image_embeds=True, cond_on_text_encodings=True, max_text_len=TEXT_LEN,
                dim_mults=tuple(unet.channel_mult), channels=3,
                self_attn=tuple(size in unet.attention_resolutions for size in levels),
                attn_dim_head=unet.head_channels, attn_heads=heads, num_resnet_blocks=unet.num_res_blocks)


def match_peer_dim(dp, target: int, unet: UNetConfig) -> tuple[int, int]:
    """The peer's `dim` (a multiple of its 8 GroupNorm groups) whose parameter count is closest to `target`."""
    best = None
    for dim in range(8, 129, 8):
        n = n_params(dp.Unet(**peer_unet_kwargs(dim, unet)))
        if best is None or abs(n - target) < abs(best[1] - target):
            best = (dim, n)
        if n > target:
            break
    return best


def inputs(batch: int, seed: int) -> dict[str, torch.Tensor]:
    """Images in [-1, 1], unit z_i and token states with per-caption lengths 8..24 (padding rows zeroed, which is
    how the peer infers its text mask)."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(8, TEXT_LEN + 1, (batch,), generator=g)
    mask = torch.arange(TEXT_LEN)[None] < lengths[:, None]  # (B, T)
    states = torch.randn(batch, TEXT_LEN, 128, generator=g) * mask[..., None]  # (B, T, 128)
    z_i = torch.nn.functional.normalize(torch.randn(batch, 64, generator=g), dim=-1)
    return dict(images=torch.rand(batch, 3, 32, 32, generator=g) * 2 - 1, z_i=z_i, states=states, mask=mask)


class UnclipSide:
    name = "unclip"

    def __init__(self, *, config: DecoderConfig, batch: int, sample_batch: int, sample_steps: int):
        torch.manual_seed(0)
        self.model = Decoder(config)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=LR, weight_decay=0.0)
        self.x, self.s = inputs(batch, 1), inputs(sample_batch, 2)
        self.generator = torch.Generator().manual_seed(0)
        self.sample_steps = sample_steps
        self.params = n_params(self.model.net)

    def loss(self) -> torch.Tensor:
        return self.model.loss(images=self.x["images"], image_embedding=self.x["z_i"], text_states=self.x["states"],
                               text_mask=self.x["mask"], generator=self.generator)

    def train_step(self) -> float:
        self.model.train()
        self.opt.zero_grad(set_to_none=True)
        loss = self.loss()
        loss.backward()
        self.opt.step()
        return loss.item()

    def sample(self) -> torch.Tensor:
        self.model.eval()
        return self.model.sample(image_embedding=self.s["z_i"], text_states=self.s["states"], text_mask=self.s["mask"],
                                 steps=self.sample_steps, sampler="ddim", generator=torch.Generator().manual_seed(0))


def peer_decoder(dp, *, config: DecoderConfig, dim: int, sample_steps: int):
    """The peer's `Decoder` around its `Unet` of width `dim` (peer_unet_kwargs): fixed variance and v-prediction as
    unclip's tiny decoder, z_i dropped 10% and the caption 50% of the time, images already in [-1, 1]; its DDIM path
    runs when sample_timesteps < timesteps, with exactly sample_timesteps network evaluations."""
    unet = dp.Unet(**peer_unet_kwargs(dim, config.unet))
    return dp.Decoder(unet=unet, image_sizes=(32,), timesteps=1000, learned_variance=False, predict_v=True,
                      beta_schedule="cosine", auto_normalize_img=False, sample_timesteps=sample_steps,
                      image_cond_drop_prob=0.1, text_cond_drop_prob=0.5)


class PeerSide:
    name = "dalle2-pytorch"

    def __init__(self, dp, *, config: DecoderConfig, dim: int, batch: int, sample_batch: int, sample_steps: int):
        torch.manual_seed(0)
        self.model = peer_decoder(dp, config=config, dim=dim, sample_steps=sample_steps)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=LR, weight_decay=0.0)
        self.x, self.s = inputs(batch, 1), inputs(sample_batch, 2)
        self.params = n_params(self.model.unets[0])

    def loss(self) -> torch.Tensor:
        return self.model(self.x["images"], image_embed=self.x["z_i"], text_encodings=self.x["states"])

    def train_step(self) -> float:
        self.model.train()
        self.opt.zero_grad(set_to_none=True)
        loss = self.loss()
        loss.backward()
        self.opt.step()
        return loss.item()

    def sample(self) -> torch.Tensor:
        return self.model.sample(image_embed=self.s["z_i"], text_encodings=self.s["states"], cond_scale=1.0)


def forward_gflops_per_image(side) -> float:
    """Floating-point operations of one training forward (noising + network + loss) per image, in GFLOP, as torch's
    FlopCounterMode counts them (matmuls, convolutions, attention; 2 per multiply-add). Parameters say what a
    model stores, this says what it computes: the two can differ by 2-3x between these UNets at equal counts."""
    side.model.train()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        side.loss()
    return counter.get_total_flops() / len(side.x["images"]) / 1e9


def build(which: str, args, dp=None, dim: int | None = None):
    sizes = dict(config=unclip_config(args.preset, model_channels=args.model_channels,
                                      channels_last=args.channels_last), batch=args.batch,
                 sample_batch=args.sample_batch, sample_steps=args.sample_steps)
    return UnclipSide(**sizes) if which == "unclip" else PeerSide(dp, dim=dim, **sizes)


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def peak_rss_mib() -> float:
    """This process's peak resident set size. Linux's ru_maxrss carries the parent's peak across fork + exec, so a
    child of a large benchmark process would report the parent's; VmHWM is the current address space's own."""
    try:
        status = Path("/proc/self/status").read_text()
        return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:"))) / 1024  # kB
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def child_memory(args) -> None:
    """In a fresh process: build one model, sample once, train two steps; print peak RSS after each as JSON."""
    dp = import_peer()[0] if args.child_memory == "peer" else None
    side = build(args.child_memory, args, dp, args.peer_dim)
    built = peak_rss_mib()
    side.sample()
    sampled = peak_rss_mib()
    for _ in range(2):
        side.train_step()
    print(json.dumps({"built_mib": built, "sample_peak_mib": sampled, "train_peak_mib": peak_rss_mib()}))


def measure_memory(which: str, args, dim: int | None) -> dict:
    cmd = [sys.executable, __file__, "--child-memory", which, "--preset", args.preset, "--threads", str(args.threads),
           "--batch", str(args.batch), "--sample-batch", str(args.sample_batch),
           "--sample-steps", str(args.sample_steps)]
    if args.model_channels is not None:
        cmd += ["--model-channels", str(args.model_channels)]
    if args.channels_last:
        cmd += ["--channels-last"]
    if dim is not None:
        cmd += ["--peer-dim", str(dim)]
    env = os.environ | {"OMP_NUM_THREADS": str(args.threads)}
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def skip(reason: str, *, benchmark: str = "decoder_peer") -> None:
    print(f"dalle2-pytorch is not importable ({reason}); install the peer into this venv with\n    {INSTALL}")
    print(json.dumps({"benchmark": benchmark, "skipped": reason, "install": INSTALL}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--preset", default="tiny",
                        choices=[name for name, r in RECIPES.items() if comparable(r.model)],
                        help="unclip decoder recipe to compare (default: tiny; shapes-tiny ships tiny-16-rb1)")
    parser.add_argument("--model-channels", type=int,
                        help="unclip's base width instead of the preset's (heads widened with it), to match a peer "
                             "that cannot be made as small: 24 at tiny-16-rb1 gives 1.40M parameters against the "
                             "1.39M of the peer's smallest Unet (dim 8)")
    parser.add_argument("--channels-last", action="store_true",
                        help="unclip's UNet with its convolutions in NHWC (`unclip train --channels-last`); the peer "
                        "runs as its own code does")
    parser.add_argument("--batch", type=int, default=32, help="training batch (default: 32, RECIPES['tiny'])")
    parser.add_argument("--steps", type=int, default=10, help="timed training steps per model (default: 10)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed training steps per model first (default: 2)")
    parser.add_argument("--sample-batch", type=int, default=8, help="images per timed sampling batch (default: 8)")
    parser.add_argument("--sample-steps", type=int, default=25, help="DDIM network evaluations (default: 25)")
    parser.add_argument("--sample-reps", type=int, default=2, help="timed sampling batches per model (default: 2)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "decoder_peer.json"))
    parser.add_argument("--child-memory", choices=("unclip", "peer"), help=argparse.SUPPRESS)
    parser.add_argument("--peer-dim", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.child_memory:
        return child_memory(args)
    dp, error = import_peer()
    if dp is None:
        return skip(error)

    ours = build("unclip", args)
    config = ours.model.config
    dim, peer_count = match_peer_dim(dp, ours.params, config.unet)
    peer = build("peer", args, dp, dim)
    assert peer.params == peer_count
    print(f"parameters (UNet): unclip {ours.params:,} | dalle2-pytorch {peer.params:,} (dim={dim}, "
          f"{peer.params / ours.params - 1:+.1%})")
    load = os.getloadavg()[0]
    sides = (ours, peer)
    for _ in range(args.warmup):
        for side in sides:
            side.train_step()
    train = {side.name: [] for side in sides}
    for _ in range(args.steps):
        for side in sides:
            train[side.name].append(timed(side.train_step))
    for side in sides:
        side.sample()  # warm-up
    sample = {side.name: [] for side in sides}
    for _ in range(args.sample_reps):
        for side in sides:
            sample[side.name].append(timed(side.sample))
    load = max(load, os.getloadavg()[0])
    memory = {"unclip": measure_memory("unclip", args, None), "dalle2-pytorch": measure_memory("peer", args, dim)}

    rows = []
    for side in sides:
        step, batch_s = statistics.median(train[side.name]), statistics.median(sample[side.name])
        rows.append({"model": side.name, "params": side.params, "batch": args.batch, "samples_per_s": args.batch / step,
                     "s_per_step": step, "train_step_times_s": train[side.name],
                     "sample_s_per_image": batch_s / args.sample_batch, "sample_batch_times_s": sample[side.name],
                     "forward_gflops_per_image": forward_gflops_per_image(side), **memory[side.name]})
    ratio = rows[0]["samples_per_s"] / rows[1]["samples_per_s"]
    sample_ratio = rows[1]["sample_s_per_image"] / rows[0]["sample_s_per_image"]
    # Each round ran both models back to back, so a round's ratio sees the same background load on both sides.
    paired = statistics.median(p / u for u, p in zip(train["unclip"], train["dalle2-pytorch"]))
    print(f"{'model':<16}{'params':>10}{'GFLOP/img':>11}{'batch':>7}{'samples/s':>11}{'s/step':>8}{'train RSS':>11}"
          f"{'sample s/img':>14}{'sample RSS':>12}")
    for r in rows:
        print(f"{r['model']:<16}{r['params'] / 1e6:>9.2f}M{r['forward_gflops_per_image']:>11.3f}{r['batch']:>7}"
              f"{r['samples_per_s']:>11.1f}{r['s_per_step']:>8.2f}{r['train_peak_mib']:>8.0f}MiB"
              f"{r['sample_s_per_image']:>14.3f}{r['sample_peak_mib']:>9.0f}MiB")
    flop_ratio = rows[0]["forward_gflops_per_image"] / rows[1]["forward_gflops_per_image"]
    print(f"unclip / dalle2-pytorch speed: training {ratio:.2f}x (median of per-round ratios {paired:.2f}x), "
          f"sampling {sample_ratio:.2f}x; goal training >= 1.5x: {'met' if ratio >= 1.5 else 'NOT met'}")
    print(f"unclip computes {flop_ratio:.2f}x the peer's FLOPs per training image, so per FLOP it trains "
          f"{ratio * flop_ratio:.2f}x as fast")
    note = (f"{args.threads} threads on a {os.cpu_count()}-core CPU shared with other work (1-minute load average up "
            f"to {load:.1f} during the run): absolute numbers are depressed, the interleaved ratio is what counts")
    if args.threads > 1 and load > os.cpu_count():
        note += ("; the CPU was oversubscribed, where a multi-threaded step stalls whenever one of its threads is "
                 "descheduled: --threads 1 gives steadier numbers then")
    print(note)
    report = {
        "benchmark": "decoder_peer", "device": "cpu", "threads": torch.get_num_threads(), "note": note,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}", "load_average": load,
        "versions": versions(), "batch": args.batch, "steps": args.steps, "warmup": args.warmup,
        "sample": {"batch": args.sample_batch, "steps": args.sample_steps, "reps": args.sample_reps,
                   "sampler": "DDIM eta 0, guidance scale 1 (one network evaluation per step) for both"},
        "peer_code_path": "dalle2_pytorch.Decoder(unet=Unet(...), image_sizes=(32,)).forward -> loss; "
                          ".sample(image_embed, text_encodings) -> p_sample_loop_ddim",
        "preset": args.preset, "model_channels": config.unet.model_channels, "unclip_config": config.to_dict(),
        "peer_unet_kwargs": peer_unet_kwargs(dim, config.unet),
        "memory_note": "peak RSS (VmHWM) of a fresh process per model (imports + model + one sampling batch, then two "
                       "training steps); *_peak_mib includes the Python and library import footprint, built_mib is "
                       "the peak right after building the model",
        "rows": rows, "train_ratio": ratio, "train_ratio_paired_median": paired, "sample_speed_ratio": sample_ratio,
        "forward_flop_ratio": flop_ratio, "train_ratio_per_flop": ratio * flop_ratio,
        "goal_train_ratio": 1.5,
        "goal_met": ratio >= 1.5,
    }
    write_report(args.out, report)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
