"""torchrun / DDP plumbing shared by the training entrypoints."""

from __future__ import annotations

import os

import torch


def setup_distributed(device_spec: str | None):
    """(rank, world, local_rank, Device); initialises torch.distributed from the torchrun env."""
    from soundsight.device import resolve_device

    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if world > 1:
        import torch.distributed as dist

        if torch.cuda.is_available() and (device_spec in (None, "auto") or str(device_spec).startswith("cuda")):
            device_spec = f"cuda:{local}"
            torch.cuda.set_device(local)
            backend = "nccl"
        else:
            backend = "gloo"
        dist.init_process_group(backend=backend)
    return rank, world, local, resolve_device(device_spec)


def cleanup_distributed(world: int) -> None:
    if world > 1:
        import torch.distributed as dist

        dist.barrier()
        dist.destroy_process_group()


def unwrap(m):
    return m.module if hasattr(m, "module") else m


def is_main(rank: int) -> bool:
    return rank == 0
