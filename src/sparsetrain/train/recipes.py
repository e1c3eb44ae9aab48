"""Bundled YAML recipes (``src/sparsetrain/recipes/*.yaml``): one per seed command, plus CPU-sized twins."""

from __future__ import annotations

from pathlib import Path

import yaml

from sparsetrain.errors import unknown_choice

RECIPES_DIR = Path(__file__).resolve().parent.parent / "recipes"


def _bundled() -> dict[str, Path]:
    return {p.stem: p for p in sorted(RECIPES_DIR.glob("*.yaml"))}


def find_yaml(name: str | Path, folder: Path, pattern: str, kind: str) -> Path:
    """A YAML file path as given, else the file in ``folder`` matching ``pattern`` named ``name``.

    ``name`` may carry the ``.yaml`` suffix; an unknown name gets one clear
    error listing the bundled ones (``kind`` says what was looked for).

    Example:
        >>> find_yaml("granet_mnist1d", RECIPES_DIR, "*.yaml", "recipe").name
        'granet_mnist1d.yaml'
    """
    path = Path(name)
    if path.is_file():
        return path
    bundled = {p.stem: p for p in sorted(folder.glob(pattern))}
    key = path.stem if path.suffix in (".yaml", ".yml") else str(name)
    if key in bundled:
        return bundled[key]
    raise unknown_choice(f"{kind} (a YAML file or a bundled name)", str(name), bundled)


def find_recipe(name: str | Path) -> Path:
    """A YAML file path as given, else a bundled recipe by name.

    Example:
        >>> find_recipe("granet_mnist1d").name
        'granet_mnist1d.yaml'
    """
    return find_yaml(name, RECIPES_DIR, "*.yaml", "recipe")


def list_recipes() -> dict[str, str]:
    """``{name: description}`` of the bundled recipes."""
    out = {}
    for name, path in _bundled().items():
        data = yaml.safe_load(path.read_text()) or {}
        out[name] = str(data.get("description", "")).strip().splitlines()[0] if data.get("description") else ""
    return out
