"""Criteria: ``(ctx, name) -> scores``, higher = more important (kept / grown first).

A drop op removes the lowest scores among active weights; a grow op activates
the highest scores among inactive ones; a prune op keeps the top of all. Every
criterion is registered once here, under one name plus declared aliases, and
any op or method that takes a criterion accepts every registered name or a
function of your own. The modules are split by what a criterion reads:

- :mod:`~sparsetrain.criteria.weights`: the weights and the current batch's
  gradient (``magnitude``, ``gradient``, ``taylor``, ``random``, SET's ``set``);
- :mod:`~sparsetrain.criteria.history`: weights remembered earlier (fasterai's
  ``*_init``, ``movement``, ``updating_*``);
- :mod:`~sparsetrain.criteria.optimizer`: the optimizer's state or a gradient
  EMA (SNFS's ``momentum``).

Adding a criterion is one decorated function (``@criterion("name")``) in any
file: every method's ``prune=`` / ``growth=`` option takes it from then on. The
list and the paper behind each is in ``docs/algorithms.md``.

Example:
    >>> get_criterion("large_final") is get_criterion("magnitude")
    True
    >>> needs_grad("taylor"), "grad" in list_criteria(aliases=True)
    (True, True)
"""

from __future__ import annotations

from sparsetrain.criteria import history, optimizer, weights  # noqa: F401  (they register on import)

# the registry lives in criteria.base, not here: a package __init__ may be imported twice (pytest's importlib mode)
from sparsetrain.criteria.base import (
    CRITERIA,
    Criterion,
    ScoreFn,
    criterion,
    get_criterion,
    list_criteria,
    needs_grad,
)
from sparsetrain.criteria.weights import mest_score

__all__ = ["CRITERIA", "Criterion", "ScoreFn", "criterion", "get_criterion", "list_criteria", "mest_score",
           "needs_grad"]
