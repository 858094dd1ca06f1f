"""Two gloo processes on the CPU: ranks agree, and equal one process with the same global batch."""

import socket
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from unclip.train import TrainConfig, Trainer
from unclip.train.distributed import DistContext
from unclip.train.checkpoint import latest_checkpoint, read_tensors


class _Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.body = torch.nn.Sequential(torch.nn.Linear(3, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))

    def forward(self, x):
        return self.body(x)


class _Points(torch.utils.data.Dataset):
    def __len__(self):
        return 256

    def __getitem__(self, i):
        x = torch.randn(3, generator=torch.Generator().manual_seed(i))
        return x, torch.sin(x.sum(0, keepdim=True))


def _loss(model, batch, generator):
    x, y = batch
    return {"loss": ((model(x) - y) ** 2).mean()}


def _config(batch_size):
    return TrainConfig(steps=5, batch_size=batch_size, lr=0.05, warmup_steps=1, ema_decay=0.9, checkpoint_every=5,
                       shuffle=True, seed=7)


def _worker(rank, world, port, run_dir, out, boxed=False):
    """One rank's run; `boxed`: rank 0 is out of time after its first step, rank 1 has an hour (out gets the step)."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world, init_method=f"tcp://127.0.0.1:{port}")
    try:
        trainer = Trainer(model=_Net(), loss_fn=_loss, dataset=_Points(), config=_config(4), run_dir=run_dir,
                          model_config={"kind": "net"}, dist_ctx=DistContext(rank=rank, world=world),
                          progress=False)
        if boxed:
            trainer.fit(max_seconds=1e-9 if rank == 0 else 3600)
            out[rank] = trainer.step
        else:
            trainer.fit()
            out[rank] = {k: v.clone() for k, v in trainer.module.state_dict().items()}
    finally:
        dist.destroy_process_group()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_gloo_ranks_agree_and_match_one_process(tmp_path):
    out = mp.Manager().dict()
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path / "ddp"), out), nprocs=2, join=True)
    single = Trainer(model=_Net(), loss_fn=_loss, dataset=_Points(), config=_config(8), run_dir=tmp_path / "one",
                     model_config={"kind": "net"}, progress=False)
    single.fit()
    for key, value in single.module.state_dict().items():
        assert torch.equal(out[0][key], out[1][key])  # DDP keeps the ranks in lock-step
        assert torch.allclose(out[0][key], value, atol=1e-6)  # and equals one process with the global batch
    saved = read_tensors(latest_checkpoint(tmp_path / "ddp" / "checkpoints") / "rng.safetensors")
    assert {k.split(".")[0] for k in saved} == {"rank0", "rank1"}  # only rank 0 wrote, with both ranks' RNG


def test_a_time_limit_reached_on_one_rank_stops_every_rank_at_the_same_step(tmp_path):
    out = mp.Manager().dict()
    context = mp.start_processes(_worker, args=(2, _free_port(), str(tmp_path / "ddp"), out, True), nprocs=2,
                                 join=False)
    deadline = time.monotonic() + 120  # a rank left waiting in a collective would hang here, not pass
    finished = False
    while not finished and time.monotonic() < deadline:
        finished = context.join(timeout=5)  # True once every process has exited (it raises if one failed)
    if not finished:
        for process in context.processes:
            process.terminate()
    assert finished and dict(out) == {0: 1, 1: 1}
    assert latest_checkpoint(tmp_path / "ddp" / "checkpoints").name == "step-00000001"
