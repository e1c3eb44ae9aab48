"""Cadences: ``(step, total_steps) -> bool`` — is a topology update due after this step?"""

from __future__ import annotations

import math
from collections.abc import Callable

from sparsetrain.errors import SparsetrainError

Cadence = Callable[[int, int], bool]


def every(n: int, start: float = 0.0, end: float = 1.0, include_end: bool = False) -> Cadence:
    """Every ``n`` steps from ``start * total`` until ``end * total`` (fractions).

    ``include_end`` keeps an update that falls exactly on the end step (GMP's
    last event); by default the window is half-open, like rigl-torch's
    ``step < T_end``.

    Example:
        >>> due = every(10, end=0.5)
        >>> [t for t in range(1, 101) if due(t, 100)]
        [10, 20, 30, 40]
    """
    if int(n) < 1:
        raise SparsetrainError(f"update_every must be a positive number of steps, got {n!r}.")
    n = int(n)

    def due(step: int, total: int) -> bool:
        lo, hi = start * total, end * total
        in_window = lo <= step <= hi if include_end else lo <= step < hi
        return step > 0 and step % n == 0 and in_window
    return due


def epoch_end(steps_per_epoch: int, skip_last: bool = True) -> Cadence:
    """At the end of every epoch (sparse_learning's SNFS: all but the last).

    Example:
        >>> due = epoch_end(5)
        >>> [t for t in range(1, 21) if due(t, 20)]
        [5, 10, 15]
    """
    def due(step: int, total: int) -> bool:
        last = math.ceil(total / steps_per_epoch) * steps_per_epoch
        return step > 0 and step % steps_per_epoch == 0 and not (skip_last and step >= last)
    return due


def once_at(step_number: int) -> Cadence:
    """Exactly once, after optimizer step ``step_number``."""
    def due(step: int, total: int) -> bool:
        return step == step_number
    return due


def never(step: int, total: int) -> bool:
    """No update at all (static sparse training)."""
    return False


def any_of(*cadences: Cadence) -> Cadence:
    """Due when any of ``cadences`` is due."""
    def due(step: int, total: int) -> bool:
        return any(c(step, total) for c in cadences)
    return due
