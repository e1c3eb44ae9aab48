"""Lottery tickets: iterative magnitude pruning (IMP) with weight or learning-rate rewinding.

docs/algorithms.md, "Lottery tickets and IMP" (Frankle & Carbin 2019; Frankle et al. 2020; Renda
et al. 2020; Rare Gems ``imp_main.py``). A procedure over the reference
trainer, not a method: every round is a normal run folder.

    round 0: train dense; save the rewind point (the weights at iteration k)
    round r >= 1: keep the exact_count((1 - p)^r, N) largest |w| among the
        survivors of round r - 1 (global, or per layer with N = N_l), then
        rewind = "weights": reset the survivors to the rewind point, or
        rewind = "lr":      keep the trained weights,
        and train again with a fresh optimizer and the full LR schedule.

Rounding rule: after round r the kept count is ``exact_count(d_r, N)``
(round half up, at least one weight; :func:`sparsetrain.core.topk.exact_count`)
of the total (global) or of each layer, with d_r = max((1 - p)^r, target):
counts are computed from the original size every round, so after R rounds
the density is (1 - p)^R to the weight and rounding never drifts.

Non-prunable parameters (biases, norms) and buffers: the canonical lottery
ticket rewinds the whole network (``rewind_non_prunable=True``, default);
Rare Gems keeps their trained values (``False``).

How a round gets its mask: each round trains with :func:`imp_round`, a
``Method`` handed to the trainer as an object (``train(..., method=...)``),
whose init op loads the round's ``masks.pt`` and ``weights.pt`` and whose only
update saves the rewind point in round 0; it never enters the method registry.
The ``imp:`` settings are a config section registered with the one config
merge (``--imp.rounds 2``). Single process (no DDP) for now.

Example:
    >>> cfg = make_imp_config({"prune_fraction": 0.2, "target_density": 0.1})
    >>> cfg.rounds, round(cfg.density(cfg.rounds), 3)
    (11, 0.1)
"""

from __future__ import annotations

import copy
import math
from dataclasses import MISSING, asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from sparsetrain import ops
from sparsetrain.context import SparseContext
from sparsetrain.core.topk import ceil_count, exact_count, global_topk, topk_mask
from sparsetrain.errors import SparsetrainError, check_count, check_density, unknown_choice
from sparsetrain.methods.registry import Method
from sparsetrain.ops import Op
from sparsetrain.train.checkpoint import load_checkpoint, save_checkpoint
from sparsetrain.train.config import register_section

#: the name a round's method is recorded under (it is never registered)
ROUND_METHOD = "_imp_round"
SCOPES, REWINDS = ("global", "layer"), ("weights", "lr")


@dataclass(frozen=True)
class ImpConfig:
    """The ``imp:`` section of a tickets config (see the module docstring)."""

    rounds: int
    prune_fraction: float = 0.2
    target_density: float | None = None
    scope: str = "global"
    rewind: str = "weights"
    rewind_iter: int = 0
    rewind_non_prunable: bool = True

    def density(self, r: int) -> float:
        """Target density of round ``r`` (1.0 for the dense round 0)."""
        d = (1.0 - self.prune_fraction) ** r
        return 1.0 if r == 0 else max(d, self.target_density or 0.0)


#: the ``imp:`` section of the one config (``--imp.rounds 2``), checked by :func:`make_imp_config`
register_section("imp", {f.name: (None if f.default is MISSING else f.default)
                         for f in fields(ImpConfig)}, check=lambda raw: make_imp_config(raw))


def rounds_to_reach(target: float, prune_fraction: float) -> int:
    """Fewest rounds R with (1 - p)^R <= target (float noise forgiven).

    Example:
        >>> rounds_to_reach(0.1, 0.2), rounds_to_reach(0.64, 0.2)
        (11, 2)
    """
    return max(1, ceil_count(math.log(target) / math.log(1.0 - prune_fraction)))


def make_imp_config(raw: dict[str, Any] | None) -> ImpConfig:
    """Validate an ``imp:`` mapping; percent-vs-fraction mix-ups get a clear message."""
    raw = dict(raw or {})
    known = set(ImpConfig.__dataclass_fields__)
    unknown = sorted(set(raw) - known)
    if unknown:
        raise SparsetrainError(f"unknown key imp.{unknown[0]}. Keys of imp: {', '.join(sorted(known))}.")
    p = raw.get("prune_fraction", 0.2)
    if not isinstance(p, (int, float)) or isinstance(p, bool) or not 0.0 < p < 1.0:
        hint = f" It looks like a percentage: pass {p / 100:g} for {p:g}%." if isinstance(p, (int, float)) \
            and 1.0 <= p < 100.0 else ""
        raise SparsetrainError(f"imp.prune_fraction is the fraction of surviving weights removed per round, "
                               f"in (0, 1) (0.2 = 20 %), got {p!r}.{hint}")
    target = raw.get("target_density")
    if target is not None:
        target = check_density(target, "imp.target_density")
    rounds = raw.get("rounds")
    if rounds is None and target is None:
        raise SparsetrainError("give imp.rounds (pruning rounds after the dense one) or imp.target_density "
                               "(fraction of weights kept at the end), e.g. --imp.target_density 0.1.")
    if rounds is not None:
        check_count(rounds, "imp.rounds")
    if target is not None:
        need = rounds_to_reach(target, p)
        if rounds is not None and need > rounds:
            raise SparsetrainError(
                f"imp.target_density {target:g} cannot be reached in {rounds} rounds at prune_fraction {p:g} "
                f"((1 - {p:g})^{rounds} = {(1 - p) ** rounds:.4g}); it takes {need} rounds. Raise imp.rounds "
                f"to {need} or imp.prune_fraction to {1 - target ** (1 / rounds):.4f}.")
        rounds = need if rounds is None else min(rounds, need)
    if raw.get("scope", "global") not in SCOPES:
        raise unknown_choice("imp.scope", raw["scope"], SCOPES)
    if raw.get("rewind", "weights") not in REWINDS:
        raise unknown_choice("imp.rewind", raw["rewind"], REWINDS)
    k = raw.get("rewind_iter", 0)
    if isinstance(k, bool) or not isinstance(k, int) or k < 0:
        raise SparsetrainError(f"imp.rewind_iter is an optimizer step (0 = initialisation), got {k!r}.")
    if not isinstance(raw.get("rewind_non_prunable", True), bool):
        raise SparsetrainError(f"imp.rewind_non_prunable must be true or false, got {raw['rewind_non_prunable']!r}.")
    return ImpConfig(**{**raw, "rounds": int(rounds), "prune_fraction": float(p), "target_density": target})


# ------------------------------------------------------------------------ the pruning step
def imp_masks(weights: dict[str, Tensor], masks: dict[str, Tensor], density: float,
              scope: str = "global") -> dict[str, Tensor]:
    """Keep the ``exact_count(density, N)`` largest |w| among the current survivors.

    ``scope="global"``: one ranking over all layers (N = all weights);
    ``"layer"``: each layer keeps ``exact_count(density, N_l)``. Ties go to the
    lower index (deterministic top-k).

    Example:
        >>> w = {"a": torch.tensor([0.1, -0.5, 0.3, 0.2]), "b": torch.tensor([0.9, 0.05])}
        >>> m = {"a": torch.ones(4, dtype=torch.bool), "b": torch.tensor([True, False])}
        >>> {n: v.tolist() for n, v in imp_masks(w, m, 0.5, "global").items()}
        {'a': [False, True, True, False], 'b': [True, False]}
    """
    if scope == "layer":
        return {n: topk_mask(weights[n].abs(), exact_count(density, m.numel()), m.bool()) for n, m in masks.items()}
    if scope != "global":
        raise unknown_choice("imp.scope", scope, SCOPES)
    total = sum(m.numel() for m in masks.values())
    return global_topk({n: weights[n].abs().float() for n in masks}, exact_count(density, total),
                       {n: m.bool() for n, m in masks.items()})


def round_start(cfg: ImpConfig, final: dict[str, Tensor], rewind: dict[str, Tensor] | None,
                prunable: list[str]) -> dict[str, Tensor]:
    """The state a pruned round starts from (before its mask is applied).

    ``rewind="lr"``: the previous round's final weights. ``"weights"``: the
    rewind point; without ``rewind_non_prunable`` everything that is not a
    pruned weight (biases, norms, running statistics) keeps its trained value.
    """
    if cfg.rewind == "lr":
        return {k: v.clone() for k, v in final.items()}
    if rewind is None:
        raise SparsetrainError("weight rewinding needs the rewind point (rewind.pt) saved by round 0; "
                               "start the procedure again in a new --out folder.")
    if cfg.rewind_non_prunable:
        return {k: v.clone() for k, v in rewind.items()}
    return {k: (rewind[k] if k in prunable else final[k]).clone() for k in final}


# ------------------------------------------------------------------------ the round's method
def install(masks_path: str | None, weights_path: str | None, save_rewind: str | None = None,
            rewind_iter: int = 0) -> Op:
    """Init op: load the round's start weights and masks (dense if none); save the rewind point at step 0."""
    def run(ctx: SparseContext) -> dict:
        if save_rewind and rewind_iter > ctx.total_steps:
            raise SparsetrainError(f"imp.rewind_iter {rewind_iter} is beyond the {ctx.total_steps} optimizer "
                                   "steps of a round; pick an earlier iteration.")
        if weights_path:
            ctx.model.load_state_dict(load_checkpoint(weights_path))
        if masks_path:
            given = load_checkpoint(masks_path)
            shapes = {n: list(m.shape) for n, m in given.items()}
            if shapes != {n: list(p.shape) for n, p in ctx.params.items()}:
                raise SparsetrainError(f"the masks in {masks_path} do not fit this model's sparsified weights; "
                                       "keep the model and the sparsity include/exclude of round 0.")
            ctx.masks = {n: m.to(device=ctx.params[n].device, dtype=torch.bool) for n, m in given.items()}
        else:
            ctx.masks = {n: torch.ones_like(p, dtype=torch.bool) for n, p in ctx.params.items()}
        if save_rewind and rewind_iter == 0:
            save_state(ctx, save_rewind)
        return {"installed": masks_path or "dense"}
    return Op(run, name="imp_install")


def save_state(ctx: SparseContext, path: str) -> dict:
    """Write the whole model state (weights, biases, buffers) to ``path`` atomically."""
    save_checkpoint({k: v.detach().cpu().clone() for k, v in ctx.model.state_dict().items()}, path)
    return {"rewind_saved": ctx.step}


def imp_round(masks: str | None = None, weights: str | None = None, save_rewind: str | None = None,
              rewind_iter: int = 0) -> Method:
    """One IMP round: a fixed mask from ``masks`` (a file; dense if None) on the weights of ``weights``
    (a file; the trainer's seeded init if None); round 0 saves the rewind point at ``rewind_iter``."""
    updates = ()
    if save_rewind and rewind_iter > 0:
        updates = (ops.when(lambda t, T: t == rewind_iter, Op(lambda ctx: save_state(ctx, save_rewind),
                                                              name="imp_save_rewind")),)
    return Method(init=install(masks, weights, save_rewind, rewind_iter), updates=updates)


def train_round(cfg: dict, run_dir: Path, resume: bool = False, **method: Any) -> dict:
    """Train one round into ``run_dir`` with the trainer; ``method`` are :func:`imp_round` arguments.

    The round's method is handed to the trainer as an object, so it never
    enters the method registry (nor ``sparsetrain methods``).
    """
    from sparsetrain.train.loop import train
    cfg = copy.deepcopy(cfg)
    args = {k: (str(v) if isinstance(v, Path) else v) for k, v in method.items()}
    cfg["method"] = {"name": ROUND_METHOD, **args}
    round_ = imp_round(**args)
    round_.name, round_.config = ROUND_METHOD, args  # what a resumed round is checked against
    return train(cfg, run_dir, resume=resume, method=round_)


# ------------------------------------------------------------------------ configuration files
TICKETS_DIR = Path(__file__).resolve().parent.parent / "recipes" / "tickets"
#: keys that may change when a procedure is resumed (they do not change what is trained)
RESUMABLE_CHANGES = {"run", "threads", "device"}


def find_tickets_config(name: str | Path) -> Path:
    """A YAML file as given, else a bundled IMP config (``recipes/tickets/imp_*.yaml``) by name.

    Example:
        >>> find_tickets_config("imp_mnist1d_mlp").name
        'imp_mnist1d_mlp.yaml'
    """
    from sparsetrain.train.recipes import find_recipe, find_yaml
    try:
        return find_yaml(name, TICKETS_DIR, "imp_*.yaml", "tickets config")
    except SparsetrainError as not_imp:
        try:  # a training recipe is a base too, with method.name=dense (IMP trains its own rounds)
            return find_recipe(name)
        except SparsetrainError:
            raise not_imp from None


def load_tickets_config(config: str | Path | None = None,
                        overrides: list[str] | dict | None = None) -> tuple[dict, ImpConfig]:
    """(trainer config, IMP config) from a YAML file / bundled name and dotted overrides.

    The file holds the trainer's keys plus an ``imp:`` section. The trainer's
    ``method`` is IMP's own round method; a config naming another method is
    refused (``dense`` or no method section is fine).

    Example:
        >>> cfg, imp = load_tickets_config(None, ["--imp.rounds", "2", "--epochs", "1"])
        >>> cfg["epochs"], imp.rounds, imp.scope
        (1, 2, 'global')
    """
    from sparsetrain.train.config import merge_config, parse_overrides, read_recipe
    layers = [{"method": {"name": "dense"}}]
    if config is not None:
        layers.append(read_recipe(find_tickets_config(config)))
    if overrides:
        layers.append(copy.deepcopy(overrides) if isinstance(overrides, dict) else parse_overrides(list(overrides)))
    cfg = merge_config(layers, sections=("imp",))
    imp_raw = cfg.pop("imp")
    if cfg["method"]["name"] != "dense":
        raise SparsetrainError(f"IMP trains its own rounds (dense, then fixed masks); the config's method "
                               f"{cfg['method']['name']!r} would be ignored. Remove the method section or "
                               "override it with method.name=dense.")
    return cfg, make_imp_config(imp_raw)


def load_saved(out_dir: str | Path) -> tuple[dict, ImpConfig]:
    """The configuration saved in an IMP folder's ``imp.yaml``."""
    path = Path(out_dir) / "imp.yaml"
    if not path.is_file():
        raise SparsetrainError(f"cannot resume {out_dir}: it has no imp.yaml (not an IMP folder).")
    return load_tickets_config(path)


def _check_same(out: Path, cfg: dict, imp: ImpConfig) -> None:
    old_cfg, old_imp = load_saved(out)
    diff = sorted(k for k in set(cfg) | set(old_cfg) if k not in RESUMABLE_CHANGES and cfg.get(k) != old_cfg.get(k))
    diff += sorted(f"imp.{k}" for k, v in asdict(imp).items()
                   if k not in ("rounds", "target_density") and getattr(old_imp, k) != v)
    if diff:
        raise SparsetrainError(f"cannot resume {out} with a different configuration ({', '.join(diff)} changed); "
                               "only imp.rounds / imp.target_density may change. Use a new --out folder.")


def prepare_out(out: Path, cfg: dict, imp: ImpConfig, resume: bool, overwrite: bool) -> None:
    """Make ``out`` ready for the procedure and write its ``imp.yaml``; a folder that already holds
    one is continued (``resume``, same configuration), replaced (``overwrite``) or refused."""
    import yaml

    from sparsetrain.train.folders import replace_folder
    if (out / "imp.yaml").is_file():
        if resume:
            _check_same(out, cfg, imp)
        elif overwrite:
            replace_folder(out, what="IMP folder")
        else:
            raise SparsetrainError(f"{out} already holds an IMP procedure. Pass --resume to continue after its "
                                   "last complete round, --overwrite to start again, or another --out.")
    from sparsetrain.core.files import atomic_write_text
    # with a target the rounds follow from it: save none, so a resume may move the target further
    section = {**asdict(imp), "rounds": None if imp.target_density is not None else imp.rounds}
    text = yaml.safe_dump({**cfg, "method": {"name": "dense"}, "imp": section}, sort_keys=False)
    atomic_write_text(out / "imp.yaml", text)


# ------------------------------------------------------------------------ the procedure
def round_dir(out: str | Path, r: int) -> Path:
    """The run folder of round ``r``."""
    return Path(out) / f"round_{r:02d}"


def prepare_round(imp: ImpConfig, out: Path, r: int) -> None:
    """Write round ``r``'s ``masks.pt`` (pruned from round r - 1) and ``weights.pt`` (its start)."""
    from sparsetrain.train.run import CHECKPOINT
    prev = load_checkpoint(round_dir(out, r - 1) / CHECKPOINT)
    final, masks = prev["model"], prev["sparsifier"]["masks"]
    new = imp_masks({n: final[n] for n in masks}, masks, imp.density(r), imp.scope)
    empty = [n for n, m in new.items() if not m.any()]
    if empty:
        print(f"IMP round {r}: warning: layer collapse, no weight left in {', '.join(empty)}", flush=True)
    rewind = load_checkpoint(out / "rewind.pt") if imp.rewind == "weights" else None
    save_checkpoint(new, round_dir(out, r) / "masks.pt")
    save_checkpoint(round_start(imp, final, rewind, list(masks)), round_dir(out, r) / "weights.pt")


def run_round(cfg: dict, imp: ImpConfig, out: Path, r: int) -> dict:
    """Train round ``r`` unless it is complete; an interrupted round resumes from its checkpoint."""
    from sparsetrain.train.run import CHECKPOINT
    rd = round_dir(out, r)
    if not (rd / "summary.json").is_file():
        resume = (rd / CHECKPOINT).is_file()
        if r == 0:
            args = ({"save_rewind": (out / "rewind.pt").resolve(), "rewind_iter": imp.rewind_iter}
                    if imp.rewind == "weights" else {})
        else:
            if not resume:
                prepare_round(imp, out, r)
            args = {"masks": (rd / "masks.pt").resolve(), "weights": (rd / "weights.pt").resolve()}
        print(f"IMP round {r}/{imp.rounds}: target density {imp.density(r):.4f}"
              f"{' (resuming)' if resume else ''}", flush=True)
        train_round(cfg, rd, resume, **args)
        if r == 0 and imp.rewind == "weights" and not (out / "rewind.pt").is_file():
            raise SparsetrainError(f"round 0 ended without reaching imp.rewind_iter {imp.rewind_iter}; "
                                   "pick an earlier iteration.")
    import json
    s = json.loads((rd / "summary.json").read_text())
    return {"round": r, "target_density": imp.density(r), "density": s["density"],
            "final_test_acc": s["final_test_acc"], "best_test_acc": s["best"]["test_acc"],
            "layer_density": s["layer_density"], "wall_time_s": s["wall_time_s"], "run": str(rd)}


def run_imp(cfg: dict, imp: ImpConfig, out_dir: str | Path, resume: bool = False,
            overwrite: bool = False) -> dict[str, Any]:
    """Run (or continue) IMP into ``out_dir``; returns ``{"imp": ..., "rounds": [row, ...]}``.

    Writes ``imp.yaml``, ``rewind.pt``, one run folder per round
    (``round_00`` dense, ``round_01`` ...), ``imp_summary.{json,csv,md}`` and
    ``imp_accuracy.png``. Re-running with ``resume=True`` skips complete rounds.
    """
    out = Path(out_dir)
    prepare_out(out, cfg, imp, resume, overwrite)
    rows = []
    for r in range(imp.rounds + 1):
        rows.append(run_round(cfg, imp, out, r))
        write_summary(out, imp, rows)
    return {"imp": asdict(imp), "rounds": rows, "out": str(out)}


# ------------------------------------------------------------------------ summary table and plot
def summary_markdown(rows: list[dict]) -> str:
    """The per-round table in Markdown (accuracies in %)."""
    lines = ["| round | density | sparsity % | final test acc % | best test acc % |", "|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {row['round']} | {row['density']:.4f} | {100 * (1 - row['density']):.2f} | "
                     f"{100 * row['final_test_acc']:.2f} | {100 * row['best_test_acc']:.2f} |")
    return "\n".join(lines) + "\n"


def write_summary(out: Path, imp: ImpConfig, rows: list[dict]) -> None:
    """``imp_summary.json`` / ``.csv`` / ``.md`` and the accuracy-vs-density plot."""
    import json

    from sparsetrain.core.files import atomic_write_text
    atomic_write_text(out / "imp_summary.json", json.dumps({"imp": asdict(imp), "rounds": rows}, indent=2))
    keys = ["round", "target_density", "density", "final_test_acc", "best_test_acc", "wall_time_s", "run"]
    csv = [",".join(keys)] + [",".join(str(row[k]) for k in keys) for row in rows]
    atomic_write_text(out / "imp_summary.csv", "\n".join(csv) + "\n")
    atomic_write_text(out / "imp_summary.md", summary_markdown(rows))
    plot_rounds(rows, out / "imp_accuracy.png", title=f"IMP ({imp.scope}, rewind {imp.rewind})")


def plot_rounds(rows: list[dict], path: Path, title: str = "IMP") -> Path | None:
    """Test accuracy vs density, one point per round (log density axis, sparser to the right)."""
    from sparsetrain.core.figures import pyplot, save_figure
    plt = pyplot()
    if plt is None:
        return None
    fig, ax = plt.subplots(figsize=(5, 3.5))
    dens = [r["density"] for r in rows]
    ax.plot(dens, [100 * r["final_test_acc"] for r in rows], "o-", label="final")
    ax.plot(dens, [100 * r["best_test_acc"] for r in rows], "x--", alpha=0.6, label="best epoch")
    for r in rows:
        ax.annotate(str(r["round"]), (r["density"], 100 * r["final_test_acc"]), fontsize=7,
                    textcoords="offset points", xytext=(0, 5))
    ax.set_xscale("log")
    ax.invert_xaxis()
    ax.set(xlabel="density (fraction of weights kept)", ylabel="test accuracy %", title=title)
    ax.legend()
    save_figure(fig, path)
    return path


__all__ = ["ImpConfig", "imp_masks", "imp_round", "load_tickets_config", "make_imp_config", "round_start",
           "rounds_to_reach", "run_imp", "train_round"]
