"""The method type and its timm-style registry (``register_method``, ``list_methods``, ``create_method``)."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

from sparsetrain.context import SparseContext
from sparsetrain.core.registry import Registry
from sparsetrain.errors import SparsetrainError
from sparsetrain.ops.base import Op, Shrink, Update

#: called before every optimizer step with the dense gradients (e.g. SNFS's EMA)
Observer = Callable[[SparseContext, dict[str, Tensor]], None]


@dataclass
class Method:
    """A sparse-training method: an initial topology, scheduled updates, per-step observers and,
    for a method that empties channels for good, how the model may be narrowed while it trains.

    Example:
        >>> from sparsetrain import ops
        >>> m = Method(init=ops.init_random("erk", 0.1), name="static")
        >>> m.name, len(m.updates)
        ('static', 0)
    """

    init: Op
    updates: tuple[Update, ...] = ()
    observers: tuple[Observer, ...] = ()
    name: str = "custom"
    config: dict[str, Any] = field(default_factory=dict)
    #: set by methods that empty whole channels for good (``attach(..., shrink=True)``)
    shrink: Shrink | None = None

    def due(self, step: int, total: int) -> list[Update]:
        """The updates that run after optimizer step ``step``."""
        return [u for u in self.updates if u.due(step, total)]


@dataclass(frozen=True)
class _Entry:
    builder: Callable[..., Method]
    info: dict[str, str]


METHODS: Registry[_Entry] = Registry("method")


def register_method(name: str, *, family: str = "", paper: str = ""):
    """Register a builder function ``(**hyperparameters) -> Method`` under ``name``.

    The builder's typed signature is the method's config schema (recipes, CLI).

    Example:
        >>> @register_method("my_static", family="static")
        ... def my_static(density: float = 0.1) -> Method:
        ...     from sparsetrain import ops
        ...     return Method(init=ops.init_random("erk", density))
        >>> "my_static" in list_methods("my_*")
        True
    """
    def register(builder: Callable[..., Method]) -> Callable[..., Method]:
        METHODS.register(name, _Entry(builder, {"family": family, "paper": paper,
                                                "summary": (inspect.getdoc(builder) or "").split("\n")[0]}))
        return builder
    return register


def unregister_method(name: str) -> None:
    """Remove a registered method (a procedure's temporary method, a test's own).

    Example:
        >>> _ = register_method("tmp_static")(lambda density=0.1: None)
        >>> unregister_method("tmp_static"); "tmp_static" in list_methods()
        False
    """
    METHODS.unregister(name)


def list_methods(pattern: str = "*") -> list[str]:
    """Registered method names matching a glob ``pattern`` (e.g. ``"*rig*"``)."""
    return METHODS.names(pattern)


def method_info(name: str) -> dict[str, str]:
    """Family, paper and one-line summary of a registered method."""
    return dict(METHODS.get(name).info)


def method_signature(name: str) -> inspect.Signature:
    """The builder's signature: argument names, defaults and types."""
    return inspect.signature(METHODS.get(name).builder)


def _primitive(value: Any) -> Any:
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    if isinstance(value, (list, tuple)):
        return [_primitive(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _primitive(v) for k, v in value.items()}
    return repr(value)


def create_method(name: str, **kwargs: Any) -> Method:
    """Build a registered method; unknown arguments get a clear error listing the valid ones.

    Example:
        >>> create_method("static", density=0.2).config["density"]
        0.2
    """
    builder = METHODS.get(name).builder
    sig = inspect.signature(builder)
    unknown = [k for k in kwargs if k not in sig.parameters]
    if unknown:
        valid = ", ".join(sig.parameters)
        raise SparsetrainError(f"method {name!r} has no argument {', '.join(map(repr, unknown))}. "
                               f"Its arguments are: {valid}.")
    bound = sig.bind(**kwargs)
    bound.apply_defaults()
    method = builder(**kwargs)
    method.name = name
    method.config = {k: _primitive(v) for k, v in bound.arguments.items()}
    return method
