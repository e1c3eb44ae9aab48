"""Run configuration: defaults, YAML recipes and dotted overrides (``--method.density 0.05``).

A configuration is a plain nested dict. Fixed sections have a fixed set of
keys; the builder sections (``data``, ``model``, ``method``) take ``name`` plus
the keyword arguments of the registered builder, checked against its
signature, so a typo gets one clear message naming the key.
"""

from __future__ import annotations

import copy
import inspect
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from sparsetrain.errors import SparsetrainError, check_count, check_nonnegative, unknown_choice

DEFAULTS: dict[str, Any] = {
    "seed": 0,
    "epochs": 30,
    "batch_size": 128,
    "eval_batch_size": 1000,
    "label_smoothing": 0.0,
    "device": "auto",
    "deterministic": True,
    "threads": 0,
    "data": {"name": "mnist1d", "root": None, "val_fraction": 0.0, "augment": False},
    "model": {"name": "cnn1d", "width": 24},
    "optim": {"name": "sgd", "lr": 0.1, "momentum": 0.9, "nesterov": True, "weight_decay": 5e-4},
    "schedule": {"name": "cosine", "milestones": [0.5, 0.75], "gamma": 0.1, "warmup_epochs": 0},
    "method": {"name": "granet", "density": 0.1, "initial_density": 0.5, "update_every": 20, "end": 0.6},
    "sparsity": {"include": None, "exclude": [], "embeddings": False},
    "run": {"dir": "runs", "name": None, "checkpoint_every": 1, "layer_density_every": 5, "plots": True,
            "progress": "auto"},
}

class _Loader(yaml.SafeLoader):
    """YAML 1.1 reads ``5e-4`` and ``1e30`` as strings; like YAML 1.2 we read them as floats."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?$|^[-+]?\.(?:inf|Inf|INF)$|^\.(?:nan|NaN|NAN)$"),
    list("-+0123456789."))
_Loader.yaml_implicit_resolvers["tag:yaml.org,2002:float"] = _Loader.yaml_implicit_resolvers.get(
    "tag:yaml.org,2002:float", [])


def parse_value(raw: str):
    """A YAML scalar with scientific notation read as a number.

    Example:
        >>> parse_value("5e-4"), parse_value("3"), parse_value("[0.5, 0.75]"), parse_value("erk")
        (0.0005, 3, [0.5, 0.75], 'erk')
    """
    try:
        return yaml.load(raw, Loader=_Loader)
    except yaml.YAMLError as exc:
        raise SparsetrainError(f"cannot read the value {raw!r}: {_yaml_problem(exc)}. Quote it or fix the brackets "
                               "(a list is written [a, b]).") from None


def _yaml_problem(exc: Exception, file: str | None = None) -> str:
    """One line from a PyYAML error: what is wrong and where (line and column count from 1)."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return f"{file + ': ' if file else ''}{problem}{where}"


#: method arguments (fractions of training) that the trainer also accepts as ``<name>_epoch``
EPOCH_KEYS = ("start", "end", "soft_end")

#: sections whose extra keys are builder keyword arguments, and the keys the trainer keeps for itself
TRAINER_KEYS = {"data": ("name", "root", "val_fraction", "augment"), "model": ("name",),
                "method": ("name", "shrink", "shrink_every")}
BUILDER_SECTIONS = tuple(TRAINER_KEYS)


@dataclass(frozen=True)
class Section:
    """A config section a procedure adds to the trainer's (e.g. IMP's ``imp:``).

    Attributes:
        defaults: every key of the section and its default; any other key is refused.
        check: ``section dict -> None``, raising ``SparsetrainError`` on a bad value.
    """

    defaults: dict[str, Any]
    check: Callable[[dict], Any] | None = None


#: extra sections by name, registered by the procedures that read them (:func:`register_section`)
SECTIONS: dict[str, Section] = {}


def register_section(name: str, defaults: dict[str, Any], check: Callable[[dict], Any] | None = None) -> None:
    """Register a procedure's extra config section: its keys, defaults and validation.

    A config loaded with ``sections=(name,)`` (:func:`load_config`) then takes
    ``name:`` in its YAML and ``--name.key value`` overrides, merged like every
    other section; a key outside ``defaults`` gets one message listing the keys.

    Example:
        >>> register_section("demo", {"rounds": 1})
        >>> load_config(None, ["--demo.rounds", "3"], sections=("demo",))["demo"]
        {'rounds': 3}
        >>> del SECTIONS["demo"]
    """
    if name in DEFAULTS:
        raise SparsetrainError(f"config section {name!r} is the trainer's own; pick another name.")
    SECTIONS[name] = Section(dict(defaults), check)


def deep_merge(base: dict, update: dict) -> dict:
    """Recursively merge ``update`` into a copy of ``base``.

    Example:
        >>> deep_merge({"a": {"b": 1, "c": 2}}, {"a": {"c": 3}})
        {'a': {'b': 1, 'c': 3}}
    """
    out = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def parse_overrides(args: list[str]) -> dict:
    """``["--method.density", "0.05", "--epochs=3"]`` -> nested dict (values parsed as YAML).

    Example:
        >>> parse_overrides(["--method.density", "0.05", "--data.augment=true"])
        {'method': {'density': 0.05}, 'data': {'augment': True}}
    """
    out: dict = {}
    i = 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("--"):
            raise SparsetrainError(f"expected an override like --method.density 0.05, got {arg!r}.")
        if "=" in arg:
            key, raw = arg[2:].split("=", 1)
            i += 1
        else:
            if i + 1 >= len(args):
                raise SparsetrainError(f"override {arg} needs a value, e.g. {arg} 0.1")
            key, raw = arg[2:], args[i + 1]
            i += 2
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = parse_value(raw) if raw != "" else None
    return out


def _builder_params(section: str, name: str) -> dict[str, inspect.Parameter] | None:
    if section == "method":
        if name == "dense":
            return {}
        from sparsetrain.methods import method_signature
        return dict(method_signature(name).parameters)
    if section == "model":
        from sparsetrain.train.models import model_signature
        return model_signature(name)
    from sparsetrain.train.data import dataset_signature
    return dataset_signature(name)


def validate(cfg: dict) -> dict:
    """Check every key exists; builder sections are checked against their builders' signatures."""
    for key in cfg:
        if key not in DEFAULTS:
            raise SparsetrainError(f"unknown config key {key}. Top-level keys: {', '.join(DEFAULTS)}.")
        _check_type(key, cfg[key], DEFAULTS[key])
    for section, defaults in DEFAULTS.items():
        if not isinstance(defaults, dict):
            continue
        if not isinstance(cfg[section], dict):
            raise SparsetrainError(f"config section {section!r} must be a mapping, got {cfg[section]!r}.")
        if section not in BUILDER_SECTIONS:
            for key in cfg[section]:
                if key not in defaults:
                    raise SparsetrainError(f"unknown config key {section}.{key}. "
                                           f"Keys of {section}: {', '.join(defaults)}.")
                _check_type(f"{section}.{key}", cfg[section][key], defaults[key])
            continue
        params = _builder_params(section, cfg[section]["name"])
        if params is None:
            continue
        allowed = (set(TRAINER_KEYS[section]) | set(params)) - {"num_classes", "in_channels", "root"}
        allowed |= set(TRAINER_KEYS[section])
        if section == "method":  # fractions of training may also be given in epochs
            allowed |= {f"{k}_epoch" for k in EPOCH_KEYS if k in params}
        for key in cfg[section]:
            if key not in allowed:
                raise SparsetrainError(
                    f"unknown config key {section}.{key} for {section} {cfg[section]['name']!r}. "
                    f"Valid keys: {', '.join(sorted(allowed))}.")
    _check_ranges(cfg)
    return cfg


#: keys that must be whole numbers >= 1, checked before any data is set up
POSITIVE_INTS = ("epochs", "batch_size", "eval_batch_size")


def _check_ranges(cfg: dict) -> None:
    """Values torch would reject deep inside with a traceback get one line here."""
    for key in POSITIVE_INTS:
        cfg[key] = check_count(cfg.get(key), key)
    lr = cfg["optim"].get("lr")
    if isinstance(lr, (int, float)) and not isinstance(lr, bool):
        check_nonnegative(lr, "optim.lr")
        if lr == 0:
            warnings.warn("optim.lr is 0: the weights will not change and the run will end near chance accuracy.",
                          UserWarning, stacklevel=2)


def _check_type(key: str, value, default) -> None:
    """Numbers must be numbers and flags must be flags (a value like '1e-4x' is caught here)."""
    if isinstance(default, bool):
        ok = isinstance(value, bool) or (key.endswith("progress") and value == "auto")
    elif isinstance(default, (int, float)):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    else:
        return
    if not ok:
        raise SparsetrainError(f"config key {key} must be a {type(default).__name__}, got {value!r}.")


def builder_kwargs(cfg: dict, section: str) -> dict:
    """The keyword arguments for the section's builder (its config minus the trainer's own keys).

    Example:
        >>> builder_kwargs({"data": {"name": "synthetic", "augment": False, "num_train": 64}}, "data")
        {'num_train': 64}
    """
    return {k: v for k, v in cfg[section].items() if k not in TRAINER_KEYS[section]}


def load_config(recipe: str | Path | None = None, overrides: list[str] | dict | None = None,
                sections: tuple[str, ...] = ()) -> dict:
    """Defaults, then the recipe YAML, then overrides; validated.

    A recipe that names a different method or model than the defaults drops the
    default method / model keyword arguments (they belong to the default builder).
    ``sections`` names registered extra sections (:func:`register_section`) the
    config may hold.

    Example:
        >>> cfg = load_config(None, ["--method.density", "0.05"])
        >>> cfg["method"]["name"], cfg["method"]["density"]
        ('granet', 0.05)
    """
    layers = []
    if recipe is not None:
        layers.append(read_recipe(recipe))
    if overrides:
        layers.append(overrides if isinstance(overrides, dict) else parse_overrides(list(overrides)))
    return merge_config(layers, sections)


def merge_config(layers: list[dict], sections: tuple[str, ...] = ()) -> dict:
    """The one config merge: the defaults (and those of the extra ``sections``), then each layer; validated.

    Example:
        >>> merge_config([{"epochs": 3}, {"method": {"name": "set"}}])["method"]
        {'name': 'set'}
    """
    cfg = copy.deepcopy(DEFAULTS)
    for name in sections:
        if name not in SECTIONS:
            raise unknown_choice("config section", name, SECTIONS)
        cfg[name] = copy.deepcopy(SECTIONS[name].defaults)
    for layer in layers:
        for section in BUILDER_SECTIONS:
            new = layer.get(section, {})
            if isinstance(new, dict) and "name" in new and new["name"] != cfg[section].get("name"):
                # the old builder's arguments do not belong to the new one
                cfg[section] = {k: v for k, v in cfg[section].items() if k in TRAINER_KEYS[section]}
        cfg = deep_merge(cfg, layer)
    extra = {name: cfg.pop(name) for name in sections}
    validate(cfg)
    for name, values in extra.items():
        if not isinstance(values, dict):
            raise SparsetrainError(f"config section {name!r} must be a mapping, got {values!r}.")
        for key in values:
            if key not in SECTIONS[name].defaults:
                raise unknown_choice(f"{name} key", key, SECTIONS[name].defaults)
        if SECTIONS[name].check is not None:
            SECTIONS[name].check(values)
        cfg[name] = values
    return cfg


def read_recipe(path: str | Path) -> dict:
    """Read a YAML recipe; a bare name is looked up among the bundled recipes."""
    from sparsetrain.train.recipes import find_recipe
    return read_yaml(find_recipe(path))


def read_yaml(file: str | Path, what: str = "recipe") -> dict:
    """A config file's mapping, with scientific notation read as numbers (the one YAML reader of configs).

    ``description`` (a recipe's note to the reader) is dropped.
    """
    with open(file) as fh:
        try:
            data = yaml.load(fh, Loader=_Loader) or {}
        except yaml.YAMLError as exc:
            raise SparsetrainError(f"{what} {file} is not valid YAML: {_yaml_problem(exc)}.") from None
    if not isinstance(data, dict):
        raise SparsetrainError(f"{what} {file} must be a YAML mapping of config keys.")
    data.pop("description", None)
    return data


def dump_config(cfg: dict) -> str:
    """The resolved configuration as YAML (what ``config.yaml`` of a run holds)."""
    return yaml.safe_dump(cfg, sort_keys=False)
