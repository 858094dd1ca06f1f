"""A tiny diffusion training run on the Shapes world, run as a subprocess by tests/test_train.py.

    python tests/train_job.py RUN_DIR MAX_STEPS [--kill-at STEP | --kill-in-save N]

--kill-at STEP kills the process (SIGKILL) right after optimizer step STEP; --kill-in-save N kills it
in the middle of writing its N-th checkpoint, after the files are written and before the rename.
"""

import argparse
import os
import signal

import torch
from torch import nn

from unclip.diffusion import DiffusionConfig, GaussianDiffusion
from unclip.nn import timestep_embedding
from unclip.train import TrainConfig, Trainer
from unclip.train import checkpoint as checkpoint_module
from unclip.world import ShapesDataset, collate


class TinyDenoiser(nn.Module):
    def __init__(self, width: int = 16):
        super().__init__()
        self.inp = nn.Conv2d(3, width, 3, padding=1)
        self.time = nn.Linear(32, width)
        self.mid = nn.Conv2d(width, width, 3, padding=1)
        self.out = nn.Conv2d(width, 3, 3, padding=1)
        self.drop = nn.Dropout(0.1)  # uses the global torch RNG, which checkpoints must restore too

    def forward(self, x, t):
        h = torch.nn.functional.silu(self.inp(x) + self.time(timestep_embedding(t, 32))[:, :, None, None])
        return self.out(torch.nn.functional.silu(self.drop(self.mid(h))))


def build(run_dir):
    torch.manual_seed(0)
    diffusion = GaussianDiffusion(DiffusionConfig(prediction="v", zero_terminal_snr=True))

    def loss_fn(model, batch, generator):
        images = batch[0]
        t = diffusion.sample_timesteps(len(images), generator=generator)
        noise = torch.randn(images.shape, generator=generator)
        return {"loss": diffusion.training_losses(model, images, t, noise)["loss"].mean()}

    config = TrainConfig(steps=12, batch_size=4, grad_accum=2, lr=1e-3, warmup_steps=3, checkpoint_every=4,
                         log_every=1, ema_decay=0.9, keep_checkpoints=2)
    return Trainer(model=TinyDenoiser(), loss_fn=loss_fn, dataset=ShapesDataset("train", size=16, length=100_000),
                   collate_fn=collate, config=config, run_dir=run_dir, model_config={"kind": "tiny", "width": 16},
                   progress=False)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("run_dir")
    parser.add_argument("max_steps", type=int)
    parser.add_argument("--kill-at", type=int)
    parser.add_argument("--kill-in-save", type=int)
    args = parser.parse_args()
    torch.set_num_threads(1)
    trainer = build(args.run_dir)
    if args.kill_at is not None:
        loss_fn = trainer.loss_fn

        def killing_loss_fn(model, batch, generator):  # step STEP is done when step STEP + 1 asks for its loss
            if trainer.step == args.kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
            return loss_fn(model, batch, generator)

        trainer.loss_fn = killing_loss_fn
    if args.kill_in_save is not None:
        saves, real_rename = [0], os.rename

        def rename(src, dst):
            saves[0] += 1
            if saves[0] == args.kill_in_save:
                os.kill(os.getpid(), signal.SIGKILL)
            real_rename(src, dst)

        checkpoint_module.os.rename = rename
    trainer.fit(args.max_steps)
    print(f"done at step {trainer.step}")


if __name__ == "__main__":
    main()
