"""Curves: ``(start, end, pos) -> value``, the shape of a schedule inside its window.

``pos`` in [0, 1] is the position inside the window. The curves are
unit-free: the same cubic gives GMP's density and fasterai's sparsity. They
are registered under fasterai's names (docs/algorithms.md, "The
pruning-schedule study"); the cubic is also ``cubic`` and the cosine
``cosine``. Training schedules (:mod:`.training`) are built from these, so
there is one cubic and one cosine in the library.

Example:
    >>> get_curve("cubic") is agp, [round(cos(0.0, 0.8, p), 12) for p in (0.0, 0.5, 1.0)]
    (True, [0.0, 0.4, 0.8])
"""

from __future__ import annotations

import math
from collections.abc import Callable

from sparsetrain.core.registry import Registry, lookup
from sparsetrain.errors import SparsetrainError

#: ``(start, end, pos) -> value``
SparsityFn = Callable[[float, float, float], float]

CURVES: Registry[SparsityFn] = Registry("schedule curve")


def one_shot(start: float, end: float, pos: float) -> float:
    """All at once: ``end`` anywhere in the window (fasterai preset start 0.5).

    Example:
        >>> one_shot(0.0, 0.9, 0.0), one_shot(0.0, 0.9, 1.0)
        (0.9, 0.9)
    """
    return end


def iterative(start: float, end: float, pos: float, n_steps: int = 3) -> float:
    """``n_steps`` equal jumps: start + (end - start) / n * ceil(n * pos).

    Example:
        >>> [round(iterative(0.0, 0.9, p), 6) for p in (0.0, 0.1, 1 / 3, 0.5, 1.0)]
        [0.0, 0.3, 0.3, 0.6, 0.9]
    """
    # round first so that 3 * (1/3) = 1.0000000000000002 does not jump one step early
    return start + (end - start) / n_steps * math.ceil(round(n_steps * pos, 9))


def agp(start: float, end: float, pos: float) -> float:
    """Zhu & Gupta's cubic: end + (start - end)(1 - pos)^3, GMP's density schedule and fasterai's ``agp``.

    This is the fixed formula: fasterai's 2021 code read ``end + start - end *
    (1 - pos) ** 3`` (missing parenthesis), right only for start = 0; fixed
    upstream on 2021-10-04 ("fix agp").

    Example:
        >>> agp(0.0, 0.8, 0.0), round(agp(0.0, 0.8, 0.5), 12), agp(0.2, 0.8, 1.0)
        (0.0, 0.7, 0.8)
    """
    return end + (start - end) * (1.0 - pos) ** 3


def lin(start: float, end: float, pos: float) -> float:
    """fastai's SchedLin: start + pos (end - start).

    Example:
        >>> lin(0.0, 0.8, 0.25)
        0.2
    """
    return start + pos * (end - start)


def cos(start: float, end: float, pos: float) -> float:
    """The cosine from ``start`` (pos 0) to ``end`` (pos 1): end + (start - end)(1 + cos(pi pos)) / 2.

    fastai's SchedCos, written as RigL's and sparse_learning's cosine decay
    (:func:`~sparsetrain.schedules.training.cosine_decay` is this curve).

    Example:
        >>> cos(0.0, 0.8, 0.0), round(cos(0.0, 0.8, 0.5), 12), cos(0.0, 0.8, 1.0)
        (0.0, 0.4, 0.8)
    """
    return end + (start - end) * (1.0 + math.cos(math.pi * pos)) / 2.0


def exp(start: float, end: float, pos: float) -> float:
    """fastai's SchedExp: start (end / start)^pos; needs start > 0.

    The blog passes ``start_sparsity=0.0001`` (percent) for this reason.

    Example:
        >>> round(exp(0.01, 0.64, 0.5), 12)
        0.08
    """
    if start <= 0.0:
        raise SparsetrainError(
            f"the 'exp' sparsity schedule needs start_sparsity > 0 (it computes start * (end/start)**pos), "
            f"got {start!r}; fasterai's blog uses a tiny start such as 1e-6 (0.0001%)."
        )
    return start * (end / start) ** pos


def one_cycle(start: float, end: float, pos: float, alpha: float = 14.0, beta: float = 5.0) -> float:
    """One-Cycle pruning: start + (end - start)(1 + e^(beta-alpha)) / (1 + e^(beta - alpha pos)).

    Defaults alpha=14, beta=5 are the blog's (and the study's); fasterai's
    library code uses beta=6 (pass ``functools.partial(one_cycle, beta=6)``).
    Note s(0) != start: s(0) - start = (1 + e^(beta-alpha))/(1 + e^beta)
    ~ 0.0067 of the range for beta=5 (0.0025 for beta=6). docs/algorithms.md, "The pruning-schedule study".

    Example:
        >>> round(one_cycle(0.0, 1.0, 0.0), 4), one_cycle(0.0, 0.9, 1.0)
        (0.0067, 0.9)
    """
    out = (1.0 + math.exp(beta - alpha)) / (1.0 + math.exp(beta - alpha * pos))
    return start + (end - start) * out


def dsd(start: float, end: float, pos: float) -> float:
    """Dense-sparse-dense: cosine up to ``end`` at pos 0.5, then cosine back to ``start``.

    Example:
        >>> dsd(0.0, 0.8, 0.0), dsd(0.0, 0.8, 0.5), round(dsd(0.0, 0.8, 0.75), 12), dsd(0.0, 0.8, 1.0)
        (0.0, 0.8, 0.4, 0.0)
    """
    if pos < 0.5:
        return cos(start, end, 2.0 * pos)
    return cos(end, start, 2.0 * pos - 1.0)


for _name, _fn, _aliases in (("one_shot", one_shot, ()), ("iterative", iterative, ()), ("agp", agp, ("cubic",)),
                              ("lin", lin, ("linear",)), ("cos", cos, ("cosine",)), ("exp", exp, ()),
                              ("one_cycle", one_cycle, ()), ("dsd", dsd, ())):
    CURVES.register(_name, _fn, aliases=_aliases)

#: the curves by fasterai's names (kept for the schedule study's code)
SPARSITY_SCHEDULES = CURVES


def get_curve(name: str | SparsityFn) -> SparsityFn:
    """Look a curve up by name or alias (a callable is returned as is).

    Example:
        >>> get_curve("cos") is cos
        True
    """
    return lookup(CURVES, name)


#: the name the schedule study's code used
get_sparsity_schedule = get_curve
