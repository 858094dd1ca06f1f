"""Data-parallel training: the same Trainer under `torchrun --nproc_per_node N` (NCCL on GPUs, gloo on CPU).

Each rank reads a disjoint shard of one global batch order (data/sampler.py), gradients are averaged by
DistributedDataParallel, and only rank 0 writes files. The model is wrapped here and nowhere else, so a
later FSDP2 (`fully_shard`) path replaces `wrap` alone.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world > 1


def init_from_env() -> DistContext:
    """Join the process group torchrun describes (RANK, WORLD_SIZE, LOCAL_RANK); a plain run is rank 0 of 1."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return DistContext()
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(local)
    if not dist.is_initialized():
        dist.init_process_group(backend, rank=rank, world_size=world)
    return DistContext(rank=rank, world=world, local_rank=local)


def current() -> DistContext:
    """The context of an already initialised process group (rank 0 of 1 when there is none)."""
    if not (dist.is_available() and dist.is_initialized()):
        return DistContext()
    return DistContext(rank=dist.get_rank(), world=dist.get_world_size(),
                       local_rank=int(os.environ.get("LOCAL_RANK", "0")))


def wrap(model: torch.nn.Module, ctx: DistContext, device: torch.device) -> torch.nn.Module:
    if not ctx.enabled:
        return model
    device_ids = [device.index] if device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=device_ids)


def barrier(ctx: DistContext) -> None:
    if ctx.enabled:
        dist.barrier()


def gather_objects(ctx: DistContext, obj) -> list:
    """Every rank's `obj`, in rank order (in memory only; nothing is unpickled from files)."""
    if not ctx.enabled:
        return [obj]
    out = [None] * ctx.world
    dist.all_gather_object(out, obj)
    return out
