"""Worker of tests/test_fsdp.py: ``python -m torch.distributed.run --nproc_per_node=2 fsdp_worker.py OUT_DIR [IDS]``.

Each rank trains the same small model twice per method variant, once under
DistributedDataParallel and once under FSDP2 (``fully_shard`` on every layer
and on the model; gloo, CPU), on its own data, and records the full masks
after every topology update. It checks that the FSDP2 masks equal the DDP
ones after every update, that every rank holds the same full masks, that
inactive weights and their momentum are zero on every shard, and (for the
variants in ``RESUMED``) that a ``torch.distributed.checkpoint`` save in the
middle, loaded into a fresh model, optimizer and sparsifier, continues to
bit-identical masks and weights. Rank 0 writes ``OUT_DIR/fsdp_results.json``.
Nothing runs on import (pytest collects this file for doctests).
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from pathlib import Path

#: variants whose FSDP2 run is also checkpointed with DCP in the middle and resumed
RESUMED = ("rigl", "snfs", "granet")
SAVE_AT = 10
#: extra runs with an optimizer whose update moves a zero weight (the engine then re-masks weights and state)
OTHER_OPTIMIZER = {"rigl+rmsprop": ("rigl", "rmsprop")}
#: extra runs on Hugging Face Conv1D layers (weights [in, out], sharded along their input dim): the variant,
#: or for "prune[filter]" filter pruning, whose coupled biases follow the output units (dim 1)
CONV1D = {"rigl@conv1d": "rigl", "rigl[row-groups]@conv1d": "rigl[row-groups]", "prune[filter]@conv1d": None}


def _filter_prune():
    from _kit import GMP_END, UPDATE_EVERY, Variant

    return Variant("prune[filter]", "prune", "prune", lambda d: {
        "update_every": UPDATE_EVERY, "schedule": "agp", "end": GMP_END, "layer_type": "all", "granularity": "filter"})


def _spec(kind: str = "mlp"):
    from _kit import ModelSpec

    return ModelSpec(kind, (24, 16), bias=True, in_features=12)


def _model(mode: str, kind: str = "mlp"):
    """``(spec, model, what to train)``: the model plain, under DDP or sharded by FSDP2."""
    from torch.distributed.fsdp import fully_shard
    from torch.nn.parallel import DistributedDataParallel

    from _kit import build_model

    spec = _spec(kind)
    model = build_model(spec, seed=0)  # the same weights on every rank, before DDP or FSDP2 sees them
    if mode == "plain":
        return spec, model, model
    if mode == "ddp":
        return spec, model, DistributedDataParallel(model)
    for layer in model:
        if any(True for _ in layer.parameters()):  # Linear and Conv1D layers
            fully_shard(layer)
    fully_shard(model)
    return spec, model, model


def _full_masks(sp) -> dict:
    from sparsetrain import sharding

    return {n: sharding.full(m).clone() for n, m in sp.masks.items()}


def _same_on_ranks(t) -> bool:
    import torch
    import torch.distributed as dist

    gathered = [torch.empty_like(t) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, t)
    return all(torch.equal(gathered[0], g) for g in gathered[1:])


def _attach(variant, net, opt):
    import sparsetrain
    from _kit import TOTAL_STEPS

    return sparsetrain.attach(net, opt, variant.method, total_steps=TOTAL_STEPS, seed=11,
                              **variant.method_kwargs(0.25))


def _optimizer(net, kind: str = "sgd"):
    import torch

    if kind == "rmsprop":
        return torch.optim.RMSprop(net.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    return torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)


def _train(variant, mode: str, rank: int, ckpt: Path | None = None, optimizer: str = "sgd",
           kind: str = "mlp") -> dict:
    """Train ``variant`` under ``mode``; returns ``{"masks": {step: full masks}, "checks": [...], ...}``."""
    import torch

    from _kit import TOTAL_STEPS, batch, train_step
    from sparsetrain import sharding

    spec, model, net = _model(mode, kind)
    opt = _optimizer(net, optimizer)
    sp = _attach(variant, net, opt)
    masks = {0: _full_masks(sp)}
    checks = []
    for t in range(TOTAL_STEPS):
        n_hist = len(sp.history)
        x, y = batch(spec, t, seed=1000 + rank)
        train_step(net, opt, x, y)
        if ckpt is not None and t + 1 == SAVE_AT:
            _save(ckpt, model, opt, sp)
            masks["saved"] = _full_masks(sp)
        if len(sp.history) == n_hist and t != TOTAL_STEPS - 1:
            continue
        masks[t + 1] = _full_masks(sp)
        flat = torch.cat([m.reshape(-1) for m in masks[t + 1].values()]).to(torch.uint8)
        zeros = state_zeros = True
        for n, m in sp.masks.items():
            p = model.get_parameter(n)
            off = ~sharding.local(m)
            zeros &= not sharding.local(p.detach())[off].any().item()
            for v in opt.state.get(p, {}).values():
                if isinstance(v, torch.Tensor) and v.shape == p.shape:
                    state_zeros &= not sharding.local(v)[off].any().item()
        checks.append({"step": t + 1, "ranks_agree": _same_on_ranks(flat), "zeros": zeros,
                       "state_zeros": state_zeros})
    weights = {n: sharding.full(p.detach()).clone() for n, p in model.named_parameters()}
    return {"masks": masks, "checks": checks, "weights": weights, "history": len(sp.history),
            "density": sp.density(), "state": sp.state_dict() if mode == "ddp" else None}


def _save(path: Path, model, opt, sp) -> None:
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    model_sd, optim_sd = get_state_dict(model, opt)
    dcp.save({"model": model_sd, "optim": optim_sd, "sparsifier": sp.state_dict()}, checkpoint_id=str(path))


def _resume(variant, path: Path, rank: int) -> dict:
    """A fresh FSDP2 model, optimizer and sparsifier loaded from the DCP checkpoint, trained to the end."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    from _kit import TOTAL_STEPS, batch, train_step
    from sparsetrain import sharding

    spec, model, net = _model("fsdp2")
    opt = _optimizer(net)
    sp = _attach(variant, net, opt)
    model_sd, optim_sd = get_state_dict(model, opt)
    state = {"model": model_sd, "optim": optim_sd}
    dcp.load(state, checkpoint_id=str(path))
    set_state_dict(model, opt, model_state_dict=state["model"], optim_state_dict=state["optim"])
    sharding.load_checkpoint(sp, str(path), key="sparsifier")
    loaded_step = sp.step_count
    for t in range(SAVE_AT, TOTAL_STEPS):
        x, y = batch(spec, t, seed=1000 + rank)
        train_step(net, opt, x, y)
    weights = {n: sharding.full(p.detach()).clone() for n, p in model.named_parameters()}
    return {"masks": _full_masks(sp), "weights": weights, "loaded_step": loaded_step}


def _cross_load(variant, ddp_state: dict, ckpt: Path) -> dict:
    """A DDP sparsifier state into an FSDP2 sparsifier, and the FSDP2 DCP checkpoint into an unsharded one."""
    from sparsetrain import sharding

    _, _, net = _model("fsdp2")
    sharded = _attach(variant, net, _optimizer(net))
    sharded.load_state_dict(ddp_state)
    _, plain, _ = _model("plain")
    unsharded = _attach(variant, plain, _optimizer(plain))
    sharding.load_checkpoint(unsharded, str(ckpt))
    return {"ddp_into_fsdp2": _full_masks(sharded), "ddp_into_fsdp2_step": sharded.step_count,
            "dcp_into_plain": _full_masks(unsharded), "dcp_into_plain_step": unsharded.step_count}


def _equal(a: dict, b: dict) -> bool:
    import torch

    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def run_variant(variant, rank: int, ckpt_dir: Path, optimizer: str = "sgd", kind: str = "mlp") -> dict:
    import torch.distributed as dist

    ddp = _train(variant, "ddp", rank, optimizer=optimizer, kind=kind)
    ckpt = ckpt_dir / variant.id if variant.id in RESUMED and optimizer == "sgd" and kind == "mlp" else None
    fsdp = _train(variant, "fsdp2", rank, ckpt, optimizer=optimizer, kind=kind)
    steps = sorted(s for s in ddp["masks"] if s != "saved")
    record = {
        "update_steps_ddp": steps, "update_steps_fsdp2": sorted(s for s in fsdp["masks"] if s != "saved"),
        "masks_equal_ddp": {str(s): _equal(ddp["masks"][s], fsdp["masks"].get(s, {})) for s in steps},
        "weights_equal_ddp": _equal(ddp["weights"], fsdp["weights"]),
        "checks": fsdp["checks"], "updates": fsdp["history"] - 1, "density": fsdp["density"],
    }
    if ckpt is not None:
        dist.barrier()
        resumed = _resume(variant, ckpt, rank)
        final = fsdp["masks"][max(record["update_steps_fsdp2"])]
        record["resume"] = {"loaded_step": resumed["loaded_step"], "masks_equal": _equal(resumed["masks"], final),
                            "weights_equal": _equal(resumed["weights"], fsdp["weights"])}
        cross = _cross_load(variant, ddp["state"], ckpt)
        record["cross_load"] = {
            "ddp_into_fsdp2": _equal(cross["ddp_into_fsdp2"], ddp["masks"][steps[-1]])
            and cross["ddp_into_fsdp2_step"] == ddp["state"]["step"],
            "dcp_into_plain": _equal(cross["dcp_into_plain"], fsdp["masks"]["saved"])
            and cross["dcp_into_plain_step"] == SAVE_AT}
    return record


def bad_inputs() -> dict:
    """The message each unsupported set-up gets (None where nothing was raised)."""
    import torch
    from torch.distributed.fsdp import FullyShardedDataParallel, fully_shard

    import sparsetrain
    from _kit import batch, build_model, train_step

    spec, model, _ = _model("plain")
    out: dict[str, str | None] = {}
    opt = _optimizer(model)
    sp = sparsetrain.attach(model, opt, "rigl", density=0.25, total_steps=10)
    for layer in model:
        if isinstance(layer, torch.nn.Linear):
            fully_shard(layer)
    fully_shard(model)
    try:
        train_step(model, opt, *batch(spec, 0))
        out["fully_shard_after_attach"] = None
    except sparsetrain.SparsetrainError as e:
        out["fully_shard_after_attach"] = str(e)
    sp.detach()
    wrapped = FullyShardedDataParallel(build_model(spec, seed=0), device_id=torch.device("cpu"))
    try:
        sparsetrain.attach(wrapped, _optimizer(wrapped), "rigl", density=0.25, total_steps=10)
        out["fsdp1"] = None
    except sparsetrain.SparsetrainError as e:
        out["fsdp1"] = str(e)
    return out


def main(out_dir: str, ids: list[str]) -> int:
    import torch
    import torch.distributed as dist

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _kit import all_variants

    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    results: dict[str, object] = {"world_size": dist.get_world_size()}
    ckpt_dir = Path(out_dir, "ckpt")
    variants = {v.id: v for v in all_variants()}
    runs = [(v.id, v, "sgd", "mlp") for v in variants.values()]
    runs += [(run_id, variants[base], kind, "mlp") for run_id, (base, kind) in OTHER_OPTIMIZER.items()]
    runs += [(run_id, variants[base] if base else _filter_prune(), "sgd", "hf") for run_id, base in CONV1D.items()]
    for run_id, variant, kind, model_kind in runs:
        if ids and run_id not in ids:
            continue
        try:
            results[run_id] = run_variant(variant, rank, ckpt_dir, kind, model_kind)
        except Exception:
            print(f"rank {rank}, run {run_id}:\n{traceback.format_exc()}", file=sys.stderr, flush=True)
            results[run_id] = {"error": traceback.format_exc(limit=3).splitlines()[-1]}
            if os.environ.get("FSDP_WORKER_STRICT", "1") == "1":
                raise
    results["bad_inputs"] = bad_inputs()
    if rank == 0:
        Path(out_dir, "fsdp_results.json").write_text(json.dumps(results, indent=1))
    dist.barrier()
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    code = main(sys.argv[1], sys.argv[2].split(",") if len(sys.argv) > 2 and sys.argv[2] else [])
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # as tests/ddp_worker.py: skip an interpreter teardown that sometimes aborts under gloo
