"""Bundled YAML recipes (``src/sparsetrain/recipes/*.yaml``): one per seed command, plus CPU-sized twins."""

from __future__ import annotations

from pathlib import Path

import yaml

from sparsetrain.errors import unknown_choice

RECIPES_DIR = Path(__file__).resolve().parent.parent / "recipes"


def _bundled() -> dict[str, Path]:
    return {p.stem: p for p in sorted(RECIPES_DIR.glob("*.yaml"))}


def find_recipe(name: str | Path) -> Path:
    """A YAML file path as given, else a bundled recipe by name.

    Example:
        >>> find_recipe("granet_mnist1d").name
        'granet_mnist1d.yaml'
    """
    path = Path(name)
    if path.is_file():
        return path
    bundled = _bundled()
    key = path.stem if path.suffix in (".yaml", ".yml") else str(name)
    if key in bundled:
        return bundled[key]
    raise unknown_choice("recipe (a YAML file or a bundled name)", str(name), bundled)


def list_recipes() -> dict[str, str]:
    """``{name: description}`` of the bundled recipes."""
    out = {}
    for name, path in _bundled().items():
        data = yaml.safe_load(path.read_text()) or {}
        out[name] = str(data.get("description", "")).strip().splitlines()[0] if data.get("description") else ""
    return out
