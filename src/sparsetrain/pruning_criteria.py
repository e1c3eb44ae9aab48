"""fasterai's pruning criteria as sparsetrain criteria (ALGORITHMS.md 8.2, 8.3).

Each is ``(ctx, name) -> scores`` (higher = keep), registered in
:mod:`sparsetrain.criteria` when this module is imported. ``w`` is the current
weight, ``w0`` the weight stored by :func:`remember_weights` (compose
``remember_weights("w0")`` into the method's init), ``w_prev`` the weight at
the previous mask computation (chain ``remember_weights("w_prev")`` after
each mask computation; before the first one, ``w0`` stands in, as in
fasterai). Scores are the raw formulas of the blog-era code: fasterai's later
positive shift and multiplication by the old mask are the mask ops' job here
(candidates), and fasterai's ``random`` is sparsetrain's ``random``.

Example (hand-worked; w0 = [1, -2, 0.5, 3], w = [2, -1, -0.5, 3], g = [0.5, 1, 2, 0]):
    >>> from torch import nn
    >>> from sparsetrain.context import SparseContext
    >>> from sparsetrain.criteria import get_criterion
    >>> p = nn.Parameter(torch.tensor([1.0, -2.0, 0.5, 3.0]))
    >>> ctx = SparseContext({"w": p}, {}, None, 10, torch.Generator())
    >>> _ = remember_weights("w0")(ctx)
    >>> with torch.no_grad():
    ...     _ = p.copy_(torch.tensor([2.0, -1.0, -0.5, 3.0]))
    >>> ctx.grads["w"] = torch.tensor([0.5, 1.0, 2.0, 0.0])
    >>> for crit in ("large_final", "small_final", "large_init", "small_init", "large_init_large_final",
    ...              "small_init_small_final", "magnitude_increase", "movement", "movmag", "grad"):
    ...     print(crit, get_criterion(crit)(ctx, "w").tolist())
    large_final [2.0, 1.0, 0.5, 3.0]
    small_final [-2.0, -1.0, -0.5, -3.0]
    large_init [1.0, 2.0, 0.5, 3.0]
    small_init [-1.0, -2.0, -0.5, -3.0]
    large_init_large_final [1.0, 1.0, 0.5, 3.0]
    small_init_small_final [-2.0, -2.0, -0.5, -3.0]
    magnitude_increase [1.0, -1.0, 0.0, 0.0]
    movement [1.0, 1.0, 1.0, 0.0]
    movmag [2.0, 1.0, 0.5, 0.0]
    grad [1.0, 1.0, 1.0, 0.0]
"""

from __future__ import annotations

import torch
from torch import Tensor

from sparsetrain.context import SparseContext
from sparsetrain.criteria import criterion
from sparsetrain.errors import SparsetrainError
from sparsetrain.ops.base import Op

#: the names this module registers (fasterai's ``random`` is the existing ``random``)
FASTERAI_CRITERIA = (
    "large_final", "small_final", "large_init", "small_init", "large_init_large_final", "small_init_small_final",
    "magnitude_increase", "movement", "updating_movement", "updating_magnitude_increase", "movmag", "grad",
)


def remember_weights(key: str = "w0") -> Op:
    """Op storing a detached clone of every sparsified weight in ``ctx.state[key][name]``.

    ``remember_weights("w0")`` in the init gives the ``*_init``, ``movement``
    and ``magnitude_increase`` criteria their w0; ``remember_weights("w_prev")``
    chained after each mask computation gives the ``updating_*`` ones theirs.
    The copies are tensors in ``ctx.state``, so they go into the state_dict.

    Example:
        >>> from torch import nn
        >>> ctx = SparseContext({"w": nn.Parameter(torch.ones(2))}, {}, None, 1, torch.Generator())
        >>> remember_weights("w0")(ctx)
        {'remembered': 'w0'}
        >>> ctx.state["w0"]["w"].tolist()
        [1.0, 1.0]
    """
    def run(ctx: SparseContext) -> dict:
        ctx.state[key] = {n: p.detach().clone() for n, p in ctx.params.items()}
        return {"remembered": key}
    return Op(run, name=f"remember_weights[{key}]")


def _w(ctx: SparseContext, name: str) -> Tensor:
    return ctx.params[name].detach()


def _w0(ctx: SparseContext, name: str) -> Tensor:
    saved = ctx.state.get("w0", {})
    if name not in saved:
        raise SparsetrainError(
            f"this criterion needs the initial weights (none stored for {name!r}): "
            "compose remember_weights('w0') into the method's init."
        )
    return saved[name]


def _w_prev(ctx: SparseContext, name: str) -> Tensor:
    """Weights at the previous mask computation; w0 before the first one (fasterai)."""
    prev = ctx.state.get("w_prev", {})
    return prev[name] if name in prev else _w0(ctx, name)


@criterion("large_final")
def large_final(ctx: SparseContext, name: str) -> Tensor:
    """|w|: keep the large final weights (fasterai's default; w = [2, -1] -> [2, 1])."""
    return _w(ctx, name).abs()


@criterion("small_final")
def small_final(ctx: SparseContext, name: str) -> Tensor:
    """-|w|: keep the small final weights (w = [2, -1] -> [-2, -1])."""
    return -_w(ctx, name).abs()


@criterion("large_init")
def large_init(ctx: SparseContext, name: str) -> Tensor:
    """|w0|: keep the weights that were large at init (w0 = [1, -2] -> [1, 2])."""
    return _w0(ctx, name).abs()


@criterion("small_init")
def small_init(ctx: SparseContext, name: str) -> Tensor:
    """-|w0| (w0 = [1, -2] -> [-1, -2])."""
    return -_w0(ctx, name).abs()


@criterion("large_init_large_final")
def large_init_large_final(ctx: SparseContext, name: str) -> Tensor:
    """min(|w0|, |w|): large at init and now (w0 = [1, -2], w = [2, -1] -> [1, 1])."""
    return torch.minimum(_w0(ctx, name).abs(), _w(ctx, name).abs())


@criterion("small_init_small_final")
def small_init_small_final(ctx: SparseContext, name: str) -> Tensor:
    """-max(|w0|, |w|): small at init and now (w0 = [1, -2], w = [2, -1] -> [-2, -2])."""
    return -torch.maximum(_w0(ctx, name).abs(), _w(ctx, name).abs())


@criterion("magnitude_increase")
def magnitude_increase(ctx: SparseContext, name: str) -> Tensor:
    """|w| - |w0|: keep the weights that grew (w0 = [1, -2], w = [2, -1] -> [1, -1])."""
    return _w(ctx, name).abs() - _w0(ctx, name).abs()


@criterion("movement")
def movement(ctx: SparseContext, name: str) -> Tensor:
    """|w - w0|: keep the weights that moved most (w0 = [1, -2], w = [2, -1] -> [1, 1])."""
    return (_w(ctx, name) - _w0(ctx, name)).abs()


@criterion("updating_movement")
def updating_movement(ctx: SparseContext, name: str) -> Tensor:
    """|w - w_prev|, movement since the previous mask computation (w_prev = [2, 0], w = [2, -1] -> [0, 1])."""
    return (_w(ctx, name) - _w_prev(ctx, name)).abs()


@criterion("updating_magnitude_increase")
def updating_magnitude_increase(ctx: SparseContext, name: str) -> Tensor:
    """|w| - |w_prev| (w_prev = [2, 0], w = [2, -1] -> [0, 1])."""
    return _w(ctx, name).abs() - _w_prev(ctx, name).abs()


@criterion("movmag")
def movmag(ctx: SparseContext, name: str) -> Tensor:
    """|w * (w - w0)| (fasterai HEAD; w0 = [1, -2], w = [2, -1] -> [2, 1])."""
    w = _w(ctx, name)
    return (w * (w - _w0(ctx, name))).abs()


@criterion("grad", needs_grad=True)
def grad(ctx: SparseContext, name: str) -> Tensor:
    """(w * g)^2, fasterai's ``grad_crit`` (w = [2, -1], g = [0.5, 1] -> [1, 1]); reads the batch gradient."""
    return (_w(ctx, name) * ctx.grad(name)).pow(2)
