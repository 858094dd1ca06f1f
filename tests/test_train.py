"""The training engine: checkpoints, exact resume (also after kill -9), NaN guard, accumulation, EMA, schedule."""

import json
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from unclip.data import ResumableBatchSampler
from unclip.train import EMA, NonFiniteLossError, TrainConfig, Trainer, lr_at, read_tensors
from unclip.train.checkpoint import latest_checkpoint, list_checkpoints, save_checkpoint

JOB = Path(__file__).with_name("train_job.py")


def _run_job(run_dir, max_steps, *extra):
    return subprocess.run([sys.executable, str(JOB), str(run_dir), str(max_steps), *extra], capture_output=True,
                          text=True, timeout=300)


def _final_weights(run_dir):
    return read_tensors(latest_checkpoint(Path(run_dir) / "checkpoints") / "model.safetensors")


def _same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    run = tmp_path_factory.mktemp("full")
    assert _run_job(run, 12).returncode == 0
    return run


def test_split_run_equals_one_run(uninterrupted, tmp_path):
    assert _run_job(tmp_path, 5).returncode == 0  # stops between checkpoints (saves at its end)
    assert _run_job(tmp_path, 12).returncode == 0
    assert _same(_final_weights(tmp_path), _final_weights(uninterrupted))
    full = [json.loads(x) for x in (uninterrupted / "metrics.jsonl").read_text().splitlines()]
    split = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["loss"] for r in split] == [r["loss"] for r in full]  # the same batches, noise and dropout


def test_kill_9_between_checkpoints_then_resume_is_bit_identical(uninterrupted, tmp_path):
    killed = _run_job(tmp_path, 12, "--kill-at", "6")
    assert killed.returncode == -9 and [s for s, _ in list_checkpoints(tmp_path / "checkpoints")] == [4]
    assert _run_job(tmp_path, 12).returncode == 0
    assert _same(_final_weights(tmp_path), _final_weights(uninterrupted))
    ema = read_tensors(latest_checkpoint(tmp_path / "checkpoints") / "ema.safetensors")
    assert _same(ema, read_tensors(latest_checkpoint(uninterrupted / "checkpoints") / "ema.safetensors"))


def test_kill_9_during_a_save_leaves_the_previous_checkpoint(uninterrupted, tmp_path):
    killed = _run_job(tmp_path, 12, "--kill-in-save", "2")  # dies writing step 8, after step 4 was saved
    assert killed.returncode == -9
    assert [s for s, _ in list_checkpoints(tmp_path / "checkpoints")] == [4]
    assert list((tmp_path / "checkpoints").glob(".tmp-step-00000008-*"))  # the half-written one is ignored
    assert _run_job(tmp_path, 12).returncode == 0
    assert _same(_final_weights(tmp_path), _final_weights(uninterrupted))
    assert not list((tmp_path / "checkpoints").glob(".tmp-*"))  # and cleaned up by the next save


class _Linear(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.lin = torch.nn.Linear(3, 1)

    def forward(self, x):
        return self.lin(x)


class _Points(torch.utils.data.Dataset):
    def __len__(self):
        return 64

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(i)
        x = torch.randn(3, generator=g)
        return x, x.sum(0, keepdim=True) * 2 + 1


def _mse(model, batch, generator):
    x, y = batch
    return {"loss": ((model(x) - y) ** 2).mean()}


def _trainer(run_dir, loss_fn=_mse, **overrides):
    config = TrainConfig(**({"steps": 6, "batch_size": 8, "lr": 0.05, "warmup_steps": 1, "ema_decay": 0.5,
                             "checkpoint_every": 3, "log_every": 1} | overrides))
    return Trainer(model=_Linear(), loss_fn=loss_fn, dataset=_Points(), config=config, run_dir=run_dir,
                   model_config={"kind": "linear"}, progress=False)


def test_checkpoint_round_trip_restores_everything(tmp_path):
    a = _trainer(tmp_path / "a")
    a.fit(3)
    b = _trainer(tmp_path / "a")  # resumes from step 3
    assert b.step == 3 and b.resumed_from is not None
    assert _same(a.model.state_dict(), b.model.state_dict())
    assert _same(a.ema.state_dict(), b.ema.state_dict())
    sa, sb = a.optimizer.state_dict(), b.optimizer.state_dict()
    assert all(_same(sa["state"][i], sb["state"][i]) for i in sa["state"])
    assert torch.equal(a.generator.get_state(), b.generator.get_state())
    # every file of a checkpoint has the mode its state.json has (safetensors alone would write 0600)
    (checkpoint,) = [p for p in (tmp_path / "a" / "checkpoints").iterdir() if p.name.startswith("step-")]
    modes = {path.name: stat.S_IMODE(path.stat().st_mode) for path in checkpoint.iterdir()}
    assert set(modes.values()) == {modes["state.json"]}, modes


def test_write_tensors_replaces_a_file_whole_or_not_at_all(tmp_path, monkeypatch):
    import unclip.train.checkpoint as checkpoint

    path = tmp_path / "model.safetensors"
    checkpoint.write_tensors(path, {"w": torch.ones(3)})
    before = path.read_bytes()

    def crash_half_way(tensors, filename):  # a write that dies after putting bytes on disk
        Path(filename).write_bytes(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint, "save_file", crash_half_way)
    with pytest.raises(OSError, match="disk full"):
        checkpoint.write_tensors(path, {"w": torch.zeros(3)})
    assert path.read_bytes() == before  # the old file, untouched
    assert [p.name for p in tmp_path.iterdir()] == ["model.safetensors"]  # and no temporary left beside it
    monkeypatch.undo()
    checkpoint.write_tensors(path, {"w": torch.full((3,), 2.0)})
    assert torch.equal(read_tensors(path)["w"], torch.full((3,), 2.0))


def test_gradient_accumulation_equals_a_bigger_batch(tmp_path):
    big = _trainer(tmp_path / "big", batch_size=8, grad_accum=1)
    small = _trainer(tmp_path / "small", batch_size=4, grad_accum=2)
    big.fit(4)
    small.fit(4)
    for k, v in big.model.state_dict().items():
        assert torch.allclose(v, small.model.state_dict()[k], atol=1e-6)


def test_nan_guard_skips_and_then_stops(tmp_path):
    calls = {"n": 0}

    def flaky(model, batch, generator):
        calls["n"] += 1
        out = _mse(model, batch, generator)
        return {"loss": out["loss"] * float("nan")} if calls["n"] in (2, 3) else out

    trainer = _trainer(tmp_path / "flaky", loss_fn=flaky)
    trainer.fit(6)
    assert trainer.skipped == 2 and trainer.step == 6
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())
    log = [json.loads(x) for x in (tmp_path / "flaky" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if r.get("skipped")] == [2, 3]

    always = _trainer(tmp_path / "always", loss_fn=lambda m, b, g: {"loss": _mse(m, b, g)["loss"] * float("inf")},
                      max_bad_steps=3)
    with pytest.raises(NonFiniteLossError, match="3 non-finite steps in a row"):
        always.fit(6)


def test_a_time_limit_stops_checkpointed_and_the_run_resumes_to_what_one_run_gives(tmp_path):
    whole = _trainer(tmp_path / "whole")
    whole.fit()
    boxed = _trainer(tmp_path / "boxed", log_every=5)
    boxed.fit(max_seconds=1e-9)  # out of time after the first step
    assert boxed.step == 1 and [s for s, _ in list_checkpoints(tmp_path / "boxed" / "checkpoints")] == [1]
    log = [json.loads(x) for x in (tmp_path / "boxed" / "metrics.jsonl").read_text().splitlines()]
    assert log[-1] == {"step": 1, "stopped": "time limit (max_seconds)"}
    assert log[-2]["step"] == 1 and "loss" in log[-2]  # the step before the stop is logged, off the log_every beat
    resumed = _trainer(tmp_path / "boxed")  # with log_every 1: bookkeeping may change between sittings
    resumed.fit(max_seconds=3600)  # time to spare: the schedule ends first
    assert resumed.step == 6 and _same(resumed.model.state_dict(), whole.model.state_dict())
    with pytest.raises(ValueError, match="max_seconds must be > 0, got 0"):
        resumed.fit(max_seconds=0)


def test_resuming_with_another_config_is_refused(tmp_path):
    _trainer(tmp_path / "run").fit(2)
    with pytest.raises(ValueError, match=r"another train config .*lr"):
        _trainer(tmp_path / "run", lr=0.1)


def test_lr_schedule_warms_up_then_decays():
    lrs = [lr_at(s, base_lr=1.0, warmup_steps=4, total_steps=20, min_ratio=0.1) for s in range(25)]
    assert lrs[:4] == [0.25, 0.5, 0.75, 1.0]
    assert all(a >= b for a, b in zip(lrs[3:], lrs[4:])) and lrs[19] == pytest.approx(0.1, abs=0.01)
    assert lrs[24] == pytest.approx(0.1)


def test_ema_follows_the_weights():
    model = torch.nn.Linear(2, 2)
    ema = EMA(model, decay=0.75)
    start = model.weight.detach().clone()
    with torch.no_grad():
        model.weight.add_(4.0)
    ema.update(model)
    assert torch.allclose(ema.shadow.weight, start + 1.0)
    with pytest.raises(ValueError, match="decay"):
        EMA(model, decay=1.0)


def test_ema_warm_up_forgets_the_initialisation():
    model = torch.nn.Linear(2, 2)
    ema = EMA(model, decay=0.999)
    with torch.no_grad():
        model.weight.add_(1.0)
    target = model.weight.detach().clone()
    ema.update(model, step=0)  # decay min(0.999, 1/10): the shadow moves 90% of the way at once
    assert torch.allclose(ema.shadow.weight, target - 0.1, atol=1e-6)
    for step in range(1, 1000):
        ema.update(model, step=step)
    assert torch.allclose(ema.shadow.weight, target, atol=1e-3)  # without warm-up: 37% of the gap would be left


def test_runs_started_before_a_new_config_field_still_resume(tmp_path):
    """A run directory whose config.json predates a TrainConfig field reads the field as its default."""
    import json

    from unclip.train.loop import TrainConfig as TC

    cfg = TC(steps=2, batch_size=2, checkpoint_every=1, log_every=1, ema_decay=None)
    record = cfg.to_dict()
    del record["ema_warmup"]
    (tmp_path / "config.json").write_text(json.dumps({"model": {"kind": "toy"}, "train": record}))
    Trainer(model=torch.nn.Linear(2, 1), loss_fn=lambda m, b, g: {"loss": m(b).pow(2).mean()},
            dataset=torch.utils.data.TensorDataset(torch.randn(8, 2)), config=cfg, run_dir=tmp_path,
            model_config={"kind": "toy"}, progress=False)  # no "another train config" error


def test_pickles_and_truncated_files_are_refused(tmp_path):
    pickled = tmp_path / "weights.pt"
    torch.save({"w": torch.zeros(2)}, pickled)
    with pytest.raises(ValueError, match="pickle"):
        read_tensors(pickled)
    good = tmp_path / "w.safetensors"
    save_file({"w": torch.arange(1000.0)}, str(good))
    truncated = tmp_path / "t.safetensors"
    truncated.write_bytes(good.read_bytes()[:2000])
    with pytest.raises(ValueError, match="corrupt or truncated"):
        read_tensors(truncated)
    with pytest.raises(FileNotFoundError):
        read_tensors(tmp_path / "missing.safetensors")


def test_incomplete_checkpoints_are_ignored_and_old_ones_pruned(tmp_path):
    for step in (1, 2, 3, 4):
        save_checkpoint(tmp_path, step, files={"model": {"w": torch.ones(1) * step}}, state={}, keep=2)
    assert [s for s, _ in list_checkpoints(tmp_path)] == [3, 4]
    (tmp_path / "step-00000009").mkdir()  # no COMPLETE marker: a save that never finished
    assert latest_checkpoint(tmp_path).name == "step-00000004"


def test_sampler_shards_are_disjoint_and_positions_resumable():
    ranks = [ResumableBatchSampler(1000, batch_size=4, shuffle=True, seed=3, rank=r, world=2) for r in (0, 1)]
    seen = [i for r in ranks for k in range(5) for i in r.batch(k)]
    assert len(set(seen)) == len(seen) == 40
    later = ResumableBatchSampler(1000, batch_size=4, shuffle=True, seed=3, rank=1, world=2, start_batch=3,
                                  num_batches=2)
    assert list(later) == [ranks[1].batch(3), ranks[1].batch(4)]
    epoch = ResumableBatchSampler(8, batch_size=4, shuffle=True, seed=0)
    assert sorted(epoch.batch(0) + epoch.batch(1)) == list(range(8)) and epoch.batch(2) != epoch.batch(0)


class _SomeUnreadable(torch.utils.data.Dataset):
    def __len__(self):
        return 40

    def __getitem__(self, i):
        if i % 4 == 3:
            return None  # an unreadable image
        x = torch.randn(3, generator=torch.Generator().manual_seed(i))
        return {"image": x, "caption": str(i)}


def test_unreadable_items_are_counted_and_logged(tmp_path):
    from unclip.data import collate_image_caption

    def loss(model, batch, generator):
        return {"loss": (model(batch["image"]) ** 2).mean()}

    config = TrainConfig(steps=5, batch_size=8, lr=0.01, warmup_steps=1, ema_decay=None, log_every=5)
    trainer = Trainer(model=_Linear(), loss_fn=loss, dataset=_SomeUnreadable(), config=config, run_dir=tmp_path,
                      model_config={"kind": "linear"}, collate_fn=collate_image_caption, progress=False)
    trainer.fit()
    assert trainer.unreadable == 10  # 5 batches of 8 positions, a quarter unreadable
    log = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert log[-1]["unreadable_items"] == 10


def test_sample_grid_hook_writes_pngs_on_schedule(tmp_path):
    from PIL import Image

    from unclip.train.grids import sample_grid_hook

    seen = []

    def sample_fn(model, captions, generator):
        seen.append(model.training)
        value = int(torch.rand(1, generator=generator) * 255)  # the same seed every time
        return [Image.new("RGB", (16, 16), (value, 0, 0)) for _ in captions]

    config = TrainConfig(steps=5, batch_size=8, lr=0.01, warmup_steps=1, ema_decay=0.5, hook_every=2)
    trainer = Trainer(model=_Linear(), loss_fn=_mse, dataset=_Points(), config=config, run_dir=tmp_path,
                      model_config={"kind": "linear"}, progress=False,
                      hooks=[sample_grid_hook(sample_fn, ["a red circle", "a blue square"])])
    trainer.fit()
    names = sorted(p.name for p in (tmp_path / "samples").iterdir())
    assert names == ["step-00000002.png", "step-00000004.png", "step-00000005.png"]  # every 2 steps and the end
    assert seen == [False, False, False]  # sampled in eval mode
    assert Image.open(tmp_path / "samples" / names[0]).size[0] > 32


_HOLD = """
import sys, time
from unclip.train import lock
lock.acquire(sys.argv[1])
print("held", flush=True)
time.sleep(120)
"""


def test_a_second_process_cannot_train_in_a_live_run_directory(tmp_path):
    run = tmp_path / "run"
    _trainer(run).fit(2)
    log_before = (run / "metrics.jsonl").read_text()
    holder = subprocess.Popen([sys.executable, "-c", _HOLD, str(run)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(ValueError, match=rf"another process \(pid {holder.pid} on "):
            _trainer(run)
        assert (run / "metrics.jsonl").read_text() == log_before  # refused before the resume could cut the log
    finally:
        holder.kill()
        holder.wait()
    # the operating system dropped the dead holder's lock: no stale lock to clear by hand
    resumed = _trainer(run)
    resumed.fit(4)
    assert resumed.step == 4
    first, second = _trainer(run), _trainer(run)  # within one process the lock is re-entrant
    assert first.step == second.step == 4
