"""Worker of tests/test_shrink_ddp.py: ``python -m torch.distributed.run --nproc_per_node=2 shrink_worker.py OUT``.

Each rank wraps the same small CNN in DistributedDataParallel (gloo, CPU), attaches Chase with
``shrink=True`` and trains on its own random data; after a step that narrowed the model the
model is wrapped in DDP again (its buckets hold the old widths), as the reference trainer does.
After every step the ranks all-gather their widths, masks and weights and compare them bit for
bit. Rank 0 writes ``OUT/shrink_results.json``: ``{"world_size", "records": [{"step", "shrunk",
"parameters", "widths_identical", "masks_identical", "weights_identical"}, ...]}``.
Nothing runs on import (pytest collects this file for doctests).
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from pathlib import Path


def _identical(local, world_size: int) -> bool:
    import torch
    import torch.distributed as dist

    sizes = [torch.zeros(1, dtype=torch.long) for _ in range(world_size)]
    dist.all_gather(sizes, torch.tensor([local.numel()]))
    if any(int(s) != local.numel() for s in sizes):
        return False
    gathered = [torch.empty_like(local) for _ in range(world_size)]
    dist.all_gather(gathered, local)
    return all(torch.equal(gathered[0], g) for g in gathered[1:])


def run(rank: int, world_size: int) -> list[dict]:
    import torch
    from torch import nn
    from torch.nn.parallel import DistributedDataParallel

    import sparsetrain
    from ddp_worker import _flat
    from sparsetrain.train.loop import just_shrunk

    torch.manual_seed(rank)  # DDP broadcasts rank 0's weights at construction
    model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                          nn.Conv2d(16, 24, 3, padding=1), nn.BatchNorm2d(24), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(24, 5))
    net = DistributedDataParallel(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    g = torch.Generator().manual_seed(99)
    example = torch.randn(2, 3, 8, 8, generator=g)  # the same on every rank
    sp = sparsetrain.attach(net, opt, "chase", total_steps=16, seed=3, example_input=example, shrink=True,
                            density=0.5, channel_sparsity=0.5, channel_every=3, channel_offset=0, end=0.8,
                            min_ratio=0.2, update_every=2)
    data = torch.Generator().manual_seed(1000 + rank)  # every rank sees different data
    records = []
    for t in range(16):
        x, y = torch.randn(4, 3, 8, 8, generator=data), torch.randint(0, 5, (4,), generator=data)
        opt.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
        shrunk = just_shrunk(sp)
        if shrunk:
            net = DistributedDataParallel(model)
        widths = torch.tensor([w for p in model.parameters() for w in p.shape], dtype=torch.long)
        records.append({
            "step": t + 1, "shrunk": shrunk, "parameters": sum(p.numel() for p in model.parameters()),
            "widths_identical": _identical(widths, world_size),
            "masks_identical": _identical(_flat([sp.masks[n] for n in sorted(sp.masks)], torch.uint8), world_size),
            "weights_identical": _identical(_flat(list(model.parameters()), torch.float64), world_size)})
    return records


def main(out_dir: str) -> int:
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    try:
        result = {"world_size": dist.get_world_size(), "records": run(dist.get_rank(), dist.get_world_size())}
    except Exception:  # a non-zero exit: torch.distributed.run then stops the other rank
        print(f"rank {dist.get_rank()}:\n{traceback.format_exc()}", file=sys.stderr, flush=True)
        raise
    if dist.get_rank() == 0:
        Path(out_dir, "shrink_results.json").write_text(json.dumps(result))
    dist.barrier()  # no rank tears gloo down while another still talks to it
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    code = main(sys.argv[1])
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # as tests/ddp_worker.py: skip a teardown that sometimes aborts under gloo
