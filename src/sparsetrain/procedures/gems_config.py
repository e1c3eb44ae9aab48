"""Gem-Miner configuration: Rare Gems YAML keys onto ours, validation, the thresholding schedule.

The original repository's configs (ksreenivasan/pruning_is_enough, docs/algorithms.md, "Rare Gems / Gem-Miner and
edge-popup")
load as they are: their keys are renamed to ours (:data:`RARE_GEMS_KEYS`), keys
that only steer the original's hardware or logging are accepted and ignored
(:data:`IGNORED_KEYS`), and keys whose other values we do not implement must keep
the value we do implement (:data:`FIXED_KEYS`).

Units. ``target_sparsity`` is the **percent of weights remaining** (0.59 means
99.41 % sparsity). A value below 1 is refused unless ``allow_sub_percent: true``
says it is meant (a fraction such as 0.05 for "5 % remaining" or 0.95 for
"95 % sparsity" is the usual mistake; the original ResNet-20 0.59 % config needs
the flag). Our own key ``density`` is the fraction kept, in (0, 1].

Example:
    >>> cfg = load_gems_config({"target_sparsity": 5, "epochs": 150, "iter_period": 5})
    >>> cfg["density"], rounds(cfg["epochs"], cfg["iter_period"])
    (0.05, 29)
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

from sparsetrain.core.topk import exact_count
from sparsetrain.errors import SparsetrainError, check_count, check_density, unknown_choice
from sparsetrain.procedures.scores import ALGOS, REGULARIZERS, ROUNDINGS, SCORE_INITS
from sparsetrain.train.config import read_yaml
from sparsetrain.train.recipes import find_yaml

GEMS_RECIPES_DIR = Path(__file__).resolve().parent.parent / "recipes" / "tickets"

#: our keys and their defaults (the Rare Gems sample config where it has one; small data by default)
DEFAULTS: dict[str, Any] = {
    "name": None, "dataset": "mnist1d", "data_root": None, "data_kwargs": {}, "val_fraction": 0.0,
    "model": "mlp", "model_kwargs": {}, "seed": 0, "batch_size": 128, "eval_batch_size": 1000,
    "device": "cpu", "threads": 0,
    "algo": "hc_iter", "density": None, "target_sparsity": None, "allow_sub_percent": False,
    "epochs": 150, "iter_period": 5,
    "optimizer": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 0.0, "lr_policy": "cosine",
    "lr_gamma": 0.1, "milestones": None,
    "weight_init": "signed_constant", "score_init": None, "quantized": True, "quantize_threshold": 0.5,
    "regularization": "L2", "lmbda": 1e-4, "alpha": 1.0, "alpha_prime": 1.0,
    "nonaffine_bn": True, "zero_bias": True, "scale_fan": False, "prune_rate": None, "exclude": [],
    "search_only": [], "rounding": "naive",
    "finetune": True, "finetune_epochs": None, "finetune_lr": 0.01, "finetune_momentum": 0.9,
    "finetune_weight_decay": 1e-4, "finetune_lr_policy": "multistep", "finetune_milestones": None,
    "unflag_before_finetune": True, "sanity_checks": True, "invert_sanity_check": False,
}

#: Rare Gems key -> our key
RARE_GEMS_KEYS = {
    "arch": "model", "data": "data_root", "wd": "weight_decay", "gamma": "lr_gamma", "init": "weight_init",
    "hc_quantized": "quantized", "round": "rounding", "fine_tune_lr": "finetune_lr",
    "fine_tune_wd": "finetune_weight_decay", "fine_tune_lr_policy": "finetune_lr_policy",
}
#: Rare Gems keys whose meaning flips or whose values are renamed
_LR_POLICIES = {"cosine_lr": "cosine", "multistep_lr": "multistep", "constant_lr": "constant"}
#: accepted and ignored (hardware, logging, bookkeeping of the original scripts)
IGNORED_KEYS = ("subfolder", "workers", "gpu", "checkpoint_at_prune", "noise", "trial_num", "results_filename",
                "config", "log_dir", "save_every", "print_freq", "description", "num_test")
#: keys whose only implemented value is the one shown
FIXED_KEYS = {"conv_type": "SubnetConv", "freeze_weights": True, "prune_type": "BottomK", "noise_ratio": 0,
              "bias": False, "project_freq": 1, "bottom_k_on_forward": False}
WEIGHT_INITS = ("signed_constant", "kaiming_normal", "default")
LR_POLICIES = ("cosine", "multistep", "constant")


def _read(source: str | Path | dict) -> dict:
    if isinstance(source, dict):
        return copy.deepcopy(source)
    return read_yaml(find_yaml(source, GEMS_RECIPES_DIR, "gems_*.yaml", "Gem-Miner config"), "Gem-Miner config")


def _rename(raw: dict) -> dict:
    """Rare Gems keys and values onto ours; unknown keys are errors."""
    cfg: dict[str, Any] = {}
    for key, value in raw.items():
        if key in IGNORED_KEYS:
            continue
        if key in FIXED_KEYS:
            if value != FIXED_KEYS[key]:
                raise SparsetrainError(f"{key}: {value!r} is not implemented; only {key}: {FIXED_KEYS[key]!r} "
                                       "(remove the key or set that value).")
            continue
        if key == "skip_sanity_checks":
            key, value = "sanity_checks", not value
        elif key == "bn_type":
            if value not in ("NonAffineBatchNorm", "AffineBatchNorm", "BatchNorm"):
                raise unknown_choice("bn_type", str(value), ["NonAffineBatchNorm", "AffineBatchNorm"])
            key, value = "nonaffine_bn", value == "NonAffineBatchNorm"
        key = RARE_GEMS_KEYS.get(key, key)
        if key not in DEFAULTS:
            raise unknown_choice("Gem-Miner config key", key, [*DEFAULTS, *RARE_GEMS_KEYS, *FIXED_KEYS,
                                                               "skip_sanity_checks", "bn_type"])
        if key in ("lr_policy", "finetune_lr_policy"):
            value = _LR_POLICIES.get(value, value)
        if key in ("dataset", "model") and isinstance(value, str):
            value = value.lower()
        cfg[key] = value
    return cfg


def _density(cfg: dict) -> float:
    """The fraction kept, from ``target_sparsity`` (percent remaining) or ``density`` (fraction)."""
    target, density = cfg["target_sparsity"], cfg["density"]
    if target is not None and density is not None and math.isclose(target, 100.0 * density, rel_tol=1e-9):
        return check_density(density)  # a config this function already resolved
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
    if target < 1 and not cfg["allow_sub_percent"]:
        raise SparsetrainError(
            f"target_sparsity is the percent of weights REMAINING (Rare Gems convention): {target} means "
            f"{target} % kept, i.e. {100 - target:g} % sparsity. That looks like a fraction: for {target * 100:g} % "
            f"remaining write target_sparsity: {target * 100:g}; for {target * 100:g} % sparsity write "
            f"target_sparsity: {100 - target * 100:g}. If {target} % remaining is meant (as in the original "
            "ResNet-20 0.59 config), add allow_sub_percent: true.")
    return target / 100.0


def _positive_int(cfg: dict, key: str) -> None:
    check_count(cfg[key], key)


def _choice(cfg: dict, key: str, choices) -> None:
    if cfg[key] not in choices:
        raise unknown_choice(key, str(cfg[key]), choices)


def load_gems_config(path_or_dict: str | Path | dict) -> dict:
    """Read a Gem-Miner config (a YAML path, a bundled name or a dict) into our validated keys.

    Returns every key of :data:`DEFAULTS`, with ``density`` as the fraction kept
    and ``target_sparsity`` as the percent remaining.

    Raises:
        SparsetrainError: unknown key or value, a fraction given as a percentage,
            or a target that the thresholding rounds cannot reach.

    Example:
        >>> load_gems_config({"target_sparsity": 0.05})
        Traceback (most recent call last):
        ...
        sparsetrain.errors.SparsetrainError: target_sparsity is the percent of weights REMAINING ...
    """
    cfg = {**copy.deepcopy(DEFAULTS), **_rename(_read(path_or_dict))}
    cfg["density"] = _density(cfg)
    cfg["target_sparsity"] = cfg["density"] * 100.0
    for key in ("epochs", "iter_period", "batch_size", "eval_batch_size"):
        _positive_int(cfg, key)
    _choice(cfg, "algo", ALGOS)
    _choice(cfg, "regularization", REGULARIZERS)
    _choice(cfg, "rounding", ROUNDINGS)
    _choice(cfg, "weight_init", WEIGHT_INITS)
    _choice(cfg, "lr_policy", LR_POLICIES)
    _choice(cfg, "finetune_lr_policy", LR_POLICIES)
    _choice(cfg, "optimizer", ("sgd", "adam"))
    if cfg["score_init"] is None:
        cfg["score_init"] = "kaiming_uniform" if cfg["algo"] in ("ep", "global_ep") else "unif"
    _choice(cfg, "score_init", SCORE_INITS)
    if cfg["prune_rate"] is None:  # the original's --prune-rate: what remains for edge-popup, else its 0.5
        cfg["prune_rate"] = cfg["density"] if cfg["algo"] in ("ep", "global_ep") else 0.5
    if isinstance(cfg["prune_rate"], bool) or not 0.0 <= float(cfg["prune_rate"]) < 1.0:
        raise SparsetrainError(f"prune_rate must lie in [0, 1) (scale_fan scales fan_in by 1 - prune_rate), "
                               f"got {cfg['prune_rate']!r}.")
    if cfg["finetune_epochs"] is None:
        cfg["finetune_epochs"] = cfg["epochs"]
    _positive_int(cfg, "finetune_epochs")
    if not 0.0 < float(cfg["quantize_threshold"]) < 1.0:
        raise SparsetrainError(f"quantize_threshold must lie in (0, 1), got {cfg['quantize_threshold']!r}.")
    if float(cfg["lmbda"]) < 0:
        raise SparsetrainError(f"lmbda (the regulariser weight) must be >= 0, got {cfg['lmbda']!r}.")
    if cfg["algo"] == "hc_iter" and rounds(cfg["epochs"], cfg["iter_period"]) < 1:
        raise SparsetrainError(
            f"the target cannot be reached: hc_iter thresholds after epochs P, 2P, ... < E, and with "
            f"epochs={cfg['epochs']} and iter_period={cfg['iter_period']} there is no round "
            f"(K = floor((E - 1) / P) = 0). Use epochs > iter_period, e.g. epochs: {cfg['iter_period'] + 1}.")
    cfg["exclude"] = list(cfg["exclude"])
    cfg["search_only"] = list(cfg["search_only"])
    return cfg


def rounds(epochs: int, iter_period: int) -> int:
    """K = floor((E - 1) / P): thresholding rounds of ``hc_iter``.
    See docs/algorithms.md, "Rare Gems / Gem-Miner and edge-popup".

    Example:
        >>> rounds(150, 5), rounds(5, 2), rounds(5, 5)
        (29, 2, 0)
    """
    return (epochs - 1) // iter_period


def is_prune_epoch(epoch: int, iter_period: int) -> bool:
    """Whether thresholding runs after 0-based epoch ``epoch``: e mod P = 0 and e != 0."""
    return epoch != 0 and epoch % iter_period == 0


def round_rate(density: float, n_rounds: int) -> float:
    """q = 1 - d^(1/K): the fraction of flagged weights removed per round.

    Example:
        >>> round(round_rate(0.05, 29), 6)
        0.098145
    """
    return 1.0 - density ** (1.0 / n_rounds)


def survivors(total: int, density: float, n_rounds: int, r: int) -> int:
    """Flagged weights after round ``r`` of ``n_rounds``: ``exact_count(d^(r/K), N)``.

    Fixed on purpose: the original removes ceil(q * n_flagged) per round, which
    drifts by rounding and misses round(d N) (docs/concepts.md, "Guarantees"). Counting the
    survivors from the round index removes q of the flagged weights per round to
    within one weight and ends exactly at round(d N) after K rounds.

    Example:
        >>> [survivors(100, 0.25, 2, r) for r in range(3)]
        [100, 50, 25]
    """
    return exact_count(density ** (r / n_rounds), total)


def check_reachable(density: float, total: int) -> int:
    """The target count round(d N); a target below one weight is an error."""
    if math.floor(density * total + 0.5) < 1:
        raise SparsetrainError(f"the target keeps {density * 100:g} % of {total} prunable weights, i.e. less than "
                               "one weight: raise target_sparsity (percent remaining) or use a larger model.")
    return exact_count(density, total)


def finetune_milestones(cfg: dict) -> list[int]:
    """Fine-tuning LR milestones in epochs: as given, else the original's table
    ([80, 120] for 150/160 epochs, [50, 80] for 100, [100, 150] for 200), else 50 % / 75 %."""
    if cfg["finetune_milestones"] is not None:
        return [int(m) for m in cfg["finetune_milestones"]]
    e = cfg["finetune_epochs"]
    table = {150: [80, 120], 160: [80, 120], 100: [50, 80], 200: [100, 150]}
    return table.get(e, [e // 2, (3 * e) // 4])


__all__ = ["DEFAULTS", "FIXED_KEYS", "IGNORED_KEYS", "RARE_GEMS_KEYS", "check_reachable", "finetune_milestones",
           "is_prune_epoch", "load_gems_config", "round_rate", "rounds", "survivors"]
