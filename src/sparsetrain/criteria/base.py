"""The criterion registry, the :class:`Criterion` record and its decorator (see :mod:`sparsetrain.criteria`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import Tensor

from sparsetrain.context import SparseContext
from sparsetrain.core.registry import Registry, lookup

ScoreFn = Callable[[SparseContext, str], Tensor]


@dataclass(frozen=True)
class Criterion:
    """A scoring rule, ``(ctx, name) -> scores`` (higher = more important), and what it reads.

    Args:
        score: the function.
        name: its registered name (or the function's own name).
        needs_grad: it reads ``ctx.grad(name)``, the dense gradient of the
            current batch (the engine then keeps it for the op).
        remembers: the weight snapshots it reads from ``ctx.state``
            (``"w0"``, ``"w_prev"``), which a method must store with
            ``ops.remember_weights``; empty for rules that read only the present.

    Example:
        >>> c = Criterion(lambda ctx, name: ctx.params[name].abs(), "abs")
        >>> c.name, c.needs_grad, c.remembers
        ('abs', False, ())
    """

    score: ScoreFn
    name: str
    needs_grad: bool = False
    remembers: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # it stands where a function used to: listings, help() and error messages read these
        object.__setattr__(self, "__doc__", self.score.__doc__)
        object.__setattr__(self, "__name__", self.name)

    def __call__(self, ctx: SparseContext, name: str) -> Tensor:
        return self.score(ctx, name)


CRITERIA: Registry[Criterion] = Registry("criterion")


def criterion(name: str, needs_grad: bool = False, aliases: tuple[str, ...] = (),
              remembers: tuple[str, ...] = ()) -> Callable[[ScoreFn], Criterion]:
    """Register a scoring function under ``name`` (and ``aliases``) as a :class:`Criterion`.

    Args:
        name: the registered name.
        needs_grad: the function reads the current batch's dense gradient.
        aliases: other names for the same rule (fasterai's, for example).
        remembers: the ``ctx.state`` weight snapshots it reads (see :class:`Criterion`).

    Example:
        >>> @criterion("demo_abs")
        ... def demo_abs(ctx, name):
        ...     '''|w|.'''
        ...     return ctx.params[name].abs()
        >>> get_criterion("demo_abs").needs_grad, demo_abs.__doc__
        (False, '|w|.')
        >>> CRITERIA.unregister("demo_abs")
    """
    def register(fn: ScoreFn) -> Criterion:
        return CRITERIA.register(name, Criterion(fn, name, needs_grad, remembers), aliases=aliases)
    return register


def get_criterion(name: str | Criterion | ScoreFn) -> Criterion:
    """Look a criterion up by name or alias; a function of your own becomes a :class:`Criterion`
    (``needs_grad`` read from its attribute of that name, if any).

    Example:
        >>> get_criterion("magnitude").__name__
        'magnitude'
    """
    found = lookup(CRITERIA, name)
    if isinstance(found, Criterion):
        return found
    return Criterion(found, getattr(found, "__name__", "criterion"), bool(getattr(found, "needs_grad", False)))


def needs_grad(crit: str | Criterion | ScoreFn) -> bool:
    """Whether a criterion reads the dense gradient of the current batch."""
    return get_criterion(crit).needs_grad


def list_criteria(pattern: str = "*", aliases: bool = False) -> list[str]:
    """Names of the registered criteria matching a glob (with their aliases when asked)."""
    return CRITERIA.names(pattern, aliases=aliases)
