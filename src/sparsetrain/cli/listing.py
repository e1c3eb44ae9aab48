"""``sparsetrain models | datasets | criteria``: what a registry holds, one line each (``methods`` adds its
family and paper; ``schedules`` draws the curves)."""

from __future__ import annotations

import inspect

from sparsetrain.errors import SparsetrainError


def _summary(obj: object) -> str:
    """The first line of the docstring of a registered object (or of its builder)."""
    target = getattr(obj, "builder", obj)
    return (inspect.getdoc(target) or "").split("\n")[0]


def configure(p) -> None:
    """Arguments of a listing command."""
    p.add_argument("pattern", nargs="?", default="*", help="glob over the names, e.g. 'resnet*'")


def lister(kind: str, command: str):
    """The command that lists the registry of ``kind`` ("model", "dataset", "criterion")."""
    def run(args, extra) -> int:
        import sparsetrain.criteria  # noqa: F401  (the registries fill on import)
        import sparsetrain.train.data  # noqa: F401
        import sparsetrain.train.models  # noqa: F401
        from sparsetrain.core.registry import REGISTRIES
        registry = REGISTRIES[kind]
        names = registry.names(args.pattern)
        if not names:
            raise SparsetrainError(f"no {kind} matches {args.pattern!r}; try 'sparsetrain {command}'.")
        aliases: dict[str, list[str]] = {}
        for alias, name in registry.aliases().items():
            aliases.setdefault(name, []).append(alias)
        for name in names:
            also = f" (also {', '.join(sorted(aliases[name]))})" if name in aliases else ""
            print(f"{name + also:<28} {_summary(registry.get(name))}")
        return 0
    return run
