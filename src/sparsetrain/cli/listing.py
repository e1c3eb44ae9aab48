"""``sparsetrain models | datasets | criteria | granularities``: what a registry holds, one line each
(``methods`` adds its family and paper; ``schedules`` draws the curves)."""

from __future__ import annotations

import fnmatch
import inspect

from sparsetrain.errors import SparsetrainError


def _summary(obj: object) -> str:
    """An object's own one-line ``summary``, else the first line of its docstring (or its builder's)."""
    if isinstance(getattr(obj, "summary", None), str):
        return obj.summary  # type: ignore[attr-defined]
    target = getattr(obj, "builder", obj)
    return (inspect.getdoc(target) or "").split("\n")[0]


def configure(p) -> None:
    """Arguments of a listing command."""
    p.add_argument("pattern", nargs="?", default="*", help="glob over the names, e.g. 'resnet*'")


def lister(kind: str, command: str):
    """The command that lists the registry of ``kind`` ("model", "dataset", "criterion", "granularity");
    a registry's parametric families (``N:M``) follow its names."""
    def run(args, extra) -> int:
        import sparsetrain.core.granularity  # noqa: F401  (the registries fill on import)
        import sparsetrain.criteria  # noqa: F401
        import sparsetrain.train.data  # noqa: F401
        import sparsetrain.train.models  # noqa: F401
        from sparsetrain.core.registry import REGISTRIES
        registry = REGISTRIES[kind]
        names = registry.names(args.pattern)
        families = [f for f in registry.families() if fnmatch.fnmatchcase(f, args.pattern)]
        if not names and not families:
            raise SparsetrainError(f"no {kind} matches {args.pattern!r}; try 'sparsetrain {command}'.")
        aliases: dict[str, list[str]] = {}
        for alias, name in registry.aliases().items():
            aliases.setdefault(name, []).append(alias)
        for name in names:
            also = f" (also {', '.join(sorted(aliases[name]))})" if name in aliases else ""
            print(f"{name + also:<28} {_summary(registry.get(name))}")
        for label in families:
            print(f"{label:<28} {_summary(registry.family_parser(label))}")
        return 0
    return run
