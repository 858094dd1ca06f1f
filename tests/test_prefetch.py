"""The trainer's background batch thread: same batches in the same order, errors surface, nothing changes."""

import threading
import time

import pytest
import torch

from unclip.train import TrainConfig, Trainer
from unclip.train.prefetch import Prefetcher


def test_items_come_in_order_and_the_thread_runs_ahead():
    produced = []

    def numbers():
        for k in range(10):
            produced.append(k)
            yield k

    with Prefetcher(numbers(), depth=2) as it:
        assert next(it) == 0
        deadline = time.monotonic() + 5
        while len(produced) < 3 and time.monotonic() < deadline:  # 0 taken, 1 and 2 queued ahead
            time.sleep(0.01)
        assert produced == [0, 1, 2]
        assert list(it) == list(range(1, 10))
    with pytest.raises(StopIteration):
        next(it)


def test_an_error_in_the_thread_is_raised_where_its_item_was_due():
    def failing():
        yield 1
        yield 2
        raise KeyError("scene 3 is broken")

    it = Prefetcher(failing())
    assert next(it) == 1 and next(it) == 2
    with pytest.raises(KeyError, match="scene 3 is broken"):
        next(it)
    it.close()


def test_close_stops_an_endless_producer_and_bad_depth_is_refused():
    def endless():
        k = 0
        while True:
            yield k
            k += 1

    it = Prefetcher(endless(), depth=1)
    assert next(it) == 0
    it.close()
    assert not any(t.name == "unclip-prefetch" and t.is_alive() for t in threading.enumerate())
    with pytest.raises(ValueError, match="depth must be at least 1, got 0"):
        Prefetcher([], depth=0)


class _Noisy(torch.utils.data.Dataset):
    def __len__(self):
        return 40

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(i)
        return torch.randn(4, generator=g), torch.randn(1, generator=g)


def _fit(run_dir, prefetch):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Dropout(0.3), torch.nn.Linear(8, 1))

    def loss(m, batch, generator):
        x, y = batch
        return {"loss": ((m(x) - y) ** 2).mean()}

    config = TrainConfig(steps=7, batch_size=6, lr=0.05, warmup_steps=1, checkpoint_every=3, log_every=1)
    trainer = Trainer(model=model, loss_fn=loss, dataset=_Noisy(), config=config, run_dir=run_dir,
                      model_config={"kind": "mlp"}, progress=False, prefetch=prefetch)
    trainer.fit()
    return trainer.module.state_dict()


def test_training_with_and_without_prefetch_ends_with_identical_weights(tmp_path):
    plain, ahead = _fit(tmp_path / "plain", 0), _fit(tmp_path / "ahead", 2)
    assert all(torch.equal(plain[k], ahead[k]) for k in plain)
    with pytest.raises(ValueError, match="prefetch must be >= 0 batches, got -1"):
        _fit(tmp_path / "bad", -1)
