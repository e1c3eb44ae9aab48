"""Worker of tests/test_ddp.py: ``python -m torch.distributed.run --nproc_per_node=2 ddp_worker.py OUT_DIR``.

Each rank wraps the same small model in DistributedDataParallel (gloo, CPU),
attaches every method variant of ``_kit.all_variants()``, and trains on its
own random data. After every topology update (and after the last step) the
ranks all-gather their masks and weights and compare them bit for bit
(contract 6). Rank 0 writes ``OUT_DIR/ddp_results.json``:
``{variant id: [{"step", "masks_identical", "weights_identical", "zeros_ok", "active", "event"}, ...]}``.
Nothing runs on import (pytest collects this file for doctests).
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from pathlib import Path


def _flat(tensors, dtype):
    import torch

    return torch.cat([t.detach().reshape(-1).to(dtype) for t in tensors])


def _identical(local, world_size: int) -> bool:
    import torch
    import torch.distributed as dist

    gathered = [torch.empty_like(local) for _ in range(world_size)]
    dist.all_gather(gathered, local)
    return all(torch.equal(gathered[0], g) for g in gathered[1:])


def run_variant(variant, rank: int, world_size: int) -> list[dict]:
    import torch
    from torch.nn.parallel import DistributedDataParallel

    import sparsetrain
    from _kit import TOTAL_STEPS, ModelSpec, batch, build_model, count, train_step

    spec = ModelSpec("mlp", (24, 16), bias=True, in_features=12)
    model = build_model(spec, seed=rank)  # DDP broadcasts rank 0's weights at construction
    ddp = DistributedDataParallel(model)
    opt = torch.optim.SGD(ddp.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    sp = sparsetrain.attach(ddp, opt, variant.method, total_steps=TOTAL_STEPS, seed=11,
                            **variant.method_kwargs(0.25))
    params = {n: model.get_parameter(n) for n in sp.masks}
    records = []
    for t in range(TOTAL_STEPS):
        n_hist = len(sp.history)
        x, y = batch(spec, t, seed=1000 + rank)  # every rank sees different data
        train_step(ddp, opt, x, y)
        updated = len(sp.history) > n_hist
        if not (updated or t == 0 or t == TOTAL_STEPS - 1):
            continue
        names = sorted(sp.masks)
        masks_ok = _identical(_flat([sp.masks[n] for n in names], torch.uint8), world_size)
        weights_ok = _identical(_flat(list(model.parameters()), torch.float64), world_size)
        zeros_ok = all(count(params[n].detach()[~sp.masks[n]]) == 0 for n in names)
        event = {k: v for k, v in sp.history[-1].items() if isinstance(v, (int, float, str))} if updated else None
        records.append({"step": t + 1, "masks_identical": masks_ok, "weights_identical": weights_ok,
                        "zeros_ok": zeros_ok, "active": sum(count(m) for m in sp.masks.values()), "event": event})
    sp.detach()
    return records


def main(out_dir: str) -> int:
    import torch
    import torch.distributed as dist

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _kit import all_variants

    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    rank, world_size = dist.get_rank(), dist.get_world_size()
    results: dict[str, object] = {"world_size": world_size}
    for variant in all_variants():
        try:
            results[variant.id] = run_variant(variant, rank, world_size)
        except Exception:
            # exit non-zero: torch.distributed.run then stops the other rank, the test shows this
            print(f"rank {rank}, variant {variant.id}:\n{traceback.format_exc()}", file=sys.stderr, flush=True)
            raise
    if rank == 0:
        Path(out_dir, "ddp_results.json").write_text(json.dumps(results, indent=1))
    dist.barrier()  # no rank tears gloo down while another still talks to it
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    code = main(sys.argv[1])
    sys.stdout.flush()
    sys.stderr.flush()
    # Skip interpreter teardown: with torch 2.13 (CPU, gloo) about 1 exit in 10 aborts there with
    # "terminate called without an active exception" even in a plain DDP script without sparsetrain.
    os._exit(code)
