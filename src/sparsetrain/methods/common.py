"""Pieces shared by the method builders: GraNet-style death / growth options, the gradient EMA."""

from __future__ import annotations

import torch
from torch import Tensor

from sparsetrain.cadence import Cadence
from sparsetrain.context import SparseContext
from sparsetrain.core.granularity import NMGranularity, get_granularity
from sparsetrain.criteria import CRITERIA, list_criteria
from sparsetrain.errors import SparsetrainError, check_count, check_density, unknown_choice
from sparsetrain.ops import init_random, prune_and_regrow, regrow
from sparsetrain.ops.base import Op, Shrink, Update, chain, when
from sparsetrain.ops.channels import close_empty_channels, empty_channel_plan, shrink_rule
from sparsetrain.ops.groups import nm_drop_and_grow
from sparsetrain.ops.prune import drop_below, drop_lowest
from sparsetrain.schedules import Schedule

#: death rules that are not a criterion (every registered criterion is one too, dropping its lowest scores)
DEATH_RULES = ("threshold",)
REDISTRIBUTION_MODES = ("none", "magnitude", "nonzeros", "momentum")


def death(prune: str, fraction: Schedule, rounding: str = "ceil", threshold: float = 1e-3, scope: str = "layer",
          granularity: str = "weight"):
    """The ``--prune`` / ``--death`` option as a dropper (docs/algorithms.md, "Death and growth").

    ``magnitude``: smallest |w|; ``set``: SET's intended sign-split rule
    (fixed on purpose, every shipped version was wrong); ``threshold``: all
    |w| <= ``threshold``; ``taylor``: smallest (w g)^2. Any other registered
    criterion (e.g. the schedule study's ``movement``, ``large_init``) drops
    its lowest scores.
    """
    if prune not in DEATH_RULES and prune not in CRITERIA:
        raise unknown_choice("prune mode", prune, [*DEATH_RULES, *list_criteria()])
    if prune == "threshold":
        if get_granularity(granularity).name != "weight":
            raise SparsetrainError(f"prune 'threshold' drops single weights; with granularity {granularity!r} "
                                   "use a criterion (magnitude, set, taylor, ...).")
        return drop_below(threshold)
    return drop_lowest(fraction, prune, rounding=rounding, scope=scope, granularity=granularity)


def regeneration(prune: str, growth: str, fraction: Schedule, redistribution: str = "none",
                 rounding: str = "ceil", threshold: float = 1e-3, granularity: str = "weight") -> Op:
    """Drop by ``prune`` and regrow the same total by ``growth``: one zero-cost DST update.

    Fixed on purpose (docs/algorithms.md, "Death and growth" quirk): GraNet's CIFAR code ignored
    ``--prune``, ``--growth`` and ``--redistribution``; here every option acts.
    With a ``granularity`` other than ``weight`` whole groups (kernels, rows,
    filters, blocks) are dropped and regrown, scored by their mean.
    """
    if growth not in CRITERIA:  # any registered criterion (or alias) can choose what grows
        raise unknown_choice("growth mode (a criterion)", growth, list_criteria())
    if redistribution not in REDISTRIBUTION_MODES:
        raise unknown_choice("redistribution", redistribution, REDISTRIBUTION_MODES)
    gran = get_granularity(granularity)
    if isinstance(gran, NMGranularity):  # N:M drops and grows inside each block of M together
        if prune == "threshold" or redistribution != "none":
            raise SparsetrainError(f"granularity {granularity!r} works with a prune criterion and redistribution "
                                   f"'none' (got prune={prune!r}, redistribution={redistribution!r}).")
        return nm_drop_and_grow(fraction, gran.n, gran.m, prune, growth, rounding)
    return prune_and_regrow(death(prune, fraction, rounding, threshold, granularity=granularity),
                            regrow(growth, redistribution, granularity=granularity))


def initial_mask(distribution: str, density: float, granularity: str = "weight", dense_first: bool = False) -> Op:
    """Exact-count random initial masks of single weights, of whole groups, or N:M (density N/M)."""
    return init_random(distribution, density, granularity=granularity, dense_first=dense_first)


#: granularities whose groups are whole output units: a layer's masks empty whole channels
CHANNEL_GRANULARITIES = ("filter",)


def channel_closing(granularity: str, init: Op, after: Cadence) -> tuple[Op, tuple[Update, ...], Shrink | None]:
    """Let a method that empties whole output channels shrink (``attach(..., shrink=True)``).

    Returns ``init`` with the channel plan, the closing update and the method's
    :class:`~sparsetrain.ops.base.Shrink` (Chase's rule: frozen = the closed channels' slices).
    ``after`` is when an empty channel is empty for good: after every update of a method
    whose masks only shrink (prune, GMP), from the first step of one that never changes them
    (static), after the last update of one that regrows (RigL, SET, DST). Another granularity
    (single weights, N:M) empties no channel on purpose: ``init`` unchanged, no update, no Shrink.

    Example:
        >>> from sparsetrain import cadence, ops
        >>> init, updates, rule = channel_closing("filter", ops.init_dense(), cadence.every(10))
        >>> init.name, [u.op.name for u in updates], rule is not None
        ('init_dense+empty_channel_plan', ['close_empty_channels'], True)
        >>> channel_closing("weight", ops.init_dense(), cadence.every(10))[2] is None
        True
    """
    if get_granularity(granularity).name not in CHANNEL_GRANULARITIES:
        return init, (), None
    return chain(init, empty_channel_plan()), (when(after, close_empty_channels()),), shrink_rule(after)


def after_window(end: float) -> Cadence:
    """Due once, at the first step at or after ``end * total``: the last update of a window ``t < end T``
    has passed.

    Example:
        >>> due = after_window(0.75)
        >>> [t for t in range(1, 101) if due(t, 100)]
        [75]
    """
    def due(step: int, total: int) -> bool:
        return step >= end * total and step - 1 < end * total
    return due


def grad_ema(momentum: float = 0.9):
    """Observer keeping a dense gradient EMA in ``state["grad_ema"]``.

    This is what momentum growth and momentum redistribution read (SNFS,
    docs/algorithms.md, "Conventions of the Masking family" and "Death and growth"): it sees every position, active or
    not, unlike a
    masked optimizer buffer. It is kept as ``e <- e + (1 - momentum) (g - e)``,
    one fused pass (``torch._foreach_lerp_``) instead of the two of
    ``m <- momentum m + g``: from zero, ``e = (1 - momentum) m`` up to rounding,
    and both readers are blind to that constant factor (growth ranks within a
    layer, redistribution compares layers' shares). A state saved before this
    form (no ``grad_ema_scaled`` flag) is rescaled once on its first step.

    Example:
        >>> import torch
        >>> from types import SimpleNamespace
        >>> ctx = SimpleNamespace(state={})
        >>> observe = grad_ema(0.9)
        >>> for g in (1.0, 1.0):
        ...     observe(ctx, {"w": torch.tensor([g])})
        >>> round(float(ctx.state["grad_ema"]["w"]), 6)  # (1 - 0.9) * (0.9 * 1 + 1)
        0.19
    """
    if isinstance(momentum, bool) or not 0.0 <= float(momentum) < 1.0:
        raise SparsetrainError(f"the gradient EMA's momentum must be in [0, 1) (e.g. 0.9), got {momentum!r}.")
    weight = 1.0 - float(momentum)

    def observe(ctx: SparseContext, grads: dict[str, Tensor]) -> None:
        ema = ctx.state.setdefault("grad_ema", {})
        if not ctx.state.get("grad_ema_scaled", False):
            if ema:  # a state from the two-pass form m <- momentum m + g: bring it to this scale
                torch._foreach_mul_(list(ema.values()), weight)
            ctx.state["grad_ema_scaled"] = True
        if len(ema) < len(grads) or not all(n in ema for n in grads):
            for name, g in grads.items():
                if name not in ema:
                    ema[name] = torch.zeros_like(g)
        torch._foreach_lerp_([ema[n] for n in grads], list(grads.values()), weight)
    return observe


def needs_ema(growth: str, redistribution: str) -> bool:
    """Whether the options read the dense gradient EMA."""
    return growth == "momentum" or redistribution == "momentum"


def check_window(start: float, end: float) -> None:
    """Fractions of training with 0 <= start < end <= 1."""
    if not 0.0 <= start < end <= 1.0:
        raise SparsetrainError(f"need 0 <= start < end <= 1 (fractions of training), got start={start}, "
                               f"end={end}.")


__all__ = ["CHANNEL_GRANULARITIES", "after_window", "channel_closing", "check_density", "check_count",
           "check_window", "death", "grad_ema", "initial_mask", "needs_ema", "regeneration"]
