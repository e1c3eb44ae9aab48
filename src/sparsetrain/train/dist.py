"""torchrun / DistributedDataParallel plumbing for the trainer (gloo on CPU, nccl on GPU)."""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch import nn

from sparsetrain.errors import SparsetrainError


def available_devices() -> list[str]:
    """The devices torch can use here, e.g. ``['cpu', 'cuda:0']``."""
    found = ["cpu"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    mps = getattr(torch.backends, "mps", None)
    return found + (["mps"] if mps is not None and mps.is_available() else [])


def pick_device(name: str = "auto", local_rank: int = 0) -> torch.device:
    """``auto`` -> this rank's CUDA device if there is one, else CPU; a device that is not here is one clear error.

    Example:
        >>> pick_device("cpu")
        device(type='cpu')
    """
    if name == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    try:
        dev = torch.device(name)
    except (RuntimeError, TypeError):
        raise SparsetrainError(f"device {name!r} is not a torch device name; use auto, cpu, cuda or cuda:N "
                               f"(here: {', '.join(available_devices())}).") from None
    missing = (dev.type == "cuda" and (not torch.cuda.is_available()
                                       or (dev.index or 0) >= torch.cuda.device_count())) or (
        dev.type == "mps" and "mps" not in available_devices())
    if missing:
        raise SparsetrainError(f"device {name!r} is not available on this machine (available: "
                               f"{', '.join(available_devices())}); use --device auto to take the best one here.")
    return dev


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
