"""One registry for every kind of named thing: methods, models, datasets, criteria, schedules, ...

A :class:`Registry` maps names to objects, declares aliases as aliases (one
object, several names), refuses a second registration under a taken name
(a silent overwrite would swap a method under a user's feet), lists names by
glob and looks names up with the house error (:func:`errors.unknown_choice`,
which suggests close names). ``sparsetrain list KIND`` prints any of them.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from sparsetrain.errors import SparsetrainError, unknown_choice

T = TypeVar("T")

#: every registry by its kind ("method", "criterion", ...), for the CLI's listing
REGISTRIES: dict[str, Registry] = {}


class Registry(Generic[T]):
    """Named objects of one kind.

    Args:
        kind: what the objects are, as the error messages call them ("criterion").

    Example:
        >>> shapes = Registry("shape")
        >>> @shapes.register("square", aliases=("quad",))
        ... def square(x): return x * x
        >>> shapes.get("quad")(3), shapes.names(), shapes.canonical("quad")
        (9, ['square'], 'square')
        >>> shapes.register("square", abs)
        Traceback (most recent call last):
        ...
        sparsetrain.errors.SparsetrainError: a shape named 'square' is already registered; ...
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}
        self._aliases: dict[str, str] = {}
        REGISTRIES.setdefault(kind, self)

    def register(self, name: str, obj: T | None = None, *, aliases: tuple[str, ...] = ()):
        """Register ``obj`` under ``name`` (and ``aliases``); without ``obj``, a decorator."""
        def add(item: T) -> T:
            for taken in (name, *aliases):
                if taken in self._items or taken in self._aliases:
                    raise SparsetrainError(f"a {self.kind} named {taken!r} is already registered; choose another "
                                           f"name (or unregister the old one first).")
            self._items[name] = item
            for alias in aliases:
                self._aliases[alias] = name
            return item
        return add if obj is None else add(obj)

    def unregister(self, name: str) -> None:
        """Remove ``name`` and its aliases (a test's or a procedure's temporary entry)."""
        self._items.pop(name, None)
        self._aliases = {a: n for a, n in self._aliases.items() if n != name}

    def snapshot(self) -> tuple[dict[str, T], dict[str, str]]:
        """The current entries, for :meth:`restore` (tests and doc pages that register their own)."""
        return dict(self._items), dict(self._aliases)

    def restore(self, snapshot: tuple[dict[str, T], dict[str, str]]) -> None:
        """Go back to a :meth:`snapshot`."""
        self._items, self._aliases = dict(snapshot[0]), dict(snapshot[1])

    def canonical(self, name: str) -> str:
        """The registered name behind ``name`` (itself, or the name an alias stands for)."""
        name = self._aliases.get(name, name)
        if name not in self._items:
            raise unknown_choice(self.kind, name, [*self._items, *self._aliases])
        return name

    def get(self, name: str) -> T:
        """The object registered under ``name`` or one of its aliases."""
        return self._items[self.canonical(name)]

    def names(self, pattern: str = "*", aliases: bool = False) -> list[str]:
        """Sorted names matching the glob ``pattern`` (aliases too when asked)."""
        pool = [*self._items, *self._aliases] if aliases else list(self._items)
        return sorted(n for n in pool if fnmatch.fnmatchcase(n, pattern))

    def aliases(self) -> dict[str, str]:
        """``{alias: name}``."""
        return dict(self._aliases)

    def items(self) -> Iterator[tuple[str, T]]:
        """``(name, object)`` pairs in name order."""
        return iter(sorted(self._items.items()))

    def __contains__(self, name: object) -> bool:
        return name in self._items or name in self._aliases

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)


def lookup(registry: Registry[T], name: str | T, is_object: Callable[[object], bool] = callable) -> T:
    """``registry.get(name)`` for a name; an object (a user's own function) is returned as is.

    Example:
        >>> r = Registry("example")
        >>> _ = r.register("neg", lambda x: -x)
        >>> lookup(r, "neg")(2), lookup(r, abs)(-2)
        (-2, 2)
    """
    if isinstance(name, str):
        return registry.get(name)
    if is_object(name):
        return name  # type: ignore[return-value]
    raise SparsetrainError(f"a {registry.kind} is a name ({', '.join(registry.names())}) or a function, "
                           f"got {name!r}.")
