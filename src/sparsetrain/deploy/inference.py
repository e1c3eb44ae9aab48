"""Unstructured-sparse inference: each linear layer runs dense, as CSR, or (CUDA) 2:4, whichever is MEASURED fastest.

Sparse kernels pay off only at high sparsity and the right shapes; where the
break-even lies depends on the machine, the batch and the layer. So nothing
is assumed: for every ``nn.Linear`` with zeros, each available format is
timed on the layer's actual input (captured from ``example_input``), and the
layer is replaced only when a format beats dense by ``min_speedup``
(ISSUE 4 export; docs/algorithms.md, "Chase" measures latency the same way: warm-up,
then repeated timed forwards).

Formats:
    ``csr``: ``torch.sparse_csr`` weight, ``y = addmm(b, W, x^T)^T`` (``F.linear``
    with a CSR weight is ~10x slower on CPU at batch 64, so not used).
    ``2:4``: ``torch.sparse.to_sparse_semi_structured`` (CUDA only; the weight
    must have at most 2 non-zeros in every group of 4 along its input dim).

Example:
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Linear(8, 4))
    >>> with torch.no_grad(): _ = net[0].weight.mul_(torch.rand(4, 8) < 0.2)
    >>> timer = lambda label, fn: {"csr": 1.0}.get(label, 2.0)  # a measured timer is the default
    >>> fast, decisions = sparsify_for_inference(net, torch.randn(2, 8), timer=timer)
    >>> decisions["0"].choice, type(fast[0]).__name__
    ('csr', 'CSRLinear')
"""

from __future__ import annotations

import copy
import statistics
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from sparsetrain.errors import SparsetrainError

Timer = Callable[[str, Callable[[], Any]], float]


class CSRLinear(nn.Module):
    """A linear layer with a ``torch.sparse_csr`` weight (inference only)."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        with warnings.catch_warnings():  # "CSR support is in beta": the API used here is stable enough
            warnings.simplefilter("ignore", UserWarning)
            self.register_buffer("weight", linear.weight.detach().to_sparse_csr())
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach().clone())

    def forward(self, x: Tensor) -> Tensor:
        flat = x.reshape(-1, self.in_features).t()
        y = torch.addmm(self.bias.unsqueeze(1), self.weight, flat) if self.bias is not None else self.weight @ flat
        return y.t().reshape(*x.shape[:-1], self.out_features)


class SemiStructuredLinear(nn.Module):
    """A linear layer with a 2:4 semi-structured weight (CUDA only, inference only)."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        from torch.sparse import to_sparse_semi_structured
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight = nn.Parameter(to_sparse_semi_structured(linear.weight.detach()), requires_grad=False)
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach().clone(), requires_grad=False)

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight, self.bias)


def is_two_four(weight: Tensor) -> bool:
    """At most 2 non-zeros in every group of 4 consecutive input weights.

    Example:
        >>> is_two_four(torch.tensor([[1., 0, 2, 0, 0, 0, 0, 3]])), is_two_four(torch.tensor([[1., 1, 1, 0]]))
        (True, False)
    """
    if weight.dim() != 2 or weight.shape[1] % 4:
        return False
    return bool((weight.reshape(-1, 4).ne(0).sum(1) <= 2).all())


def _csr_unavailable(linear: nn.Linear) -> str | None:
    return None if linear.weight.dtype in (torch.float32, torch.float64) else f"CSR addmm: dtype {linear.weight.dtype}"


def _two_four_unavailable(linear: nn.Linear) -> str | None:
    if linear.weight.device.type != "cuda":
        return "2:4 semi-structured kernels need CUDA"
    if not is_two_four(linear.weight):
        return "weight is not 2:4 sparse"
    return None


#: format name -> (why it cannot be used for this layer or None, converter)
FORMATS: dict[str, tuple[Callable[[nn.Linear], str | None], Callable[[nn.Linear], nn.Module]]] = {
    "csr": (_csr_unavailable, CSRLinear),
    "2:4": (_two_four_unavailable, SemiStructuredLinear),
}


def median_seconds(fn: Callable[[], Any], reps: int = 20, warmup: int = 3) -> float:
    """Median wall time of ``fn()`` after ``warmup`` calls (CUDA synchronised when available)."""
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    with torch.no_grad():
        for _ in range(warmup):
            fn()
        sync()
        times = []
        for _ in range(reps):
            start = time.perf_counter()
            fn()
            sync()
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def choose(times: dict[str, float], min_speedup: float = 1.1) -> str:
    """The fastest format, if it beats ``times["dense"]`` by ``min_speedup``; else ``"dense"``.

    Example:
        >>> choose({"dense": 1.0, "csr": 0.5, "2:4": 0.7}), choose({"dense": 1.0, "csr": 0.95})
        ('csr', 'dense')
    """
    best = min(times, key=times.__getitem__)
    return best if best != "dense" and times["dense"] >= min_speedup * times[best] else "dense"


@dataclass
class LayerDecision:
    """What was measured for one layer and what it became."""

    shape: tuple[int, ...]
    density: float
    times: dict[str, float] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    choice: str = "dense"


def _linear_inputs(model: nn.Module, example_input: Any) -> dict[str, Tensor]:
    seen: dict[str, Tensor] = {}
    handles = [m.register_forward_pre_hook(lambda mod, args, n=n: seen.setdefault(n, args[0].detach().clone()))
               for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    try:
        with torch.no_grad():
            model(*example_input) if isinstance(example_input, tuple) else model(example_input)
    finally:
        for h in handles:
            h.remove()
    return seen


def _decide(linear: nn.Linear, x: Tensor, formats, timer: Timer, min_speedup: float) -> tuple[LayerDecision, Any]:
    weight = linear.weight
    decision = LayerDecision(tuple(x.shape), float(weight.ne(0).float().mean()))
    built = {"dense": linear}
    for name in formats:
        unavailable, convert = FORMATS[name]
        reason = unavailable(linear)
        if reason is None:
            try:
                built[name] = convert(linear)
            except (RuntimeError, ValueError, NotImplementedError) as err:  # kernel constraints (shapes, dtypes)
                reason = f"conversion failed: {str(err).splitlines()[0][:120]}"
        if reason is not None:
            decision.skipped[name] = reason
    for name, module in built.items():
        decision.times[name] = timer(name, lambda m=module: m(x))
    decision.choice = choose(decision.times, min_speedup)
    return decision, built[decision.choice]


def sparsify_for_inference(model: nn.Module, example_input: Any, *, formats: tuple[str, ...] = ("csr", "2:4"),
                           timer: Timer | None = None, min_speedup: float = 1.1,
                           reps: int = 20) -> tuple[nn.Module, dict[str, LayerDecision]]:
    """A copy of ``model`` whose sparse linear layers use the measured-fastest format.

    Args:
        model: an eval-ready model (dense-with-zeros); not modified.
        example_input: a batch of the size you will serve: each layer is timed
            on the input it sees for it.
        formats: candidate formats (``"csr"``, ``"2:4"``); dense is always a candidate.
        timer: ``timer(format, fn) -> seconds``; default: median of ``reps`` runs.
        min_speedup: a format must be this much faster than dense to be chosen.

    Returns:
        ``(model_copy, {layer name: LayerDecision})`` for every linear layer with zeros.
    """
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise SparsetrainError(f"unknown inference format(s) {unknown}; choose from {sorted(FORMATS)}.")
    timer = timer or (lambda name, fn: median_seconds(fn, reps=reps))
    fast = copy.deepcopy(model).eval()
    inputs = _linear_inputs(fast, example_input)
    modules = dict(fast.named_modules())
    decisions = {}
    for name, x in inputs.items():
        linear = modules[name]
        if bool(linear.weight.ne(0).all()):
            continue
        decisions[name], chosen = _decide(linear, x, formats, timer, min_speedup)
        if chosen is not linear and not name:  # the model is the linear layer itself
            fast = chosen
        elif chosen is not linear:
            parent, _, child = name.rpartition(".")
            setattr(fast.get_submodule(parent) if parent else fast, child, chosen)
    return fast, decisions


__all__ = ["CSRLinear", "FORMATS", "LayerDecision", "SemiStructuredLinear", "choose", "is_two_four",
           "median_seconds", "sparsify_for_inference"]
