"""Gem-Miner configuration: the trainer's config plus a ``gems:`` section; Rare Gems files translated at the edge.

A Gem-Miner config is the one config of ``sparsetrain train``
(:func:`sparsetrain.train.config.merge_config`): the settings it shares with
the trainer live in the trainer's sections (``seed``, ``epochs``,
``batch_size``, ``device``, ``threads``, ``data``, ``model``, ``optim``,
``schedule``, ``run.dir`` / ``run.name``), the Gem-Miner-only settings in the
registered section ``gems:`` (:data:`GEMS_DEFAULTS`), and overrides are
written as for ``train`` (``--gems.iter_period 3 --epochs 4``). ``epochs``,
``optim`` and ``schedule`` steer the score search; ``gems.finetune_*`` the
weight training after it. See docs/guides/rare-gems.md.

The original repository's flat files (ksreenivasan/pruning_is_enough,
docs/algorithms.md, "Rare Gems / Gem-Miner and edge-popup") load as they are:
:func:`from_rare_gems` translates them onto the nested config. Their keys are
renamed to ours (:data:`RARE_GEMS_KEYS`), keys that only steer the original's
hardware or logging are accepted and ignored (:data:`IGNORED_KEYS`), and keys
whose other values we do not implement must keep the value we do implement
(:data:`FIXED_KEYS`).

Units. ``target_sparsity`` is the **percent of weights remaining** (0.59 means
99.41 % sparsity). A value below 1 is refused unless ``allow_sub_percent: true``
says it is meant (a fraction such as 0.05 for "5 % remaining" or 0.95 for
"95 % sparsity" is the usual mistake; the original ResNet-20 0.59 % config needs
the flag). Our own key ``density`` is the fraction kept, in (0, 1].

Example:
    >>> cfg = load_gems_config({"target_sparsity": 5, "epochs": 150, "iter_period": 5})
    >>> cfg["gems"]["density"], rounds(cfg["epochs"], cfg["gems"]["iter_period"])
    (0.05, 29)
    >>> load_gems_config(cfg, ["--gems.iter_period", "10"])["gems"]["iter_period"]
    10
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

from sparsetrain.errors import SparsetrainError, check_count, check_density, unknown_choice
from sparsetrain.procedures.gems_schedule import (
    check_reachable,
    finetune_milestones,
    is_prune_epoch,
    round_rate,
    rounds,
    search_milestones,
    survivors,
)
from sparsetrain.procedures.scores import ALGOS, REGULARIZERS, ROUNDINGS, SCORE_INITS
from sparsetrain.train.config import DEFAULTS, merge_config, parse_overrides, read_yaml, register_section
from sparsetrain.train.recipes import find_yaml

GEMS_RECIPES_DIR = Path(__file__).resolve().parent.parent / "recipes" / "tickets"

#: the ``gems:`` section: the Gem-Miner-only keys and their defaults (the Rare Gems sample config's where it has one)
GEMS_DEFAULTS: dict[str, Any] = {
    "algo": "hc_iter", "density": None, "target_sparsity": None, "allow_sub_percent": False, "iter_period": 5,
    "weight_init": "signed_constant", "score_init": None, "quantized": True, "quantize_threshold": 0.5,
    "regularization": "L2", "lmbda": 1e-4, "alpha": 1.0, "alpha_prime": 1.0,
    "nonaffine_bn": True, "zero_bias": True, "scale_fan": False, "prune_rate": None, "exclude": [],
    "search_only": [], "rounding": "naive",
    "finetune": True, "finetune_epochs": None, "finetune_lr": 0.01, "finetune_momentum": 0.9,
    "finetune_weight_decay": 1e-4, "finetune_lr_policy": "multistep", "finetune_milestones": None,
    "unflag_before_finetune": True, "sanity_checks": True, "invert_sanity_check": False,
}

#: the trainer's keys where Gem-Miner's defaults differ from ``sparsetrain train``'s (small data by default)
GEMS_BASE: dict[str, Any] = {
    "epochs": 150, "device": "cpu", "model": {"name": "mlp"}, "method": {"name": "dense"},
    "optim": {"name": "sgd", "lr": 0.1, "momentum": 0.9, "nesterov": False, "weight_decay": 0.0},
    "schedule": {"name": "cosine", "milestones": [0.5, 0.75], "gamma": 0.1, "warmup_epochs": 0},
}

#: trainer keys the score search and fine-tuning do not read: a value other than :data:`GEMS_BASE`'s is refused
UNREAD = ("label_smoothing", "deterministic", "data.augment", "schedule.warmup_epochs", "method", "sparsity",
          "run.checkpoint_every", "run.layer_density_every", "run.plots")

#: a flat file's shared keys (ours) -> their place in the trainer's config
SHARED_KEYS: dict[str, str] = {
    "name": "run.name", "dataset": "data.name", "data_root": "data.root", "val_fraction": "data.val_fraction",
    "model": "model.name", "optimizer": "optim.name", "lr": "optim.lr", "momentum": "optim.momentum",
    "weight_decay": "optim.weight_decay", "lr_policy": "schedule.name", "lr_gamma": "schedule.gamma",
    "seed": "seed", "epochs": "epochs", "batch_size": "batch_size", "eval_batch_size": "eval_batch_size",
    "device": "device", "threads": "threads",
}
#: a flat file's builder arguments (merged into ``data:`` / ``model:``) and ``milestones`` (epochs, not fractions)
_SPREAD = {"data_kwargs": "data", "model_kwargs": "model"}

#: Rare Gems key -> our flat key
RARE_GEMS_KEYS = {
    "arch": "model", "data": "data_root", "wd": "weight_decay", "gamma": "lr_gamma", "init": "weight_init",
    "hc_quantized": "quantized", "round": "rounding", "fine_tune_lr": "finetune_lr",
    "fine_tune_wd": "finetune_weight_decay", "fine_tune_lr_policy": "finetune_lr_policy",
}
#: Rare Gems LR policy names -> ours
_LR_POLICIES = {"cosine_lr": "cosine", "multistep_lr": "multistep", "constant_lr": "constant"}
#: accepted and ignored (hardware, logging, bookkeeping of the original scripts)
IGNORED_KEYS = ("subfolder", "workers", "gpu", "checkpoint_at_prune", "noise", "trial_num", "results_filename",
                "config", "log_dir", "save_every", "print_freq", "description", "num_test")
#: keys whose only implemented value is the one shown
FIXED_KEYS = {"conv_type": "SubnetConv", "freeze_weights": True, "prune_type": "BottomK", "noise_ratio": 0,
              "bias": False, "project_freq": 1, "bottom_k_on_forward": False}
WEIGHT_INITS = ("signed_constant", "kaiming_normal", "default")
LR_POLICIES = ("cosine", "multistep", "constant")
OPTIMIZERS = ("sgd", "adam")
_SECTIONS = {k for k, v in DEFAULTS.items() if isinstance(v, dict)} | {"gems"}
_FLAT_KEYS = (*GEMS_DEFAULTS, *SHARED_KEYS, *_SPREAD, "milestones")


def _read(source: str | Path | dict) -> dict:
    if isinstance(source, dict):
        return copy.deepcopy(source)
    return read_yaml(find_yaml(source, GEMS_RECIPES_DIR, "gems_*.yaml", "Gem-Miner config"), "Gem-Miner config")


def is_rare_gems(raw: dict) -> bool:
    """Whether a config mapping is a flat Rare Gems file (else it is nested, as ``sparsetrain train``'s).

    Example:
        >>> is_rare_gems({"arch": "resnet20", "target_sparsity": 5}), is_rare_gems({"gems": {"density": 0.05}})
        (True, False)
    """
    if any(k in _SECTIONS and isinstance(v, dict) for k, v in raw.items()):
        return False  # a section makes it nested; a flat key beside it is answered with its nested place
    return any(k not in DEFAULTS or k in _SECTIONS for k in raw)


def _our_flat_key(key: str, value: Any) -> tuple[str, Any] | None:
    """A Rare Gems key and value in our flat spelling; None for an ignored key."""
    if key in IGNORED_KEYS:
        return None
    if key in FIXED_KEYS:
        if value != FIXED_KEYS[key]:
            raise SparsetrainError(f"{key}: {value!r} is not implemented; only {key}: {FIXED_KEYS[key]!r} "
                                   "(remove the key or set that value).")
        return None
    if key == "skip_sanity_checks":
        return "sanity_checks", not value
    if key == "bn_type":
        if value not in ("NonAffineBatchNorm", "AffineBatchNorm", "BatchNorm"):
            raise unknown_choice("bn_type", str(value), ["NonAffineBatchNorm", "AffineBatchNorm"])
        return "nonaffine_bn", value == "NonAffineBatchNorm"
    key = RARE_GEMS_KEYS.get(key, key)
    if key not in _FLAT_KEYS:
        raise unknown_choice("Gem-Miner config key", key, [*_FLAT_KEYS, *RARE_GEMS_KEYS, *FIXED_KEYS,
                                                           "skip_sanity_checks", "bn_type"])
    if key in ("lr_policy", "finetune_lr_policy"):
        value = _LR_POLICIES.get(value, value)
    if key in ("dataset", "model") and isinstance(value, str):
        value = value.lower()
    return key, value


def _put(tree: dict, dotted: str, value: Any) -> None:
    *sections, last = dotted.split(".")
    for part in sections:
        tree = tree.setdefault(part, {})
    tree[last] = value


def from_rare_gems(raw: dict) -> dict:
    """A flat Rare Gems config (or our flat spelling of it) as a layer of the nested config.

    Shared keys go to the trainer's sections (:data:`SHARED_KEYS`), the rest to
    ``gems:``; ``milestones`` (epochs of the score search) become the fractions
    of ``schedule.milestones``.

    Example:
        >>> from_rare_gems({"arch": "ResNet20", "wd": 0.0, "target_sparsity": 5, "workers": 4})
        {'model': {'name': 'resnet20'}, 'optim': {'weight_decay': 0.0}, 'gems': {'target_sparsity': 5}}
    """
    layer: dict[str, Any] = {}
    flat = dict(pair for key, value in raw.items() if (pair := _our_flat_key(key, value)) is not None)
    for key, value in flat.items():
        if key in GEMS_DEFAULTS:
            _put(layer, f"gems.{key}", value)
        elif key in SHARED_KEYS:
            _put(layer, SHARED_KEYS[key], value)
        elif key in _SPREAD:
            if not isinstance(value, dict):
                raise SparsetrainError(f"{key} must be a mapping of keyword arguments, got {value!r}.")
            layer.setdefault(_SPREAD[key], {}).update(value)
    if flat.get("milestones") is not None:
        epochs = flat.get("epochs", GEMS_BASE["epochs"])
        _put(layer, "schedule.milestones", [m / epochs for m in flat["milestones"]])
    return layer


def nested_key(key: str) -> str | None:
    """Where a flat (Rare Gems or our flat) key lives in the nested config; None if it is not one.

    Example:
        >>> nested_key("iter_period"), nested_key("wd"), nested_key("epochs")
        ('gems.iter_period', 'optim.weight_decay', 'epochs')
    """
    key = RARE_GEMS_KEYS.get(key, key)
    if key in GEMS_DEFAULTS:
        return f"gems.{key}"
    return SHARED_KEYS.get(key)


def _density(g: dict) -> float:
    """The fraction kept, from ``target_sparsity`` (percent remaining) or ``density`` (fraction)."""
    target, density = g["target_sparsity"], g["density"]
    if target is not None and density is not None and math.isclose(target, 100.0 * density, rel_tol=1e-9):
        return check_density(density)  # a config this module already resolved
    if target is not None and density is not None:
        raise SparsetrainError("give target_sparsity (percent of weights remaining, Rare Gems) or density "
                               "(fraction kept), not both.")
    if target is None and density is None:
        raise SparsetrainError("say how many weights the ticket keeps: target_sparsity (percent remaining, "
                               "e.g. 5) or density (fraction kept, e.g. 0.05).")
    if density is not None:
        return check_density(density)
    if isinstance(target, bool) or not isinstance(target, (int, float)) or not 0 < target <= 100:
        raise SparsetrainError(f"target_sparsity is the percent of weights remaining, in (0, 100]; got {target!r}.")
    if target < 1 and not g["allow_sub_percent"]:
        raise SparsetrainError(
            f"target_sparsity is the percent of weights REMAINING (Rare Gems convention): {target} means "
            f"{target} % kept, i.e. {100 - target:g} % sparsity. That looks like a fraction: for {target * 100:g} % "
            f"remaining write target_sparsity: {target * 100:g}; for {target * 100:g} % sparsity write "
            f"target_sparsity: {100 - target * 100:g}. If {target} % remaining is meant (as in the original "
            "ResNet-20 0.59 config), add allow_sub_percent: true.")
    return target / 100.0


def _choice(value: Any, key: str, choices) -> None:
    if value not in choices:
        raise unknown_choice(key, str(value), choices)


def check_gems_section(g: dict) -> None:
    """Validate the ``gems:`` section on its own (the checks that need ``epochs`` follow the merge)."""
    _density(g)
    check_count(g["iter_period"], "iter_period")
    for key, choices in (("algo", ALGOS), ("regularization", REGULARIZERS), ("rounding", ROUNDINGS),
                         ("weight_init", WEIGHT_INITS), ("finetune_lr_policy", LR_POLICIES)):
        _choice(g[key], key, choices)
    if g["score_init"] is not None:
        _choice(g["score_init"], "score_init", SCORE_INITS)
    rate = g["prune_rate"]
    if rate is not None and (isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0.0 <= rate < 1.0):
        raise SparsetrainError(f"prune_rate must lie in [0, 1) (scale_fan scales fan_in by 1 - prune_rate), "
                               f"got {rate!r}.")
    if g["finetune_epochs"] is not None:
        check_count(g["finetune_epochs"], "finetune_epochs")
    if not 0.0 < float(g["quantize_threshold"]) < 1.0:
        raise SparsetrainError(f"quantize_threshold must lie in (0, 1), got {g['quantize_threshold']!r}.")
    if float(g["lmbda"]) < 0:
        raise SparsetrainError(f"lmbda (the regulariser weight) must be >= 0, got {g['lmbda']!r}.")


register_section("gems", GEMS_DEFAULTS, check=check_gems_section)


def _dig(cfg: dict, dotted: str) -> Any:
    for part in dotted.split("."):
        cfg = cfg.get(part, {}) if isinstance(cfg, dict) else {}
    return cfg


def _flat_keys(layer: dict) -> list[tuple[str, str]]:
    """(key, nested place) of the flat Rare Gems keys in a nested layer (``model: {...}`` is nested already)."""
    return [(key, where) for key, value in layer.items()
            if (where := nested_key(key)) not in (None, key) and not isinstance(value, dict)]


def _override_layer(overrides: list[str] | dict) -> dict:
    """Overrides as a layer; a flat key on the command line is told its nested spelling."""
    layer = copy.deepcopy(overrides) if isinstance(overrides, dict) else parse_overrides(list(overrides))
    for key, where in _flat_keys(layer)[:1]:
        raise SparsetrainError(f"--{key} is the flat Rare Gems spelling (fine inside a Rare Gems file); an "
                               f"override is written as in the nested config: --{where}.")
    gems = layer.get("gems")
    if isinstance(gems, dict):  # a new target replaces the file's, in whichever unit the file gave it
        for given, other in (("density", "target_sparsity"), ("target_sparsity", "density")):
            if given in gems and other not in gems:
                gems[other] = None
    return layer


def load_gems_config(source: str | Path | dict, overrides: list[str] | dict | None = None) -> dict:
    """Read a Gem-Miner config (a YAML path, a bundled name or a dict; nested or flat Rare Gems) and overrides.

    Returns the trainer's config with a resolved ``gems:`` section: ``density``
    (fraction kept) and ``target_sparsity`` (percent remaining) both set, and
    ``score_init``, ``prune_rate`` and ``finetune_epochs`` filled in.

    Raises:
        SparsetrainError: unknown key or value, a fraction given as a percentage,
            or a target that the thresholding rounds cannot reach.

    Example:
        >>> load_gems_config({"target_sparsity": 0.05})
        Traceback (most recent call last):
        ...
        sparsetrain.errors.SparsetrainError: target_sparsity is the percent of weights REMAINING ...
    """
    raw = _read(source)
    misplaced = [] if is_rare_gems(raw) else _flat_keys(raw)
    if misplaced:
        raise SparsetrainError("this config has sections, so every key goes in its section; flat Rare Gems keys "
                               f"found: {', '.join(f'{k} (write {w})' for k, w in misplaced)}.")
    layers = [GEMS_BASE, from_rare_gems(raw) if is_rare_gems(raw) else raw]
    if overrides:
        layers.append(_override_layer(overrides))
    cfg = merge_config(layers, sections=("gems",))
    base = merge_config([GEMS_BASE])
    changed = [key for key in UNREAD if _dig(cfg, key) != _dig(base, key)]
    if changed:
        raise SparsetrainError(f"Gem-Miner does not read {', '.join(changed)}; remove them from the config. It reads "
                               "seed, epochs, batch_size, eval_batch_size, device, threads, data, model, optim, "
                               "schedule (name, milestones, gamma), run (dir, name, progress) and gems.")
    return _resolve(cfg)


def _resolve(cfg: dict) -> dict:
    """Fill in the derived ``gems:`` values and check what depends on the trainer's keys."""
    g = cfg["gems"]
    g["density"] = _density(g)
    g["target_sparsity"] = g["density"] * 100.0
    _choice(cfg["optim"]["name"], "optim.name", OPTIMIZERS)
    _choice(cfg["schedule"]["name"], "schedule.name", LR_POLICIES)
    if g["score_init"] is None:
        g["score_init"] = "kaiming_uniform" if g["algo"] in ("ep", "global_ep") else "unif"
    if g["prune_rate"] is None:  # the original's --prune-rate: what remains for edge-popup, else its 0.5
        g["prune_rate"] = g["density"] if g["algo"] in ("ep", "global_ep") else 0.5
    if g["finetune_epochs"] is None:
        g["finetune_epochs"] = cfg["epochs"]
    if g["algo"] == "hc_iter" and rounds(cfg["epochs"], g["iter_period"]) < 1:
        raise SparsetrainError(
            f"the target cannot be reached: hc_iter thresholds after epochs P, 2P, ... < E, and with "
            f"epochs={cfg['epochs']} and iter_period={g['iter_period']} there is no round "
            f"(K = floor((E - 1) / P) = 0). Use epochs > iter_period, e.g. epochs: {g['iter_period'] + 1}.")
    g["exclude"], g["search_only"] = list(g["exclude"]), list(g["search_only"])
    return cfg


__all__ = ["FIXED_KEYS", "GEMS_BASE", "GEMS_DEFAULTS", "IGNORED_KEYS", "RARE_GEMS_KEYS", "SHARED_KEYS",
           "check_gems_section", "check_reachable", "finetune_milestones", "from_rare_gems", "is_prune_epoch",
           "is_rare_gems", "load_gems_config", "nested_key", "round_rate", "rounds", "search_milestones", "survivors"]
