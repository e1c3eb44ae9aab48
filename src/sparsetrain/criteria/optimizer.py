"""Criteria that read the optimizer's state or a gradient EMA a method keeps (SNFS's ``momentum``)."""

from __future__ import annotations

import torch
from torch import Tensor

from sparsetrain.context import SparseContext
from sparsetrain.criteria.base import criterion


def optimizer_momentum(ctx: SparseContext, name: str) -> Tensor | None:
    """|the optimizer's momentum| of a weight, or None when the optimizer keeps none.

    Adam-style optimizers give |m / (sqrt(v) + 1e-8)| (sparse_learning's
    ``get_momentum_for_weight``), SGD its |momentum buffer|.

    Example:
        >>> from torch import nn
        >>> p = nn.Parameter(torch.ones(2))
        >>> opt = torch.optim.SGD([p], lr=0.1, momentum=0.9)
        >>> ctx = SparseContext({"w": p}, {}, opt, 1, torch.Generator())
        >>> optimizer_momentum(ctx, "w") is None
        True
    """
    state = ctx.optimizer.state.get(ctx.params[name], {}) if ctx.optimizer else {}
    if "exp_avg" in state and "exp_avg_sq" in state:
        return (state["exp_avg"] / (state["exp_avg_sq"].sqrt() + 1e-8)).abs()
    if state.get("momentum_buffer") is not None:
        return state["momentum_buffer"].abs()
    return None


@criterion("momentum")
def momentum(ctx: SparseContext, name: str) -> Tensor:
    """|dense gradient EMA| (SNFS growth).

    Fixed on purpose (docs/algorithms.md, "Pruning criteria"): ITOP, GraNet
    and Chase mask the SGD momentum buffer, so momentum growth there sees
    zeros at every inactive position. We read a dense EMA of gradients
    kept by the method's observer instead (``state["grad_ema"][name]``),
    falling back to :func:`optimizer_momentum` only if no EMA is kept.
    """
    ema = ctx.state.get("grad_ema", {})
    if name in ema:
        return ema[name].abs()
    from_optimizer = optimizer_momentum(ctx, name)
    return from_optimizer if from_optimizer is not None else torch.zeros_like(ctx.params[name])
