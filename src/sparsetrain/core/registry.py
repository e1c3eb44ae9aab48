"""One registry for every kind of named thing: methods, models, datasets, criteria, schedules, ...

A :class:`Registry` maps names to objects, declares aliases as aliases (one
object, several names), refuses a second registration under a taken name
(a silent overwrite would swap a method under a user's feet), lists names by
glob and looks names up with the house error (:func:`errors.unknown_choice`,
which suggests close names). A registry may also hold parametric *families*
of names (granularities' ``N:M`` and ``blockHxW``): a parser that builds the
object from a name of its form, listed beside the fixed names.
``sparsetrain models | datasets | criteria | granularities`` print them.
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
        self._families: dict[str, Callable[[str], T | None]] = {}
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

    def register_family(self, label: str, parse: Callable[[str], T | None] | None = None):
        """Register a parametric family of names: ``parse(name)`` builds the object, or returns None
        for a name not of its form. ``label`` ("N:M (e.g. 2:4)") stands for the family in listings
        and in the choices of an error. Without ``parse``, a decorator.

        Example:
            >>> sizes = Registry("size")
            >>> _ = sizes.register_family("Npx (e.g. 12px)", lambda n: int(n[:-2]) if n.endswith("px") else None)
            >>> sizes.get("12px"), sizes.families()
            (12, ['Npx (e.g. 12px)'])
        """
        def add(parser: Callable[[str], T | None]) -> Callable[[str], T | None]:
            if label in self._families:
                raise SparsetrainError(f"a {self.kind} family {label!r} is already registered.")
            self._families[label] = parser
            return parser
        return add if parse is None else add(parse)

    def families(self) -> list[str]:
        """The labels of the parametric families, in registration order."""
        return list(self._families)

    def family_parser(self, label: str) -> Callable[[str], T | None]:
        """The parser registered under a family ``label`` (its docstring describes the family)."""
        return self._families[label]

    def unregister(self, name: str) -> None:
        """Remove ``name`` and its aliases (a test's or a procedure's temporary entry)."""
        self._items.pop(name, None)
        self._aliases = {a: n for a, n in self._aliases.items() if n != name}

    def snapshot(self) -> tuple[dict[str, T], dict[str, str], dict[str, Callable[[str], T | None]]]:
        """The current entries, for :meth:`restore` (tests and doc pages that register their own)."""
        return dict(self._items), dict(self._aliases), dict(self._families)

    def restore(self, snapshot: tuple) -> None:
        """Go back to a :meth:`snapshot`."""
        self._items, self._aliases = dict(snapshot[0]), dict(snapshot[1])
        self._families = dict(snapshot[2]) if len(snapshot) > 2 else {}

    def _unknown(self, name: str) -> SparsetrainError:
        return unknown_choice(self.kind, name, [*self._items, *self._aliases, *self._families])

    def canonical(self, name: str) -> str:
        """The registered name behind ``name`` (itself, or the name an alias stands for)."""
        name = self._aliases.get(name, name)
        if name not in self._items:
            raise self._unknown(name)
        return name

    def get(self, name: str) -> T:
        """The object registered under ``name`` or one of its aliases, else built by a family's parser."""
        if name in self._items or name in self._aliases:
            return self._items[self.canonical(name)]
        for parse in self._families.values():
            built = parse(name)
            if built is not None:
                return built
        raise self._unknown(name)

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
