"""torchrun / DistributedDataParallel plumbing for the trainer (gloo on CPU, nccl on GPU)."""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch import nn


def pick_device(name: str = "auto", local_rank: int = 0) -> torch.device:
    """``auto`` -> this rank's CUDA device if there is one, else CPU."""
    if name == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    return torch.device(name)


def setup(device: str = "auto") -> tuple[int, int, torch.device]:
    """Join the process group when launched by torchrun; returns (world size, rank, device)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = pick_device(device, local_rank)
    if world > 1 and not dist.is_initialized():
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    rank = dist.get_rank() if dist.is_initialized() else 0
    return world, rank, dev


def wrap(model: nn.Module, device: torch.device) -> nn.Module:
    """DDP-wrap ``model`` when distributed (the sparsifier keeps the unwrapped names)."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return model
    return nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def all_reduce_sum(values: list[float]) -> list[float]:
    """Sum numbers over ranks (identity when not distributed): whole-data epoch metrics."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return values
    t = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(t)
    return t.tolist()


def barrier() -> None:
    """Wait for every rank (no-op when not distributed)."""
    if dist.is_initialized():
        dist.barrier()


def teardown() -> None:
    """Leave the process group."""
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
