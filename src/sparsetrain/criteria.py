"""Criteria: ``(ctx, name) -> scores`` with higher = more important (keep / grow first).

ALGORITHMS.md 1.2 (death modes) and 1.3 (growth modes). A drop op removes the
lowest scores among active weights; a grow op activates the highest scores
among inactive ones.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from sparsetrain.context import SparseContext
from sparsetrain.errors import unknown_choice

Criterion = Callable[[SparseContext, str], Tensor]

_REGISTRY: dict[str, Criterion] = {}
#: criteria that read the current batch's dense gradient
GRADIENT_CRITERIA: set[str] = set()


def criterion(name: str, needs_grad: bool = False):
    """Register a scoring function under ``name``."""
    def register(fn: Criterion) -> Criterion:
        _REGISTRY[name] = fn
        fn.needs_grad = needs_grad  # type: ignore[attr-defined]
        if needs_grad:
            GRADIENT_CRITERIA.add(name)
        return fn
    return register


def get_criterion(name: str | Criterion) -> Criterion:
    """Look a criterion up by name (a callable is returned as is).

    Example:
        >>> get_criterion("magnitude").__name__
        'magnitude'
    """
    if callable(name):
        return name
    if name not in _REGISTRY:
        raise unknown_choice("criterion", name, _REGISTRY)
    return _REGISTRY[name]


def needs_grad(crit: str | Criterion) -> bool:
    """Whether a criterion reads the dense gradient of the current batch."""
    return bool(getattr(get_criterion(crit), "needs_grad", False))


@criterion("magnitude")
def magnitude(ctx: SparseContext, name: str) -> Tensor:
    """|w| (magnitude death, ALGORITHMS.md 1.2)."""
    return ctx.params[name].detach().abs()


@criterion("gradient", needs_grad=True)
def gradient(ctx: SparseContext, name: str) -> Tensor:
    """|dL/dw| of the current batch (RigL growth, ALGORITHMS.md 1.3)."""
    return ctx.grad(name).abs()


@criterion("random")
def random(ctx: SparseContext, name: str) -> Tensor:
    """Uniform random scores (SET growth); exact-count once ranked."""
    return ctx.rand(name)


@criterion("taylor", needs_grad=True)
def taylor(ctx: SparseContext, name: str) -> Tensor:
    """(w * g)^2, ITOP/Chase ``Taylor_FO`` death."""
    return (ctx.params[name].detach() * ctx.grad(name)).pow(2)


@criterion("momentum")
def momentum(ctx: SparseContext, name: str) -> Tensor:
    """|dense gradient EMA| (SNFS growth).

    Fixed on purpose (ALGORITHMS.md 0): ITOP/GraNet/Chase mask the SGD momentum
    buffer, so momentum growth there sees zeros at every inactive position.
    We read a dense EMA of gradients kept by the method's observer instead
    (``state["grad_ema"][name]``), falling back to Adam's m / (sqrt(v) + 1e-8)
    or SGD's buffer only if no EMA is kept.
    """
    ema = ctx.state.get("grad_ema", {})
    if name in ema:
        return ema[name].abs()
    opt_state = ctx.optimizer.state.get(ctx.params[name], {}) if ctx.optimizer else {}
    if "exp_avg" in opt_state and "exp_avg_sq" in opt_state:
        return (opt_state["exp_avg"] / (opt_state["exp_avg_sq"].sqrt() + 1e-8)).abs()
    if opt_state.get("momentum_buffer") is not None:
        return opt_state["momentum_buffer"].abs()
    return torch.zeros_like(ctx.params[name])


def set_sign_rank(ctx: SparseContext, name: str) -> Tensor:
    """SET's intended death rule as a score (ALGORITHMS.md 1.2, fixed on purpose).

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


_REGISTRY["set"] = set_sign_rank


def mest_score(lam: float) -> Criterion:
    """MEST drop score |w| + lambda * |g| (ALGORITHMS.md 4; paper-level, see there)."""
    def score(ctx: SparseContext, name: str) -> Tensor:
        return ctx.params[name].detach().abs() + lam * ctx.grad(name).abs()
    score.needs_grad = lam != 0  # type: ignore[attr-defined]
    return score


def list_criteria() -> list[str]:
    """Names of the registered criteria."""
    return sorted(_REGISTRY)
