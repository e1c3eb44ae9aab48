"""Criteria that read the weights and the current batch's gradient.

Example:
    >>> import torch
    >>> from torch import nn
    >>> from sparsetrain.criteria import get_criterion
    >>> p = nn.Parameter(torch.tensor([2.0, -1.0, -0.5, 3.0]))
    >>> ctx = SparseContext({"w": p}, {}, None, 10, torch.Generator())
    >>> ctx.grads["w"] = torch.tensor([0.5, 1.0, 2.0, 0.0])
    >>> for crit in ("magnitude", "small_final", "gradient", "taylor"):
    ...     print(crit, get_criterion(crit)(ctx, "w").tolist())
    magnitude [2.0, 1.0, 0.5, 3.0]
    small_final [-2.0, -1.0, -0.5, -3.0]
    gradient [0.5, 1.0, 2.0, 0.0]
    taylor [1.0, 1.0, 1.0, 0.0]
"""

from __future__ import annotations

import torch
from torch import Tensor

from sparsetrain.context import SparseContext
from sparsetrain.criteria.base import Criterion, criterion


@criterion("magnitude", aliases=("large_final",))
def magnitude(ctx: SparseContext, name: str) -> Tensor:
    """|w| (magnitude death; fasterai's ``large_final``: w = [2, -1] -> [2, 1])."""
    return ctx.params[name].detach().abs()


@criterion("small_final")
def small_final(ctx: SparseContext, name: str) -> Tensor:
    """-|w|: keep the small final weights (fasterai; w = [2, -1] -> [-2, -1])."""
    return -ctx.params[name].detach().abs()


@criterion("gradient", needs_grad=True)
def gradient(ctx: SparseContext, name: str) -> Tensor:
    """|dL/dw| of the current batch (RigL growth)."""
    return ctx.grad(name).abs()


@criterion("random")
def random(ctx: SparseContext, name: str) -> Tensor:
    """Uniform random scores (SET growth); exact-count once ranked."""
    return ctx.rand(name)


@criterion("taylor", needs_grad=True, aliases=("grad",))
def taylor(ctx: SparseContext, name: str) -> Tensor:
    """(w * g)^2: ITOP/Chase's ``Taylor_FO`` death, fasterai's ``grad`` (w = [2, -1], g = [0.5, 1] -> [1, 1])."""
    return (ctx.params[name].detach() * ctx.grad(name)).pow(2)


@criterion("set")
def set_sign_rank(ctx: SparseContext, name: str) -> Tensor:
    """SET's intended death rule as a score (fixed on purpose: docs/algorithms.md, "Pruning criteria").

    The SET paper removes the r/2 smallest positive weights and the r/2
    negative weights closest to zero; every shipped version got the negative
    side wrong. Here a weight's score is its rank by |w| inside its own sign
    group, so removing the k lowest scores takes alternately from the two
    groups: ceil(k/2) positives and floor(k/2) negatives when both have enough.
    """
    w = ctx.params[name].detach().flatten()
    active = ctx.masks[name].flatten()
    score = torch.full_like(w, float("inf"))
    # positives get even scores and negatives odd ones: ties go to the positive side
    for offset, group in ((0, active & (w > 0)), (1, active & (w <= 0))):
        idx = torch.nonzero(group).flatten()
        order = torch.argsort(w[idx].abs(), stable=True)
        ranks = torch.empty_like(order)
        ranks[order] = torch.arange(order.numel(), device=w.device)
        score[idx] = (ranks * 2 + offset).to(w.dtype)
    return score.view_as(ctx.params[name])


def mest_score(lam: float) -> Criterion:
    """MEST drop score |w| + lambda * |g| (docs/algorithms.md, "MEST")."""
    def score(ctx: SparseContext, name: str) -> Tensor:
        """|w| + lambda |g|."""
        return ctx.params[name].detach().abs() + lam * ctx.grad(name).abs()
    return Criterion(score, "mest", needs_grad=lam != 0)
