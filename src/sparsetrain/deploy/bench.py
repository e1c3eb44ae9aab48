"""Measure dense vs compact vs CSR: latency, throughput, parameters and FLOPs, side by side.

docs/algorithms.md, "Chase" (``print_inf_time``): warm-up forwards, then repeated timed
forwards under ``no_grad``. Here every repetition times each variant once,
interleaved (dense, compact, csr, dense, ...), so a machine shared with other
work slows all variants alike; the median is reported with min and max.
FLOPs are counted per sample: dense FLOPs with ``FlopCounterMode``, sparse
FLOPs (the CSR row) as each layer's dense FLOPs times its weight density
(the RigL-paper convention, :mod:`sparsetrain.metrics.flops`).

Example:
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Linear(8, 4)).eval()
    >>> rows = bench({"dense": net}, (8,), batch_sizes=(2,), reps=3, warmup=1)
    >>> rows[0]["variant"], rows[0]["batch"], rows[0]["params"], rows[0]["flops"]
    ('dense', 2, 36, 64)
"""

from __future__ import annotations

import copy
import statistics
import time
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from sparsetrain.errors import SparsetrainError
from sparsetrain.metrics.flops import module_flops, sparse_flops


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _weight_masks(model: nn.Module) -> dict[str, Tensor]:
    return {n: p.ne(0) for n, p in model.named_parameters() if p.dim() >= 2}


def count(model: nn.Module, example: Tensor, sparse: bool = False) -> tuple[int, int]:
    """``(parameters, FLOPs per sample)``; ``sparse`` counts non-zero weights and density-scaled FLOPs."""
    params = sum(int(p.count_nonzero()) if sparse else p.numel() for p in model.parameters())
    if sparse:
        return params, int(sparse_flops(model, example, _weight_masks(model))["sparse"])
    return params, module_flops(model, example)[0]


def time_variants(models: dict[str, nn.Module], x: Tensor, *, reps: int, warmup: int) -> dict[str, list[float]]:
    """Seconds per forward of each model on ``x``, ``reps`` interleaved repetitions after ``warmup``."""
    times: dict[str, list[float]] = {name: [] for name in models}
    with torch.inference_mode():
        for model in models.values():
            for _ in range(warmup):
                model(x)
        _sync(x.device)
        for _ in range(reps):
            for name, model in models.items():
                start = time.perf_counter()
                model(x)
                _sync(x.device)
                times[name].append(time.perf_counter() - start)
    return times


def bench(models: dict[str, nn.Module], input_shape: Sequence[int], *, batch_sizes: Sequence[int] = (1, 64),
          device: str | torch.device = "cpu", threads: int | None = None, reps: int = 20, warmup: int = 5,
          counts: dict[str, tuple[int, int]] | None = None, dtype: torch.dtype = torch.float32) -> list[dict[str, Any]]:
    """One row per (variant, batch): latency (median/min/max ms), throughput, params, FLOPs, speedups vs the first.

    Args:
        models: ``{name: model}`` in display order; the first is the baseline (dense).
        input_shape: one sample's shape, e.g. ``(3, 32, 32)``.
        batch_sizes: batches to time.
        device: ``"cpu"`` or ``"cuda"`` (timings CUDA-synchronised).
        threads: ``torch.set_num_threads`` for the run (restored after).
        reps / warmup: timed repetitions (median reported) and untimed warm-up forwards.
        counts: ``{name: (params, flops per sample)}`` where counting the model itself is
            wrong (a CSR model: pass the sparse counts of the model it came from).

    Raises:
        SparsetrainError: CUDA asked for but not available, or no models.
    """
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SparsetrainError("--device cuda asked for, but torch sees no CUDA device; use --device cpu.")
    if not models:
        raise SparsetrainError("bench needs at least one model.")
    old_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(int(threads))
    try:
        counts = dict(counts or {})
        one = torch.randn(1, *input_shape, dtype=dtype)
        for name, model in models.items():
            if name not in counts:  # counted where it lives (a 2:4 weight cannot move to the CPU)
                counts[name] = count(model.eval(), one.to(next(model.parameters(), one).device))
        models = {n: m.to(device=device) for n, m in models.items()}
        rows = []
        for batch in batch_sizes:
            x = torch.randn(batch, *input_shape, device=device, dtype=dtype)
            times = time_variants(models, x, reps=reps, warmup=warmup)
            rows += _rows(times, counts, batch)
        return rows
    finally:
        torch.set_num_threads(old_threads)


def prepare(model: nn.Module, example_input: Tensor, *, masks: dict[str, Tensor] | None = None, csr: bool = True,
            csr_batch: int = 64, round_to: int = 1) -> tuple[dict[str, nn.Module], dict[str, tuple[int, int]],
                                                          dict[str, Any]]:
    """The variants to compare: ``dense`` (masked, full width), ``compact`` and ``csr`` (compact + measured CSR).

    ``round_to`` is passed to :func:`~sparsetrain.deploy.compact.compact`.

    Returns ``(models, counts, info)``; ``info`` holds the width spec and the per-layer CSR decisions.
    """
    import warnings

    from sparsetrain.deploy.compact import compact
    from sparsetrain.deploy.inference import sparsify_for_inference
    dense = copy.deepcopy(model).eval()
    with torch.no_grad():
        for name, p in dense.named_parameters():
            if masks and name in masks:
                p.mul_(masks[name].to(p))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        small, spec = compact(dense, example_input, round_to=round_to)
    small = copy.deepcopy(small) if small is dense else small
    one = example_input[:1]
    models = {"dense": dense, "compact": small}  # on example_input's device: CSR / 2:4 are decided there
    counts = {"dense": count(dense, one), "compact": count(small, one)}
    info: dict[str, Any] = {"width_spec": spec, "notes": [str(w.message) for w in caught]}
    if csr:
        batch = example_input[:1].expand(csr_batch, *example_input.shape[1:]).contiguous()
        models["csr"], decisions = sparsify_for_inference(small, batch)
        counts["csr"] = count(small, one, sparse=True)
        info["csr"] = {name: {"choice": d.choice, "density": d.density, "ms": {k: v * 1e3 for k, v in d.times.items()},
                              "skipped": d.skipped} for name, d in decisions.items()}
    return models, counts, info


def channel_sparse_masks(model: nn.Module, example_input: Tensor, channel_sparsity: float, *, min_ratio: float = 0.2,
                         density: float = 1.0, seed: int = 0, score_norm: str = "none",
                         prune_skip: bool = False) -> dict[str, Tensor]:
    """One-shot Chase channel removal for benchmarks: masks that empty ``channel_sparsity`` of all channels.

    Chase's selection (docs/algorithms.md, "Chase") in one step instead of gradually: channels
    are ranked globally by UMM (mean |w| of the producer rows, zeros included); each
    group keeps at least ``max(1, floor(C_l (1 - S_c) beta))`` channels (``min_ratio`` =
    beta); a removed channel's producer rows and consumer columns are masked, as the
    seed does. ``density`` < 1 first draws exact-count random unstructured masks.
    Residual (skip) channels are removed only with ``prune_skip`` (the seed's default
    leaves them); ``score_norm="layer"`` ranks each group's scores relative to its mean
    (``sparsetrain.ops.channels.normalize_scores``, our extension).
    """
    from sparsetrain.core.graph import channel_groups
    from sparsetrain.ops.channels import normalize_scores
    gen = torch.Generator().manual_seed(seed)
    params = dict(model.named_parameters())
    masks = {}
    for name, p in params.items():
        if p.dim() >= 2:
            flat = torch.zeros(p.numel(), dtype=torch.bool)
            flat[torch.randperm(p.numel(), generator=gen)[: round(density * p.numel())]] = True
            masks[name] = flat.view_as(p)
    groups = channel_groups(model, example_input, prune_skip=prune_skip)
    scores, owner = [], []
    for gi, g in enumerate(groups):
        total, count = torch.zeros(g.size), 0
        for s in g.producers:  # a residual group pools all its producers' slices, as ops.channels does
            if s.param.endswith(".weight"):
                w = (params[s.param].detach() * masks[s.param]).abs().movedim(s.dim, 0)
                rows = w.reshape(w.shape[0], -1)[s.positions()]  # [channels, positions per channel, fan-in]
                total += rows.sum((1, 2))
                count += rows.shape[1] * rows.shape[2]
        scores.append(total / max(count, 1))
        owner += [gi] * g.size
    alive = {str(gi): torch.ones(len(sc), dtype=torch.bool) for gi, sc in enumerate(scores)}
    normed = normalize_scores({str(gi): sc for gi, sc in enumerate(scores)}, alive, score_norm)
    scores = [normed[str(gi)] for gi in range(len(scores))]
    order = torch.cat(scores).argsort(stable=True).tolist() if scores else []
    offsets = [0]
    for g in groups:
        offsets.append(offsets[-1] + g.size)
    target = int(channel_sparsity * offsets[-1])
    removed: dict[int, list[int]] = {gi: [] for gi in range(len(groups))}
    for flat_index in order:
        if sum(len(v) for v in removed.values()) >= target:
            break
        gi = owner[flat_index]
        size = groups[gi].size
        if size - len(removed[gi]) > max(1, int(size * (1 - channel_sparsity) * min_ratio)):
            removed[gi].append(flat_index - offsets[gi])
    for gi, channels in removed.items():
        if channels:
            for s in (*groups[gi].producers, *groups[gi].consumers):
                if s.param in masks:
                    masks[s.param].movedim(s.dim, 0)[s.positions()[channels].flatten()] = False
    return masks


def _rows(times: dict[str, list[float]], counts: dict[str, tuple[int, int]], batch: int) -> list[dict[str, Any]]:
    base = next(iter(times))
    base_median = statistics.median(times[base])
    rows = []
    for name, ts in times.items():
        median = statistics.median(ts)
        params, flops = counts[name]
        rows.append({"variant": name, "batch": batch, "median_ms": median * 1e3, "min_ms": min(ts) * 1e3,
                     "max_ms": max(ts) * 1e3, "throughput": batch / median, "params": params, "flops": flops,
                     "speedup": base_median / median, "flop_ratio": counts[base][1] / max(1, flops)})
    return rows


def format_table(rows: list[dict[str, Any]]) -> str:
    """The rows as an aligned text table (also valid Markdown)."""
    head = ("| variant | batch | median ms | min ms | max ms | samples/s | params | MFLOPs/sample | speedup | "
            "FLOP ratio |")
    lines = [head, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['variant']} | {r['batch']} | {r['median_ms']:.2f} | {r['min_ms']:.2f} | {r['max_ms']:.2f} "
                     f"| {r['throughput']:.0f} | {r['params']:,} | {r['flops'] / 1e6:.4g} | {r['speedup']:.2f}x "
                     f"| {r['flop_ratio']:.2f}x |")
    return "\n".join(lines)


__all__ = ["bench", "channel_sparse_masks", "count", "format_table", "prepare", "time_variants"]
