"""The criterion registry and its decorator (see :mod:`sparsetrain.criteria`)."""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor

from sparsetrain.context import SparseContext
from sparsetrain.core.registry import Registry, lookup

Criterion = Callable[[SparseContext, str], Tensor]

CRITERIA: Registry[Criterion] = Registry("criterion")


def criterion(name: str, needs_grad: bool = False, aliases: tuple[str, ...] = ()):
    """Register a scoring function under ``name`` (and ``aliases``).

    Args:
        name: the registered name.
        needs_grad: the function reads ``ctx.grad(name)``, the dense gradient
            of the current batch (the engine then keeps it for the op).
        aliases: other names for the same function (fasterai's, for example).
    """
    def register(fn: Criterion) -> Criterion:
        fn.needs_grad = needs_grad  # type: ignore[attr-defined]
        return CRITERIA.register(name, fn, aliases=aliases)
    return register


def get_criterion(name: str | Criterion) -> Criterion:
    """Look a criterion up by name or alias (a callable is returned as is).

    Example:
        >>> get_criterion("magnitude").__name__
        'magnitude'
    """
    return lookup(CRITERIA, name)


def needs_grad(crit: str | Criterion) -> bool:
    """Whether a criterion reads the dense gradient of the current batch."""
    return bool(getattr(get_criterion(crit), "needs_grad", False))


def list_criteria(pattern: str = "*", aliases: bool = False) -> list[str]:
    """Names of the registered criteria matching a glob (with their aliases when asked)."""
    return CRITERIA.names(pattern, aliases=aliases)
