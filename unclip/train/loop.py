"""One training loop for every stage: AdamW, warm-up + cosine, clipping, accumulation, EMA, NaN guard,
exact resume from safetensors checkpoints, a progress bar and a metrics.jsonl log.

A stage gives the trainer a model, a map-style dataset whose items are pure functions of their index,
and `loss_fn(model, batch, generator) -> {"loss": scalar, ...}` that draws all its randomness (noise,
timesteps, dropout masks) from `generator`. Then the trainer's state after step N is a function of
(config, N) alone: rerunning the same command on the same run directory resumes from the last complete
checkpoint and ends bit-identical to an uninterrupted run.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from ..atomic import write_text_atomically
from ..data.sampler import ResumableBatchSampler
from . import distributed, lock
from .checkpoint import (
    latest_checkpoint, load_checkpoint, load_model_tensors, model_tensors, optimizer_from_tensors,
    optimizer_to_tensors, save_checkpoint,
)
from .ema import EMA
from .lr import lr_at
from .prefetch import Prefetcher

LossFn = Callable[[torch.nn.Module, Any, torch.Generator], dict[str, torch.Tensor]]
Hook = Callable[["Trainer"], None]


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 1000  # length of the LR schedule (a run may stop earlier with max_steps and resume later)
    batch_size: int = 32  # per rank and micro-batch
    grad_accum: int = 1  # micro-batches per optimizer step
    lr: float = 3e-4
    min_lr_ratio: float = 0.1  # cosine decays to lr * min_lr_ratio
    warmup_steps: int = 100
    weight_decay: float = 0.0  # applied to matrices and convolution kernels only, never to biases or norms
    betas: tuple[float, float] = (0.9, 0.999)
    grad_clip: float | None = 1.0
    ema_decay: float | None = 0.999
    # Warm the EMA up: decay min(ema_decay, (1 + n) / (10 + n)) at update n, so the average forgets the random
    # initialisation in a short run (with 0.999 and no warm-up, 37% of the weights are still the init after
    # 1,000 steps, and samples from them are noise).
    ema_warmup: bool = False
    seed: int = 0
    shuffle: bool = False  # the Shapes world needs none: each index is already a fresh scene
    num_workers: int = 0
    precision: str = "fp32"  # "fp32" | "bf16" (autocast, CUDA only: bf16 is ~100x slower on the CPUs here)
    log_every: int = 10
    checkpoint_every: int = 200
    keep_checkpoints: int = 3
    hook_every: int = 0  # call the stage's hooks (sample grids) every N steps; 0: only at the end
    max_bad_steps: int = 5  # the NaN guard stops the run after this many non-finite steps in a row

    def __post_init__(self):
        for name in ("steps", "batch_size", "grad_accum", "log_every", "checkpoint_every", "keep_checkpoints",
                     "max_bad_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.precision not in ("fp32", "bf16"):
            raise ValueError(f"precision must be 'fp32' or 'bf16', got {self.precision!r}")
        if self.ema_decay is not None and not 0 <= self.ema_decay < 1:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        # Each of these would train without an error and wrongly: a negative clip norm flips the gradient's sign
        # (clip_grad_norm_ scales by max_norm / norm), a negative hook_every runs the hooks every step, a NaN lr ...
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be a finite number > 0, got {self.lr}")
        if not 0 <= self.min_lr_ratio <= 1:
            raise ValueError(f"min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        if self.grad_clip is not None and not (math.isfinite(self.grad_clip) and self.grad_clip > 0):
            raise ValueError(f"grad_clip must be a finite number > 0 or None (no clipping), got {self.grad_clip}")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise ValueError(f"weight_decay must be a finite number >= 0, got {self.weight_decay}")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"betas must be two numbers in [0, 1), got {self.betas}")
        for name in ("warmup_steps", "num_workers", "hook_every"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")

    def to_dict(self) -> dict:
        return asdict(self) | {"betas": list(self.betas)}

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        if set(data) - known:
            raise ValueError(f"unknown TrainConfig keys: {sorted(set(data) - known)}")
        return cls(**(data | ({"betas": tuple(data["betas"])} if "betas" in data else {})))


# TrainConfig fields that change what a run logs, keeps or draws, never the weights it trains: a resumed run may set
# them anew (checkpoint more often in a second sitting, say); the rest must match.
BOOKKEEPING = ("log_every", "checkpoint_every", "keep_checkpoints", "hook_every", "max_bad_steps")


def differing_fields(part: str, mine: dict, theirs: dict) -> list[str]:
    """The fields in which a run's stored `part` config ("model" or "train") and this sitting's differ; for "train",
    the BOOKKEEPING fields are left out (how often to log, save or draw grids may change between sittings)."""
    if part == "train":
        mine, theirs = ({k: v for k, v in d.items() if k not in BOOKKEEPING} for d in (mine, theirs))
    return sorted(k for k in set(theirs) | set(mine) if theirs.get(k) != mine.get(k))


def _other_config(run_dir: Path, part: str, diff: list[str]) -> ValueError:
    return ValueError(f"{run_dir} was started with another {part} config (differs in {diff}); resume with the same "
                      "settings or use a new run directory")


def refuse_other_train_config(run_dir: str | os.PathLike, config: TrainConfig) -> None:
    """Raise the Trainer's error now if RUN_DIR was begun with another training config. Each stage calls it before it
    loads a CLIP or embeds a prior's pairs, so a resumed run given other `--set` values fails at once instead of
    after minutes of loading; the Trainer checks again, the model config too."""
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        return
    stored = json.loads(path.read_text()).get("train")
    if stored is not None and (diff := differing_fields("train", config.to_dict(),
                                                        TrainConfig.from_dict(stored).to_dict())):
        raise _other_config(Path(run_dir), "train", diff)


class NonFiniteLossError(FloatingPointError):
    pass


def _rng_tensors(generator: torch.Generator) -> dict[str, torch.Tensor]:
    out = {"torch_cpu": torch.get_rng_state(), "generator": generator.get_state()}
    if torch.cuda.is_available():
        out |= {f"torch_cuda_{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())}
    return out


def _restore_rng(rng: dict[str, torch.Tensor], generator: torch.Generator) -> None:
    torch.set_rng_state(rng["torch_cpu"])
    generator.set_state(rng["generator"])
    cuda = [rng[k] for k in sorted(rng) if k.startswith("torch_cuda_")]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)


def _json_safe(value):
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.integer):
        return int(value)
    return value


class Trainer:
    def __init__(
        self, *, model: torch.nn.Module, loss_fn: LossFn, dataset: Dataset, config: TrainConfig,
        run_dir: str | os.PathLike, model_config: dict, collate_fn: Callable | None = None,
        hooks: Sequence[Hook] = (), device: str | torch.device = "cpu",
        dist_ctx: distributed.DistContext | None = None, progress: bool = True, prefetch: int = 1,
        read_model_config: Callable[[dict], dict] | None = None,
    ):
        """`prefetch`: with `num_workers` 0, how many batches a background thread prepares ahead (0: none). It
        changes what a run computes in no way (items are pure functions of their index), only how long it takes.
        `read_model_config`: how a run directory's stored `model_config` reads with today's code (fields added since
        the run began filled in with their defaults), so that resuming compares like with like."""
        self._locked = False  # whether this trainer holds its run directory's lock (lock.py); __del__ reads it
        self.config, self.device = config, torch.device(device)
        if config.precision == "bf16" and self.device.type != "cuda":
            raise ValueError("precision 'bf16' is for CUDA; on CPU train in fp32 (bf16 is ~100x slower here)")
        self.dist = dist_ctx or distributed.current()
        self.rank, self.world = self.dist.rank, self.dist.world
        self.module = model.to(self.device)  # the bare model: checkpoints, EMA and sampling use it
        self.model = distributed.wrap(self.module, self.dist, self.device)  # what the loss runs through
        self.loss_fn, self.dataset, self.collate_fn, self.hooks = loss_fn, dataset, collate_fn, list(hooks)
        self.run_dir, self.progress = Path(run_dir), progress
        if prefetch < 0:
            raise ValueError(f"prefetch must be >= 0 batches, got {prefetch}")
        self.prefetch = prefetch
        self.model_config, self.read_model_config = model_config, read_model_config
        decay = [p for p in self.module.parameters() if p.requires_grad and p.ndim >= 2]
        no_decay = [p for p in self.module.parameters() if p.requires_grad and p.ndim < 2]
        self.optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=config.lr, betas=config.betas,
        )
        self.ema = EMA(self.module, config.ema_decay) if config.ema_decay is not None else None
        self.generator = torch.Generator(self.device).manual_seed(config.seed * 1009 + self.rank)
        torch.manual_seed(config.seed * 1009 + self.rank)
        self.step, self.bad_streak, self.skipped = 0, 0, 0
        self.unreadable = 0  # data items the dataset could not read (collate functions count them as "skipped")
        self.last_metrics: dict[str, float] = {}
        self.resumed_from: Path | None = None
        self._setup_run_dir()

    # ----- run directory, config and resume -------------------------------------------------------------
    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def checkpoint_root(self) -> Path:
        return self.run_dir / "checkpoints"

    def _setup_run_dir(self) -> None:
        record = {"model": self.model_config, "train": self.config.to_dict()}
        path = self.run_dir / "config.json"
        if not path.is_file() and self.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            write_text_atomically(path, json.dumps(record, indent=1))
        distributed.barrier(self.dist)
        if path.is_file():
            stored = json.loads(path.read_text())
            if "train" in stored:  # fields added since the run began read as their defaults
                stored["train"] = TrainConfig.from_dict(stored["train"]).to_dict()
            if "model" in stored and self.read_model_config is not None:
                stored["model"] = self.read_model_config(stored["model"])
            for part in ("model", "train"):
                if diff := differing_fields(part, record[part], stored.get(part, {})):
                    raise _other_config(self.run_dir, part, diff)
        self._hold_lock()  # before the resume below cuts the metrics log back to the checkpoint
        latest = latest_checkpoint(self.checkpoint_root)
        if latest is not None:
            self._restore(latest)

    def _hold_lock(self) -> None:
        """The run directory's lock (lock.py), held by rank 0 from construction to the end of fit."""
        if self.is_main and not self._locked:
            lock.acquire(self.run_dir)
            self._locked = True

    def _drop_lock(self) -> None:
        if self._locked:
            self._locked = False
            lock.release(self.run_dir)

    def __del__(self):
        self._drop_lock()

    def _restore(self, path: Path) -> None:
        files, state = load_checkpoint(path)
        load_model_tensors(self.module, {k: v.to(self.device) for k, v in files["model"].items()}, source=str(path))
        if self.ema is not None:
            if "ema" not in files:
                raise ValueError(f"{path} holds no EMA weights but the config keeps them")
            self.ema.load_state_dict({k: v.to(self.device) for k, v in files["ema"].items()})
        optimizer_from_tensors(self.optimizer, files["optimizer"], state["optimizer"])
        prefix = f"rank{self.rank}."
        mine = {k[len(prefix):]: v for k, v in files["rng"].items() if k.startswith(prefix)}
        if not mine:
            raise ValueError(f"{path} holds no RNG state for rank {self.rank}: it was saved by a run with fewer ranks")
        _restore_rng(mine, self.generator)
        random.setstate(_tuplify(state["python_random"]))
        np.random.set_state(tuple(state["numpy_random"]))
        self.step, self.bad_streak, self.skipped = state["step"], state["bad_streak"], state["skipped"]
        self.unreadable = state.get("unreadable_items", 0)
        self.resumed_from = path
        self._truncate_log()

    def _truncate_log(self) -> None:
        """Drop log lines written after the checkpoint we resume from (they will be written again)."""
        log = self.run_dir / "metrics.jsonl"
        if not (self.is_main and log.is_file()):
            return
        keep = [line for line in log.read_text().splitlines() if line and json.loads(line).get("step", 0) <= self.step]
        log.write_text("".join(line + "\n" for line in keep))

    def save(self) -> Path | None:
        """Write a checkpoint (a collective call under DDP: every rank's RNG state goes into it)."""
        every_rng = distributed.gather_objects(self.dist, _rng_tensors(self.generator))
        if not self.is_main:
            distributed.barrier(self.dist)
            return None
        opt_tensors, opt_meta = optimizer_to_tensors(self.optimizer)
        rng = {f"rank{r}.{k}": v for r, states in enumerate(every_rng) for k, v in states.items()}
        files = {"model": model_tensors(self.module), "optimizer": opt_tensors, "rng": rng}
        if self.ema is not None:
            files["ema"] = model_tensors(self.ema.shadow)
        state = {
            "step": self.step, "bad_streak": self.bad_streak, "skipped": self.skipped,
            "unreadable_items": self.unreadable,
            "micro_batches_seen": self.step * self.config.grad_accum, "optimizer": opt_meta,
            "python_random": _json_safe(random.getstate()), "numpy_random": _json_safe(np.random.get_state()),
            "config": {"model": self.model_config, "train": self.config.to_dict()},
        }
        path = save_checkpoint(self.checkpoint_root, self.step, files=files, state=state,
                               keep=self.config.keep_checkpoints)
        distributed.barrier(self.dist)
        return path

    # ----- the loop ---------------------------------------------------------------------------------------
    def _loader(self, num_steps: int) -> DataLoader:
        cfg = self.config
        sampler = ResumableBatchSampler(len(self.dataset), batch_size=cfg.batch_size,
                                        start_batch=self.step * cfg.grad_accum, num_batches=num_steps * cfg.grad_accum,
                                        shuffle=cfg.shuffle, seed=cfg.seed, rank=self.rank, world=self.world)
        # The loader draws a base seed for its workers when it starts iterating: from its own generator,
        # never from the global RNG, whose state (dropout) must not depend on where a run resumed.
        return DataLoader(self.dataset, batch_sampler=sampler, collate_fn=self.collate_fn,
                          num_workers=cfg.num_workers, generator=torch.Generator().manual_seed(cfg.seed))

    def _to_device(self, batch):
        if torch.is_tensor(batch):
            return batch.to(self.device, non_blocking=True)
        if isinstance(batch, (list, tuple)):
            return type(batch)(self._to_device(b) for b in batch)
        if isinstance(batch, dict):
            return {k: self._to_device(v) for k, v in batch.items()}
        return batch

    def _log(self, record: dict) -> None:
        if self.is_main:
            with open(self.run_dir / "metrics.jsonl", "a") as f:
                f.write(json.dumps(record) + "\n")

    def fit(self, max_steps: int | None = None, *, max_seconds: float | None = None) -> dict[str, float]:
        """Train until optimizer step `max_steps` (default: config.steps), or with `max_seconds` until the first step
        that ends that long after training began, whichever comes first; either way the run ends checkpointed, so a
        later fit resumes it (the learning-rate schedule is config.steps long regardless). Returns the last logged
        metrics."""
        if max_seconds is not None and not max_seconds > 0:
            raise ValueError(f"max_seconds must be > 0, got {max_seconds}")
        self._hold_lock()
        try:
            return self._fit(max_steps, None if max_seconds is None else time.monotonic() + max_seconds)
        finally:
            self._drop_lock()

    def _fit(self, max_steps: int | None, deadline: float | None = None) -> dict[str, float]:
        cfg = self.config
        target = cfg.steps if max_steps is None else max_steps
        if target <= self.step:
            return self.last_metrics
        bar = tqdm(total=target, initial=self.step, desc="training", unit="step", disable=not (self.progress
                                                                                            and self.is_main))
        loader = self._loader(target - self.step)
        with (Prefetcher(loader, depth=self.prefetch) if self.prefetch and not self.config.num_workers
              else contextlib.nullcontext(iter(loader))) as batches:  # the thread stops however the loop ends
            return self._steps(target, batches, bar, deadline)

    def _out_of_time(self, deadline: float | None) -> bool:
        """Whether `deadline` (time.monotonic) has passed; under DDP, on any rank, so that all stop at one step."""
        if deadline is None:
            return False
        late = time.monotonic() >= deadline
        if self.dist.enabled:
            flag = torch.tensor([1.0 if late else 0.0], device=self.device)
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
            late = bool(flag.item() > 0)
        return late

    def _steps(self, target: int, batches, bar, deadline: float | None = None) -> dict[str, float]:
        cfg = self.config
        params = [p for p in self.module.parameters() if p.requires_grad]
        window_start, window_samples, sums, counted = time.perf_counter(), 0, {}, 0
        while self.step < target:
            lr = lr_at(self.step, base_lr=cfg.lr, warmup_steps=cfg.warmup_steps, total_steps=cfg.steps,
                       min_ratio=cfg.min_lr_ratio)
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            finite, micro_metrics = True, {}
            for micro in range(cfg.grad_accum):
                batch = self._to_device(next(batches))
                if isinstance(batch, dict):
                    self.unreadable += int(batch.get("skipped", 0))
                # Under DDP, gradients are all-reduced on the last micro-batch only.
                sync = contextlib.nullcontext() if micro == cfg.grad_accum - 1 or not self.dist.enabled \
                    else self.model.no_sync()
                with sync:
                    with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=cfg.precision == "bf16"):
                        out = self.loss_fn(self.model, batch, self.generator)
                    loss = out["loss"]
                    finite = finite and bool(torch.isfinite(loss))
                    # Backward even on a non-finite loss: every DDP rank must join the same all-reduce.
                    (loss / cfg.grad_accum).backward()
                for k, v in out.items():
                    micro_metrics[k] = micro_metrics.get(k, 0.0) + float(v.detach()) / cfg.grad_accum
            grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip or math.inf)
            if self.dist.enabled:  # one verdict for all ranks
                flag = torch.tensor([0.0 if finite else 1.0], device=self.device)
                torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
                finite = bool(flag.item() == 0)
            if finite and torch.isfinite(grad_norm):
                self.optimizer.step()
                if self.ema is not None:
                    self.ema.update(self.module, step=self.step if cfg.ema_warmup else None)
                self.bad_streak = 0
            else:
                self.bad_streak += 1
                self.skipped += 1
                self._log({"step": self.step + 1, "skipped": True, "reason": "non-finite loss or gradient"})
                if self.bad_streak >= cfg.max_bad_steps:
                    bar.close()
                    raise NonFiniteLossError(f"{self.bad_streak} non-finite steps in a row up to step {self.step + 1}"
                                             f" (lr {lr:.3g}); stopping. The last complete checkpoint is intact.")
            self.optimizer.zero_grad(set_to_none=True)
            self.step += 1
            window_samples += cfg.batch_size * cfg.grad_accum * self.world
            if micro_metrics and finite:
                counted += 1
                for k, v in micro_metrics.items():
                    sums[k] = sums.get(k, 0.0) + v
            bar.update(1)
            # every rank asks (it all-reduces); the window so far is logged before a stop, not lost
            stop = self.step < target and self._out_of_time(deadline)
            if self.step % cfg.log_every == 0 or self.step == target or stop:
                elapsed = time.perf_counter() - window_start
                self.last_metrics = {k: v / max(counted, 1) for k, v in sums.items()} | {
                    "lr": lr, "grad_norm": float(grad_norm), "samples_per_s": window_samples / max(elapsed, 1e-9),
                    "unreadable_items": self.unreadable}
                self._log({"step": self.step} | self.last_metrics)
                bar.set_postfix(loss=f"{self.last_metrics.get('loss', float('nan')):.4f}",
                                sps=f"{self.last_metrics['samples_per_s']:.0f}")
                window_start, window_samples, sums, counted = time.perf_counter(), 0, {}, 0
            if cfg.hook_every and self.step % cfg.hook_every == 0 and self.is_main:
                for hook in self.hooks:
                    hook(self)
            if self.step % cfg.checkpoint_every == 0:
                self.save()
            if stop:
                self._log({"step": self.step, "stopped": "time limit (max_seconds)"})
                if self.is_main:
                    bar.write(f"stopped at step {self.step} of {target}: the time limit; checkpointed, so the same "
                              "command without the limit resumes it")
                break
        bar.close()
        if self.step % cfg.checkpoint_every:
            self.save()
        if self.is_main:
            if not (cfg.hook_every and self.step % cfg.hook_every == 0):  # not already called at this step
                for hook in self.hooks:
                    hook(self)
        return self.last_metrics


def _tuplify(value):
    return tuple(_tuplify(v) for v in value) if isinstance(value, list) else value
