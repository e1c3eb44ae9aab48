"""Shared helpers for tests/test_properties.py, tests/test_resume.py and tests/ddp_worker.py.

One :class:`Variant` per configuration we train: every registered method gets
at least one (methods registered later fall back to :func:`generic_variant`),
with a small ``update_every`` so a 24-step run sees several topology updates.
``kind`` says which count invariant the variant must keep (docs/concepts.md, "Guarantees"):

- ``layer``: per-layer active counts never change after init (zero-cost DST);
- ``total``: the total count never changes (redistributing DST);
- ``gmp`` / ``gmp_layer``: masks only shrink; after the last pruning event the
  total (global) or every layer (per-layer rule) holds its exact target;
- ``granet`` / ``granet_layer``: as gmp, plus zero-cost regeneration;
- ``mest_em_s``: MEST's soft memory bound (per-layer d_l + delta(t), then d_l);
- ``generic``: a method this table does not know yet: only the engine
  invariants (exact zeros, clean optimizer state, masks change only at
  recorded updates) are checked.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

import sparsetrain
from sparsetrain.methods import method_signature

#: optimizer steps per run, and the update period given to every method that takes one
TOTAL_STEPS = 24
UPDATE_EVERY = 3
#: GMP window as fractions of training: events at steps 3, 6, 9, 12 of 24
GMP_START, GMP_END = 0.125, 0.5
LAST_GMP_EVENT = int(GMP_END * TOTAL_STEPS) // UPDATE_EVERY * UPDATE_EVERY
BATCH = 8
N_CLASSES = 3


@dataclass(frozen=True)
class Variant:
    """One way of attaching a method: ``kwargs(density)`` gives the method's hyperparameters."""

    id: str
    method: str
    kind: str
    kwargs: Callable[[float], dict[str, Any]]
    #: updates are zero-cost drop/regrow events (history has dropped == grown)
    regenerates: bool = False
    #: distribution of the exact-count random init (checked against layer_densities)
    init_distribution: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def method_kwargs(self, density: float) -> dict[str, Any]:
        return {"density": density, **self.kwargs(density)}


def _ue(**kw):
    return lambda d: {"update_every": UPDATE_EVERY, **kw}


def _gmp(**kw):
    return lambda d: {"update_every": UPDATE_EVERY, "start": GMP_START, "end": GMP_END, **kw}


def _granet_sparse(d: float) -> dict[str, Any]:
    # sparse init between the target density and dense, so the schedule really prunes
    return {"update_every": UPDATE_EVERY, "start": GMP_START, "end": GMP_END, "initial_density": (1.0 + d) / 2}


KNOWN_VARIANTS: list[Variant] = [
    Variant("static", "static", "layer", lambda d: {}, init_distribution="erk"),
    Variant("static[uniform]", "static", "layer", lambda d: {"distribution": "uniform"}, init_distribution="uniform"),
    Variant("set", "set", "layer", _ue(), regenerates=True, init_distribution="erk"),
    Variant("set[sign-death]", "set", "layer", _ue(prune="set"), regenerates=True, init_distribution="erk"),
    Variant("set[cosine-er]", "set", "layer", _ue(decay="cosine", distribution="er"), regenerates=True,
            init_distribution="er"),
    Variant("rigl", "rigl", "layer", _ue(), regenerates=True, init_distribution="erk"),
    Variant("rigl[row-groups]", "rigl", "layer", _ue(granularity="row"), regenerates=True),
    Variant("set[column-groups]", "set", "layer", _ue(granularity="column"), regenerates=True),
    Variant("rigl[dense-first]", "rigl", "layer", _ue(dense_first=True), regenerates=True, init_distribution="erk",
            extra={"dense_first": True}),
    Variant("dst", "dst", "layer", _ue(), regenerates=True, init_distribution="erk"),
    Variant("dst[taylor]", "dst", "layer", _ue(prune="taylor"), regenerates=True, init_distribution="erk"),
    Variant("dst[threshold-random]", "dst", "layer", _ue(prune="threshold", growth="random"), regenerates=True,
            init_distribution="erk"),
    Variant("dst[nonzeros]", "dst", "total", _ue(redistribution="nonzeros"), regenerates=True,
            init_distribution="erk"),
    Variant("dst[momentum]", "dst", "total", _ue(growth="momentum", redistribution="momentum"),
            regenerates=True, init_distribution="erk"),
    Variant("snfs", "snfs", "total", _ue(), regenerates=True, init_distribution="uniform"),
    Variant("snfs[none]", "snfs", "layer", _ue(redistribution="none"), regenerates=True,
            init_distribution="uniform"),
    # growth by the mean |gradient EMA| of a column ranks mostly by its input's scale, so an update may regrow the
    # columns it dropped: exact counts and whole groups are checked, a moving topology is not required
    Variant("snfs[column-groups]", "snfs", "layer", _ue(granularity="column", redistribution="none"), regenerates=True,
            extra={"moves": False}),
    Variant("snfs[epoch]", "snfs", "total", lambda d: {"steps_per_epoch": 4}, regenerates=True,
            init_distribution="uniform"),
    Variant("mest[em]", "mest", "layer", _ue(mode="em"), regenerates=True, init_distribution="erk"),
    Variant("mest[em_s]", "mest", "mest_em_s", _ue(mode="em_s"), init_distribution="erk",
            extra={"bound": 0.05, "soft_end": 130 / 160}),
    Variant("gmp", "gmp", "gmp", _gmp()),
    Variant("gmp_uniform", "gmp_uniform", "gmp_layer", _gmp()),
    Variant("granet", "granet", "granet", _gmp(initial_density=1.0), regenerates=True),
    Variant("granet[sparse-init]", "granet", "granet", _granet_sparse, regenerates=True),
    Variant("granet_uniform", "granet_uniform", "granet_layer", _gmp(initial_density=1.0), regenerates=True),
    Variant("prune", "prune", "prune", lambda d: {"update_every": UPDATE_EVERY, "schedule": "agp", "end": GMP_END,
                                                  "layer_type": "all"}),
    Variant("prune[global-cos]", "prune", "prune_global",
            lambda d: {"update_every": UPDATE_EVERY, "schedule": "cos", "end": GMP_END, "context": "global",
                       "layer_type": "all"}),
    # pruning at init: a fixed mask; SNIP / GraSP / SynFlow score on batches shaped for the last built model
    Variant("snip", "snip", "layer", lambda d: {"data": calibration_batches()}),
    Variant("grasp", "grasp", "layer", lambda d: {"data": calibration_batches()}),
    Variant("synflow", "synflow", "layer", lambda d: {"data": calibration_batches(), "iterations": 5}),
    Variant("random[smart_ratio]", "random", "layer", lambda d: {"distribution": "smart_ratio"},
            init_distribution="smart_ratio"),
    Variant("lottery_ticket", "lottery_ticket", "layer", lambda d: {}),
    # Chase traces the model built last; channel events at steps 3, 7, 11, 15 of 24, soft bound until 12
    Variant("chase", "chase", "chase", lambda d: {
        "update_every": UPDATE_EVERY, "channel_every": 4, "channel_offset": 1, "end": 0.75, "soft_end": 0.5,
        "channel_sparsity": 0.4, "example_input": calibration_batches(1)[0][0]}, init_distribution="erk"),
]

#: the first update step at or after the end of the prune method's window
PRUNE_DONE = math.ceil(GMP_END * TOTAL_STEPS / UPDATE_EVERY) * UPDATE_EVERY


def generic_variant(name: str) -> Variant:
    """Fallback for a method the table above does not know: short cadence from its signature."""
    params = method_signature(name).parameters
    kw: dict[str, Any] = {}
    if "update_every" in params:
        kw["update_every"] = UPDATE_EVERY
    elif "steps_per_epoch" in params:
        kw["steps_per_epoch"] = UPDATE_EVERY
    if "start" in params and "end" in params:
        kw.update(start=GMP_START, end=GMP_END)
    return Variant(name, name, "generic", lambda d: dict(kw))


def all_variants() -> list[Variant]:
    """A variant for every registered method (known configs first, then fallbacks)."""
    known = {v.method for v in KNOWN_VARIANTS}
    extra = [generic_variant(n) for n in sparsetrain.list_methods() if n not in known]
    registered = set(sparsetrain.list_methods())
    return [v for v in KNOWN_VARIANTS if v.method in registered] + extra


def one_variant_per_method() -> list[Variant]:
    """The first variant of each registered method."""
    seen: dict[str, Variant] = {}
    for v in all_variants():
        seen.setdefault(v.method, v)
    return list(seen.values())


# --------------------------------------------------------------------------- models and data
@dataclass(frozen=True)
class ModelSpec:
    """A small random architecture: an MLP, a conv net with a linear head, or an MLP of Hugging Face
    ``Conv1D`` layers (``"hf"``, weights ``[in, out]``) with a linear head."""

    kind: str = "mlp"  # "mlp" | "conv" | "hf"
    widths: tuple[int, ...] = (16, 12)
    bias: bool = True
    batchnorm: bool = False
    in_features: int = 10
    in_channels: int = 2
    side: int = 5

    def input_shape(self) -> tuple[int, ...]:
        return (self.in_features,) if self.kind in ("mlp", "hf") else (self.in_channels, self.side, self.side)


_LAST_SPEC: list[ModelSpec] = [ModelSpec()]


def calibration_batches(n: int = 2) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``n`` batches for the model :func:`build_model` built last (data for SNIP / GraSP / SynFlow)."""
    return [batch(_LAST_SPEC[0], 100_000 + i) for i in range(n)]


def build_model(spec: ModelSpec, seed: int = 0) -> nn.Module:
    """``len(spec.widths)`` hidden layers (0 allowed for an MLP) plus a classifier."""
    _LAST_SPEC[0] = spec
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    if spec.kind == "mlp":
        fan_in = spec.in_features
        for w in spec.widths:
            layers += [nn.Linear(fan_in, w, bias=spec.bias), nn.ReLU()]
            fan_in = w
        layers.append(nn.Linear(fan_in, N_CLASSES, bias=spec.bias))
    elif spec.kind == "hf":
        from transformers.pytorch_utils import Conv1D

        fan_in = spec.in_features
        for w in spec.widths:
            layers += [Conv1D(w, fan_in), nn.ReLU()]
            fan_in = w
        layers.append(nn.Linear(fan_in, N_CLASSES, bias=spec.bias))
    else:
        ch = spec.in_channels
        for w in spec.widths:
            layers.append(nn.Conv2d(ch, w, 3, padding=1, bias=spec.bias))
            if spec.batchnorm:
                layers.append(nn.BatchNorm2d(w))
            layers.append(nn.ReLU())
            ch = w
        layers += [nn.Flatten(), nn.Linear(ch * spec.side * spec.side, N_CLASSES, bias=spec.bias)]
    return nn.Sequential(*layers)


OPTIMIZERS: dict[str, Callable[[Any], torch.optim.Optimizer]] = {
    "sgd": lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9),
    "sgd_nesterov_wd": lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4),
    "sgd_wd": lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.5, weight_decay=1e-3),
    "adam": lambda p: torch.optim.Adam(p, lr=0.01),
    "adam_wd": lambda p: torch.optim.Adam(p, lr=0.01, weight_decay=1e-4),
    "adamw": lambda p: torch.optim.AdamW(p, lr=0.01, weight_decay=0.01),
}


def batch(spec: ModelSpec, step: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """The batch of ``step``: a pure function of (spec, step, seed), so reruns see the same data."""
    g = torch.Generator().manual_seed(10_007 * seed + step)
    x = torch.randn((BATCH, *spec.input_shape()), generator=g)
    y = torch.randint(0, N_CLASSES, (BATCH,), generator=g)
    return x, y


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
               sparsifier: sparsetrain.Sparsifier | None = None) -> None:
    """One step; given a ``sparsifier`` (attached with ``hooks=False``) it steps through ``sparsifier.step()``."""
    optimizer.zero_grad(set_to_none=True)
    nn.functional.cross_entropy(model(x), y).backward()
    if sparsifier is not None:
        sparsifier.step()
    else:
        optimizer.step()


def to_device(obj: Any, device: str | torch.device = "cpu", dtype: torch.dtype | None = None) -> Any:
    """``obj`` with every tensor inside (lists, tuples, dicts) on ``device``; floating tensors also in ``dtype``."""
    if isinstance(obj, torch.Tensor):
        return obj.to(device=device, dtype=dtype if dtype is not None and obj.is_floating_point() else None)
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_device(o, device, dtype) for o in obj)
    if isinstance(obj, dict):
        return {k: to_device(v, device, dtype) for k, v in obj.items()}
    return obj


def count(mask: torch.Tensor) -> int:
    """Active entries of a bool mask, counted (never summed from floats)."""
    return int(torch.count_nonzero(mask))


@contextlib.contextmanager
def torch_state():
    """Undo process-wide torch settings a test (or the trainer it runs) changes:
    threads, deterministic mode and the global RNG."""
    threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    rng = torch.get_rng_state()
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)
        torch.set_rng_state(rng)


#: every variant, run on a Hugging Face Conv1D MLP (tests/test_selection.py)
VARIANTS_FOR_HF = all_variants()
