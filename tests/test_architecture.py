"""The layering of docs/architecture.md holds: no module imports a layer above its own."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "sparsetrain"

#: layer of each top-level part (a module imports only its own layer and the ones below)
LAYERS = {
    "errors": 0,
    "core": 1,
    "context": 2, "schedules": 2, "cadence": 2, "distributions": 2, "metrics": 2,
    "criteria": 3, "saliency": 3,
    "ops": 4,
    "methods": 5, "deploy": 5,
    "engine": 6, "distributed": 6, "sharding": 6,
    "integrations": 7, "compat": 7,
    "train": 8,
    "procedures": 9,
    "cli": 10,
    # deprecated import paths re-export from the layer they moved to
    "pruning_criteria": 10, "sparsity_schedules": 10, "structured": 10,
}


def part(module: str) -> str:
    return module.split(".")[1] if module.count(".") else "__init__"


def imports(path: Path) -> set[str]:
    """Every sparsetrain module imported anywhere in ``path`` (function-level imports too; not the
    ``if TYPE_CHECKING:`` ones, which only name types for annotations)."""
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", getattr(node.test, "attr", "")) == "TYPE_CHECKING":
            node.body = []
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("sparsetrain"):
            found.add(node.module)
            if node.module == "sparsetrain":
                found |= {f"sparsetrain.{alias.name}" for alias in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("sparsetrain")}
    return found


def test_every_part_has_a_layer():
    parts = {p.stem if p.is_file() else p.name for p in PACKAGE.iterdir()
             if (p.suffix == ".py" or (p.is_dir() and (p / "__init__.py").exists())) and p.stem != "__init__"}
    missing = sorted(parts - set(LAYERS) - {"__main__"})
    assert not missing, f"add {missing} to LAYERS here and to docs/architecture.md"


def test_no_module_imports_a_layer_above_its_own():
    wrong = []
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        module = ".".join(rel.parts)
        own = part(module)
        if own in ("__init__", "__main__"):
            continue
        for target in imports(path):
            other = part(target)
            if other in LAYERS and LAYERS[other] > LAYERS[own]:
                wrong.append(f"{module} ({own}, layer {LAYERS[own]}) imports {target} (layer {LAYERS[other]})")
    assert not wrong, "imports against the layering of docs/architecture.md:\n" + "\n".join(sorted(wrong))


def test_the_old_structured_paths_still_import_with_a_warning():
    import importlib
    import sys

    import pytest
    for name in [m for m in sys.modules if m.startswith("sparsetrain.structured")]:
        sys.modules.pop(name)
    with pytest.warns(FutureWarning, match="sparsetrain.structured is deprecated"):
        importlib.import_module("sparsetrain.structured")
    from sparsetrain.structured.compact import compact as old_compact
    from sparsetrain.structured.graph import channel_groups as old_groups

    from sparsetrain.core.graph import channel_groups
    from sparsetrain.deploy.compact import compact
    assert old_compact is compact and old_groups is channel_groups
