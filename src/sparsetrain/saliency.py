"""Saliency scores for pruning at initialisation: SNIP, GraSP, SynFlow.
See docs/algorithms.md, "Pruning at initialisation".

Pure functions of ``(model, params, batches, loss_fn)``: each returns
``{name: score tensor}`` shaped like ``params[name]`` and leaves the model as
it found it (weights, BatchNorm statistics, train/eval modes, the global RNG;
see :func:`preserved`). Gradients come from :func:`torch.autograd.grad`, so
``.grad`` of the parameters is not touched either.

Sign conventions (each paper's own):

- SNIP (Lee et al. 2019): ``|g * w|``, keep the highest.
- GraSP (Wang et al. 2020, eq. 8): ``S = -w * (H g)``, remove the *highest*,
  i.e. keep the lowest.
- SynFlow (Tanaka et al. 2020): ``|w * dR/dw|`` with
  ``R = 1^T (prod_l |W_l|) 1``, keep the highest.

Example:
    >>> import torch
    >>> net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    >>> params = {"0.weight": net[0].weight, "2.weight": net[2].weight}
    >>> batch = (torch.randn(8, 3), torch.randint(0, 2, (8,)))
    >>> {n: tuple(s.shape) for n, s in snip_scores(net, params, [batch]).items()}
    {'0.weight': (4, 3), '2.weight': (2, 4)}
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable, Iterable, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sparsetrain.errors import SparsetrainError

Batch = tuple[Tensor, Tensor]
LossFn = Callable[[Tensor, Tensor], Tensor]


@contextlib.contextmanager
def preserved(model: nn.Module) -> Iterator[None]:
    """Run a block that may change the model, then put everything back exactly.

    Restored on exit: every parameter's and buffer's tensor (``.data`` is set
    back to the original storage, so a block may swap in another tensor;
    SynFlow does not, it passes its ``|w|`` in float64 through
    ``torch.func.functional_call``, because a swap would detach DDP's gradient
    hooks), buffer values (BatchNorm running statistics and counters
    updated by a forward in train mode), each module's train/eval mode, and
    the global CPU and CUDA RNG states (a DataLoader iterator or dropout
    draws from them).
    """
    tensors = [t for t in itertools.chain(model.parameters(), model.buffers())]
    storage = [t.data for t in tensors]
    buffers = [(b.data, b.detach().clone()) for b in model.buffers()]
    modes = [(m, m.training) for m in model.modules()]
    cuda = sorted({t.device.index or 0 for t in tensors if t.device.type == "cuda"})
    with torch.random.fork_rng(devices=cuda):
        try:
            yield
        finally:
            with torch.no_grad():
                for t, data in zip(tensors, storage, strict=True):
                    t.data = data
                for data, saved in buffers:
                    data.copy_(saved)
            for m, training in modes:
                m.training = training


def take_batches(data: Iterable[Batch] | None, n: int, who: str) -> list[Batch]:
    """The first ``n`` ``(inputs, targets)`` batches of ``data``, with clear errors.

    The global CPU RNG is left as it was (a shuffling DataLoader draws its
    base seed from it), so training sees the same data order with or without
    the scoring.

    Example:
        >>> len(take_batches([(torch.zeros(2, 3), torch.zeros(2))] * 5, 2, "snip"))
        2
    """
    if data is None:
        raise SparsetrainError(
            f"{who} scores the weights on training data, but none was given: pass "
            "data=<iterable of (inputs, targets) batches> (and loss_fn=..., default cross-entropy) to "
            "sparsetrain.attach(), or train with the reference trainer (sparsetrain train), which passes them.")
    if not isinstance(data, Iterable):
        raise SparsetrainError(f"{who}: data must be an iterable of (inputs, targets) batches, "
                               f"got {type(data).__name__}.")
    with torch.random.fork_rng(devices=[]):  # a shuffling DataLoader draws its seed from the global RNG
        batches = list(itertools.islice(iter(data), n))
    if not batches:
        raise SparsetrainError(f"{who}: the data loader yielded no batches; it needs at least one "
                               "(inputs, targets) batch (is the dataset empty, or an iterator already used up?).")
    for b in batches:
        if not (isinstance(b, (tuple, list)) and len(b) == 2):
            raise SparsetrainError(f"{who}: each batch must be an (inputs, targets) pair, got {type(b).__name__}"
                                   f"{f' of length {len(b)}' if isinstance(b, (tuple, list)) else ''}.")
    return [(b[0], b[1]) for b in batches]


def _grads(output: Tensor, params: list[Tensor], create_graph: bool = False) -> list[Tensor]:
    """d output / d params; a parameter the output does not depend on gets zeros."""
    grads = torch.autograd.grad(output, params, create_graph=create_graph, allow_unused=True)
    return [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads, strict=True)]


def snip_scores(model: nn.Module, params: dict[str, Tensor], batches: Iterable[Batch],
                loss_fn: LossFn | None = None) -> dict[str, Tensor]:
    """SNIP connection sensitivity ``|g * w|`` (Lee et al. 2019, eq. 6; higher = keep).

    ``g`` is the gradient of the loss summed over ``batches`` (one batch in the
    paper); the paper's normalisation by the sum of all scores does not change
    the ranking and is left out. The model is scored in train mode (batch
    statistics in BatchNorm), as the original code does.
    """
    loss_fn = loss_fn or F.cross_entropy
    names, tensors = list(params), list(params.values())
    with preserved(model), torch.enable_grad():
        model.train()
        total = [torch.zeros_like(p) for p in tensors]
        for x, y in batches:
            for acc, g in zip(total, _grads(loss_fn(model(x), y), tensors), strict=True):
                acc.add_(g)
    return {n: (g * p.detach()).abs() for n, g, p in zip(names, total, tensors, strict=True)}


def grasp_scores(model: nn.Module, params: dict[str, Tensor], batches: Iterable[Batch],
                 loss_fn: LossFn | None = None, temperature: float = 200.0) -> dict[str, Tensor]:
    """GraSP scores ``S = -w * (H g)`` (Wang et al. 2020, eq. 8; *lower* = keep).

    Two passes over ``batches``, as the original code (``pruner/GraSP.py``):
    (1) g = sum of the batches' loss gradients, detached; (2) for each batch,
    the gradient is taken again with a graph and ``z = g . grad`` is
    differentiated once more, which accumulates ``H g`` (a Hessian-gradient
    product by double backward, no Hessian is formed). The logits are divided
    by ``temperature`` (T = 200 in the original) in *both* passes, as the
    original code does. The paper removes the weights with the highest S, so
    the method keeps the lowest; ``tests/test_saliency.py`` checks the sign
    against an independent ``torch.autograd.functional.hvp``.
    """
    loss_fn = loss_fn or F.cross_entropy
    batches = list(batches)
    names, tensors = list(params), list(params.values())
    with preserved(model), torch.enable_grad():
        model.train()
        g = [torch.zeros_like(p) for p in tensors]
        for x, y in batches:
            for acc, gi in zip(g, _grads(loss_fn(model(x) / temperature, y), tensors), strict=True):
                acc.add_(gi)
        hg = [torch.zeros_like(p) for p in tensors]
        for x, y in batches:
            grad_f = _grads(loss_fn(model(x) / temperature, y), tensors, create_graph=True)
            z = sum((gi * fi).sum() for gi, fi in zip(g, grad_f, strict=True) if fi.requires_grad)
            if isinstance(z, Tensor) and z.requires_grad:
                for acc, h in zip(hg, _grads(z, tensors), strict=True):
                    acc.add_(h)
    return {n: -(p.detach() * h) for n, p, h in zip(names, tensors, hg, strict=True)}


def synflow_scores(model: nn.Module, params: dict[str, Tensor], example_input: Tensor,
                   masks: dict[str, Tensor] | None = None, double: bool = True) -> dict[str, Tensor]:
    """SynFlow synaptic saliency ``|w * dR/dw|`` (Tanaka et al. 2020, eq. 2; higher = keep).

    Data-free: every parameter and floating buffer is replaced by its absolute
    value (``masks`` applied to the scored weights), BatchNorm runs in eval
    mode, and ``R = sum(model(ones))`` is differentiated for one all-ones
    input shaped like one sample of ``example_input``. With ``double`` the
    pass runs in float64 (the original left it in float32, which can overflow
    or underflow on deep nets). The model is put back exactly afterwards.
    """
    dtype = torch.float64 if double else None
    # |w| in float64 goes in through functional_call: the module's own tensors are never
    # swapped (swapping .data would detach DDP's gradient hooks from the parameters)
    state: dict[str, Tensor] = {}
    for n, t in itertools.chain(model.named_parameters(), model.named_buffers()):
        t = t.detach()
        state[n] = t.abs().to(dtype or t.dtype) if t.is_floating_point() else t
    key = {id(p): n for n, p in model.named_parameters()}
    scored = {}
    for name, p in params.items():
        k = key[id(p)]
        w = state[k] if masks is None else state[k] * masks[name].to(state[k].dtype)
        state[k] = scored[name] = w.requires_grad_()
    ones = torch.ones((1, *example_input.shape[1:]), dtype=dtype or example_input.dtype,
                      device=example_input.device)
    with preserved(model), torch.enable_grad():
        model.eval()
        grads = _grads(torch.func.functional_call(model, state, (ones,)).sum(), list(scored.values()))
    scores = {n: (g * w.detach()).abs().to(torch.float64) for (n, w), g in zip(scored.items(), grads, strict=True)}
    return scores


__all__ = ["grasp_scores", "preserved", "snip_scores", "synflow_scores", "take_batches"]
