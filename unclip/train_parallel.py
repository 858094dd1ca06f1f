"""`unclip train all --jobs 2`: the decoder's runs in one process, the priors and upsamplers in another.

    main process     CLIP (all threads) ─┬─> waits, one progress bar per lane ─> the pipeline directory
    lane "decoder"   (threads // 2)      ├─> decoder [guide] -> decoder-ft -> ...
    lane "priors"    (threads // 2)      └─> prior -> ar-prior -> upsampler(s)

On a 2-core CPU two 1-thread trainings side by side get more done than one 2-thread training (small ops do not
split well across threads), and these two lanes share nothing but the CLIP. Each lane runs the same functions as
`jobs=1` (train_all.prior_lane / decoder_lane) in a process of its own (spawned: a fresh interpreter, safe with
torch's thread pools), without its own progress bar; the main process draws one bar per lane from the steps each
run has logged (RUN/metrics.jsonl). When a lane fails the other is stopped and the error names the lane; every stage
is its own resumable run, so the same command continues.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import time
from collections.abc import Callable
from pathlib import Path

from tqdm import tqdm

LANES = ("decoder", "priors")
POLL_SECONDS = 2.0


def _lane_main(lane: str, preset_name: str, run_dir: str, clip_dir: str, device: str, threads: int,
               setup: Callable[[], None] | None) -> None:
    """A lane's process: `threads` torch threads, the training allocator settings, `setup`, its stages in order."""
    import torch

    from .train.malloc import keep_freed_memory
    from .train_all import PRESETS, decoder_lane, prior_lane

    torch.set_num_threads(threads)
    keep_freed_memory()
    if setup is not None:
        setup()
    preset, run = PRESETS[preset_name], Path(run_dir)
    lane_fn = decoder_lane if lane == "decoder" else prior_lane
    lane_fn(preset, run, Path(clip_dir), device=device, progress=False, log=lambda text: print(text, flush=True))


def lane_runs(preset, run_dir: Path) -> dict[str, list[tuple[Path, int]]]:
    """Each lane's runs in order with the step each trains to (what its progress bar counts)."""
    from .decoder.train import RECIPES as DECODER_RECIPES
    from .prior.train import RECIPES as PRIOR_RECIPES
    from .train_all import decoder_runs, prior_runs, upsampler_runs

    decoder = [(sub, DECODER_RECIPES[name].train.steps) for sub, name in decoder_runs(preset, run_dir)]
    if preset.decoder_steps is not None:  # the first run stops early (its schedule keeps the recipe's length)
        decoder[0] = (decoder[0][0], preset.decoder_steps)
    priors = [(sub, PRIOR_RECIPES[kind][name].train.steps) for kind, (sub, name) in prior_runs(preset, run_dir).items()]
    priors += [(sub, DECODER_RECIPES[name].train.steps) for sub, name in upsampler_runs(preset, run_dir)]
    return {"decoder": decoder, "priors": priors}


def logged_step(run: Path) -> int:
    """The last step a run has logged in RUN/metrics.jsonl (0 before its first line)."""
    log = run / "metrics.jsonl"
    if not log.is_file():
        return 0
    lines = [line for line in log.read_text().splitlines() if line.strip()]
    try:
        return int(json.loads(lines[-1]).get("step", 0)) if lines else 0
    except (json.JSONDecodeError, ValueError):  # a line being written as we read
        return 0


def run_lanes(*, preset_name: str, run_dir: Path, clip_dir: Path, device: str, threads: int, progress: bool,
              log, setup: Callable[[], None] | None = None) -> None:
    """Run both lanes to the end in two processes of `threads` threads each; raise if either fails.

    `setup`, a module-level function, runs first in each lane's process: a spawned process starts from a fresh
    interpreter, so presets or recipes added at run time (PRESETS[...] = ...) must be added there again."""
    from .train_all import PRESETS

    runs = lane_runs(PRESETS[preset_name], run_dir)
    log(f"[2-5/5] two lanes of {threads} thread{'s' if threads > 1 else ''} each: the decoder "
        f"({', '.join(r.name for r, _ in runs['decoder'])}) beside {', '.join(r.name for r, _ in runs['priors'])}")
    ctx = mp.get_context("spawn")
    procs = {lane: ctx.Process(target=_lane_main, name=f"unclip-{lane}", args=(lane, preset_name, str(run_dir),
                                                                               str(clip_dir), device, threads, setup))
             for lane in LANES}
    bars = {lane: tqdm(total=sum(steps for _, steps in runs[lane]), initial=_done(runs[lane]), desc=f"{lane:>7}",
                       unit="step", position=i, disable=not progress, dynamic_ncols=True)
            for i, lane in enumerate(LANES)}  # a resumed run's bar starts where it stopped
    for proc in procs.values():
        proc.start()
    interrupted, failed, stopped = True, {}, []  # until the loop below ends by itself (not by Ctrl-C or an error)
    try:
        while any(proc.is_alive() for proc in procs.values()) and not _failed(procs):
            _update(bars, runs)
            time.sleep(POLL_SECONDS)
        interrupted = False
    finally:
        failed = _failed(procs)  # before stopping the other lane, which would read as failed too
        if interrupted or failed:  # stop what still runs; each stage resumes from its last checkpoint
            stopped = [lane for lane, proc in procs.items() if proc.is_alive()]
            for lane in stopped:
                procs[lane].terminate()
        for proc in procs.values():
            proc.join()
        _update(bars, runs)
        for bar in bars.values():
            bar.close()
    if failed:
        what = ", ".join(f"the {lane} lane (exit code {code})" for lane, code in failed.items())
        other = f"; the {' and '.join(stopped)} lane was stopped" if stopped else ""
        raise RuntimeError(f"train all --jobs 2: {what} failed, its traceback is above{other}. Rerun the same "
                           f"command to resume every stage in {run_dir}")


def _failed(procs: dict[str, mp.Process]) -> dict[str, int]:
    return {lane: proc.exitcode for lane, proc in procs.items() if proc.exitcode not in (None, 0)}


def _done(runs: list[tuple[Path, int]]) -> int:
    return sum(min(logged_step(run), steps) for run, steps in runs)


def _update(bars: dict[str, tqdm], runs: dict[str, list[tuple[Path, int]]]) -> None:
    for lane, bar in bars.items():
        bar.n = _done(runs[lane])
        bar.refresh()
