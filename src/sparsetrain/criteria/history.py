"""Criteria that read weights remembered earlier: fasterai's pruning criteria.

``w`` is the current weight, ``w0`` the weight stored by
:func:`sparsetrain.ops.remember_weights` (compose ``remember_weights("w0")``
into the method's init), ``w_prev`` the weight at the previous mask
computation (chain ``remember_weights("w_prev")`` after each mask
computation; before the first one, ``w0`` stands in, as in fasterai). Scores
are the raw formulas of the blog-era code: fasterai's later positive shift
and multiplication by the old mask are the mask ops' job here (candidates).
fasterai's ``large_final``, ``small_final``, ``grad`` and ``random`` read no
history: they live in :mod:`sparsetrain.criteria.weights` (``large_final`` and
``grad`` as aliases of ``magnitude`` and ``taylor``). See docs/algorithms.md,
"Pruning criteria".

Example (hand-worked; w0 = [1, -2, 0.5, 3], w = [2, -1, -0.5, 3], g = [0.5, 1, 2, 0]):
    >>> from torch import nn
    >>> from sparsetrain.context import SparseContext
    >>> from sparsetrain.criteria import get_criterion
    >>> from sparsetrain.ops import remember_weights
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
from sparsetrain.criteria.base import criterion
from sparsetrain.errors import SparsetrainError

#: fasterai's criterion names, all registered (large_final, small_final and grad in criteria.weights)
FASTERAI_CRITERIA = (
    "large_final", "small_final", "large_init", "small_init", "large_init_large_final", "small_init_small_final",
    "magnitude_increase", "movement", "updating_movement", "updating_magnitude_increase", "movmag", "grad",
)


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


@criterion("large_init", remembers=("w0",))
def large_init(ctx: SparseContext, name: str) -> Tensor:
    """|w0|: keep the weights that were large at init (w0 = [1, -2] -> [1, 2])."""
    return _w0(ctx, name).abs()


@criterion("small_init", remembers=("w0",))
def small_init(ctx: SparseContext, name: str) -> Tensor:
    """-|w0| (w0 = [1, -2] -> [-1, -2])."""
    return -_w0(ctx, name).abs()


@criterion("large_init_large_final", remembers=("w0",))
def large_init_large_final(ctx: SparseContext, name: str) -> Tensor:
    """min(|w0|, |w|): large at init and now (w0 = [1, -2], w = [2, -1] -> [1, 1])."""
    return torch.minimum(_w0(ctx, name).abs(), _w(ctx, name).abs())


@criterion("small_init_small_final", remembers=("w0",))
def small_init_small_final(ctx: SparseContext, name: str) -> Tensor:
    """-max(|w0|, |w|): small at init and now (w0 = [1, -2], w = [2, -1] -> [-2, -2])."""
    return -torch.maximum(_w0(ctx, name).abs(), _w(ctx, name).abs())


@criterion("magnitude_increase", remembers=("w0",))
def magnitude_increase(ctx: SparseContext, name: str) -> Tensor:
    """|w| - |w0|: keep the weights that grew (w0 = [1, -2], w = [2, -1] -> [1, -1])."""
    return _w(ctx, name).abs() - _w0(ctx, name).abs()


@criterion("movement", remembers=("w0",))
def movement(ctx: SparseContext, name: str) -> Tensor:
    """|w - w0|: keep the weights that moved most (w0 = [1, -2], w = [2, -1] -> [1, 1])."""
    return (_w(ctx, name) - _w0(ctx, name)).abs()


@criterion("updating_movement", remembers=("w0", "w_prev"))
def updating_movement(ctx: SparseContext, name: str) -> Tensor:
    """|w - w_prev|, movement since the previous mask computation (w_prev = [2, 0], w = [2, -1] -> [0, 1])."""
    return (_w(ctx, name) - _w_prev(ctx, name)).abs()


@criterion("updating_magnitude_increase", remembers=("w0", "w_prev"))
def updating_magnitude_increase(ctx: SparseContext, name: str) -> Tensor:
    """|w| - |w_prev| (w_prev = [2, 0], w = [2, -1] -> [0, 1])."""
    return _w(ctx, name).abs() - _w_prev(ctx, name).abs()


@criterion("movmag", remembers=("w0",))
def movmag(ctx: SparseContext, name: str) -> Tensor:
    """|w * (w - w0)| (fasterai HEAD; w0 = [1, -2], w = [2, -1] -> [2, 1])."""
    w = _w(ctx, name)
    return (w * (w - _w0(ctx, name))).abs()
