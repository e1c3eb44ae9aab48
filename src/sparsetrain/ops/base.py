"""Op and Update: the two building blocks a method is composed of."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from sparsetrain.cadence import Cadence
from sparsetrain.context import SparseContext

Event = dict[str, Any]


@dataclass(frozen=True)
class Op:
    """A named mask transformation.

    Attributes:
        fn: ``ctx -> event`` (may return None); it edits ``ctx.masks`` in place.
        needs_grad: whether ``fn`` reads ``ctx.grads`` (the engine then snapshots
            the dense gradient of the batch before masking it).
        name: shown in logs and ``repr``.

    Example:
        >>> noop = Op(lambda ctx: {"did": "nothing"}, name="noop")
        >>> noop.name
        'noop'
    """

    fn: Callable[[SparseContext], Event | None]
    needs_grad: bool = False
    name: str = "op"

    def __call__(self, ctx: SparseContext) -> Event:
        return self.fn(ctx) or {}


@dataclass(frozen=True)
class Dropper:
    """The drop half of a topology update: ``fn(ctx) -> {name: weights removed}`` (it edits ``ctx.masks``).

    Example:
        >>> keep_all = Dropper(lambda ctx: {}, name="none")
        >>> keep_all.needs_grad, keep_all.name
        (False, 'none')
    """

    fn: Callable[[SparseContext], dict[str, int]]
    needs_grad: bool = False
    name: str = "drop"

    def __call__(self, ctx: SparseContext) -> dict[str, int]:
        return self.fn(ctx)

    def as_op(self) -> Op:
        """This drop on its own, as an op whose event is ``{"dropped": total}`` (a drop half of a chain).

        Example:
            >>> Dropper(lambda ctx: {"w": 2, "v": 1}, name="two").as_op()(None)
            {'dropped': 3}
        """
        return Op(lambda ctx: {"dropped": sum(self(ctx).values())}, needs_grad=self.needs_grad, name=self.name)


@dataclass(frozen=True)
class Grower:
    """The grow half: ``fn(ctx, removed, before) -> {name: weights grown}``.

    ``removed`` is what the dropper took per layer and ``before`` the masks
    before it (a redistribution statistic reads them; default: the current masks).

    Example:
        >>> nothing = Grower(lambda ctx, removed, before: {n: 0 for n in removed}, name="none")
        >>> nothing(None, {"w": 3}, before={})
        {'w': 0}
    """

    fn: Callable[[SparseContext, dict[str, int], dict[str, Any]], dict[str, int]]
    needs_grad: bool = False
    name: str = "grow"

    def __call__(self, ctx: SparseContext, removed: dict[str, int],
                 before: dict[str, Any] | None = None) -> dict[str, int]:
        return self.fn(ctx, removed, ctx.masks if before is None else before)


@dataclass(frozen=True)
class Update:
    """An op that runs after optimizer step ``t`` whenever ``cadence(t, total)``."""

    cadence: Cadence
    op: Op

    def due(self, step: int, total: int) -> bool:
        return self.cadence(step, total)


@dataclass(frozen=True)
class Shrink:
    """How a method lets the engine narrow the model while it trains (``attach(..., shrink=True)``).

    A method that empties whole channels *for good* declares it with this; one
    without it has nothing to shrink.

    Attributes:
        frozen: ``ctx -> {parameter name: bool}``: positions that will never be
            active again (a removed channel's rows and columns). A channel is
            narrowed away only when every weight slice that produces or reads
            it is frozen, so a channel the method may still regrow into stays.
        narrow: ``(ctx, keep) -> None``: narrows the method's own state that is
            not filed under a parameter's name (e.g. a per-channel plan);
            ``keep`` is ``{parameter name: {dim: kept indices}}``. State filed
            under a parameter's name and shaped like it is narrowed generically.
        due: ``(step, total) -> bool``: the default shrink cadence (e.g. right
            after each channel-removal event).

    Example:
        >>> never = Shrink(frozen=lambda ctx: {}, due=lambda step, total: False)
        >>> never.narrow is None
        True
    """

    frozen: Callable[[SparseContext], dict[str, Any]]
    due: Cadence
    narrow: Callable[[SparseContext, dict[str, dict[int, Any]]], None] | None = None


def when(cadence: Cadence, op: Op) -> Update:
    """Schedule ``op`` on ``cadence`` (optax-style combinator)."""
    return Update(cadence, op)


def chain(*ops: Op, name: str | None = None) -> Op:
    """Run ``ops`` in order as one op; their events are merged (later keys win)."""
    def run(ctx: SparseContext) -> Event:
        event: Event = {}
        for op in ops:
            event.update(op(ctx))
        return event
    return Op(run, needs_grad=any(op.needs_grad for op in ops), name=name or "+".join(o.name for o in ops))


def on_layers(select: Callable[[SparseContext], list[str]], op: Op) -> Op:
    """Run ``op`` on the layers ``select(ctx)`` names only; every other layer keeps its mask.

    Example:
        >>> from sparsetrain import ops
        >>> ops.on_layers(lambda ctx: ["0.weight"], ops.prune_to(lambda t, T: 0.5)).name
        'prune_to[global] on some layers'
    """
    def run(ctx: SparseContext) -> Event:
        names = select(ctx)
        sub = replace(ctx, params={n: ctx.params[n] for n in names}, masks={n: ctx.masks[n] for n in names})
        event = op(sub)
        ctx.masks.update(sub.masks)
        return event
    return Op(run, needs_grad=op.needs_grad, name=f"{op.name} on some layers")


def apply_masks() -> Op:
    """Zero weights and optimizer state where masks are off, in the middle of an update.

    Put it between the drop and the grow half of a composition whose original
    code calls ``apply_mask`` there (Chase's ``truncate_weights``, MEST): a weight
    dropped by the first half and chosen again by the second then restarts at 0
    with zero optimizer state, as a regrown weight should. Without it, a weight
    dropped and regrown in one op keeps its value (RigL's ``reinit_when_same=False``,
    GraNet's ``truncate_weights``). docs/algorithms.md, "Regrown weights".

    Example:
        >>> from sparsetrain import ops
        >>> ops.chain(ops.prune_to(lambda t, T: 0.5), apply_masks(), ops.grow_to(lambda ctx: {})).name
        'prune_to[global]+apply_masks+grow_to'
    """
    def run(ctx: SparseContext) -> None:
        ctx.zero_inactive()
    return Op(run, name="apply_masks")
