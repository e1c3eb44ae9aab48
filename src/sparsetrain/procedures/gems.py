"""Rare Gems / Gem-Miner: find a sparse subnetwork at initialisation, then fine-tune it.
See docs/algorithms.md, "Rare Gems / Gem-Miner and edge-popup".

Sreenivasan et al. 2022, "Rare Gems: Finding Lottery Tickets at Initialization".
The procedure, as in the paper's algorithm and ``main.py`` / ``main_utils.py``:

1. Freeze signed-constant weights; learn scores p in [0, 1] with SGD on
   CE + lambda * R(p), forward with ``w * 1[p > 0.5] * flag`` (straight-through
   estimator), projecting p onto [0, 1] before every step and after every epoch.
2. ``hc_iter``: after epochs P, 2P, ... (0-based, K = floor((E-1)/P) rounds)
   unflag the globally lowest |p| so that d^(r/K) of the weights stay after round
   r (rate q = 1 - d^(1/K) per round). If rounding ever leaves 0 % of the
   weights, stop and threshold once straight to the target.
3. Round the scores (``naive`` p > 0.5, ``prob``, ``all_ones``): the accuracy
   of these untrained weights under the rounded mask is the "rare gem" accuracy.
4. Fine-tune the weights under the mask (``unflag_before_finetune``: mask = flag,
   exactly the target; else flag * 1[p > 0.5]) with SGD and multistep LR,
   through the ordinary engine (a fixed mask, docs/concepts.md, "Guarantees").
5. Sanity checks from the same pre-fine-tune model: weights re-drawn (kaiming
   normal), masks shuffled within each layer, and optionally the inverted scores.

Edge-popup (``ep``, ``global_ep``) shares steps 1, 3 (its top-k mask) and 4.

Example (about 10 s; ``tests/test_gems.py`` runs the same end to end)::

    >>> cfg = load_gems_config("gems_digits", ["--epochs", "3", "--gems.iter_period", "1",
    ...                                        "--gems.finetune_epochs", "1"])  # doctest: +SKIP
    >>> summary = run_gems(cfg, "runs/gems-digits", progress=False)  # doctest: +SKIP
    >>> round(summary["density"], 2)  # doctest: +SKIP
    0.05
"""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from sparsetrain.core.layout import out_axis
from sparsetrain.core.selection import select_parameters
from sparsetrain.distributed import pick_device
from sparsetrain.procedures.finetune import MaskedTrainer, epoch_lr, layer_densities, masked_accuracy
from sparsetrain.procedures.gems_config import load_gems_config
from sparsetrain.procedures.gems_schedule import (
    check_reachable,
    is_prune_epoch,
    round_rate,
    rounds,
    search_milestones,
    survivors,
)
from sparsetrain.procedures.scores import ScoreSearch, density_of, kaiming_normal_, signed_constant_
from sparsetrain.train.config import builder_kwargs, dump_config
from sparsetrain.train.data import create_dataset, make_loaders
from sparsetrain.train.epoch import on_device, train_epoch
from sparsetrain.train.models import create_model, input_kwargs
from sparsetrain.train.tasks import Task


class RunLog:
    """metrics.jsonl writer and the one-line-per-epoch printout."""

    def __init__(self, path: Path, progress: bool) -> None:
        self.path, self.progress, self.rows = path, progress, []
        path.write_text("")

    def __call__(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        with self.path.open("a") as f:
            f.write(json.dumps(row) + "\n")
        if self.progress:
            shown = {k: (f"{v:.4f}" if isinstance(v, float) else v) for k, v in row.items() if k != "time"}
            print(" ".join(f"{k}={v}" for k, v in shown.items()), flush=True)


def build(cfg: dict) -> tuple[nn.Module, Any, Any]:
    """Model and loaders of the config's ``data:`` and ``model:`` from the trainer's registries."""
    data, name = cfg["data"], cfg["model"]["name"]
    splits = create_dataset(data["name"], root=data["root"], seed=cfg["seed"], **builder_kwargs(cfg, "data"))
    loaders = make_loaders(splits, cfg["batch_size"], seed=cfg["seed"], val_fraction=data["val_fraction"],
                           eval_batch_size=cfg["eval_batch_size"])
    given = builder_kwargs(cfg, "model")
    torch.manual_seed(cfg["seed"])
    model = create_model(name, num_classes=splits.num_classes, **input_kwargs(name, splits.input_shape, given),
                         **given)
    return model.to(cfg["device"]), loaders, splits


def make_bn_nonaffine_(model: nn.Module) -> nn.Module:
    """Drop every BatchNorm's weight and bias (``affine=False``; the classes stay the same).

    Rare Gems' ``NonAffineBatchNorm``. Call it on a fresh model before loading a
    ``model.pt`` written with ``nonaffine_bn: true``.

    Example:
        >>> bn = make_bn_nonaffine_(nn.Sequential(nn.BatchNorm1d(3)))[0]
        >>> bn.affine, bn.weight is None, sorted(bn.state_dict())[:2]
        (False, True, ['num_batches_tracked', 'running_mean'])
    """
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.affine:
            m.affine, m.weight, m.bias = False, None, None
    return model


def prepare_model(model: nn.Module, cfg: dict, generator: torch.Generator) -> list[str]:
    """Rare Gems' network: non-affine BatchNorm, signed-constant weights, bias-free prunable layers.

    Returns the names of the prunable weights (conv / linear, minus ``gems.exclude``).
    """
    g = cfg["gems"]
    names = list(select_parameters(model, exclude=tuple(g["exclude"])))
    if g["nonaffine_bn"]:
        make_bn_nonaffine_(model)
    modules = dict(model.named_modules())
    for name in names:
        layer = modules[name.rsplit(".", 1)[0] if "." in name else ""]
        if g["weight_init"] == "signed_constant":
            fan_scale = 1.0 - g["prune_rate"] if g["scale_fan"] else 1.0
            signed_constant_(layer.weight, generator, fan_scale, out_axis(layer))
        elif g["weight_init"] == "kaiming_normal":
            kaiming_normal_(layer.weight, generator, out_axis(layer))
        if g["zero_bias"] and getattr(layer, "bias", None) is not None:
            nn.init.zeros_(layer.bias)
    return names


def search_epoch(search: ScoreSearch, optimizer, loader, cfg: dict, device) -> tuple[float, float]:
    """One epoch of score training: the trainer's epoch (:func:`~sparsetrain.train.epoch.train_epoch`) on
    the masked forward, with the regulariser added to the loss and the scores projected onto [0, 1]
    before every forward (``project_freq = 1``) and after the epoch. Returns (mean loss, accuracy)."""
    g = cfg["gems"]

    def loss_fn(out: Tensor, y: Tensor) -> Tensor:
        loss = Task.loss(out, y)
        if g["lmbda"] > 0 and g["regularization"] != "none":
            loss = loss + g["lmbda"] * search.penalty(g["regularization"], g["alpha"], g["alpha_prime"])
        return loss

    search.model.train()
    totals = train_epoch(search, loss_fn, optimizer, on_device(loader, device), before_step=search.project_)
    search.project_()
    return totals.loss, totals.accuracy


def search_phase(search: ScoreSearch, cfg: dict, loaders, log: RunLog, generator: torch.Generator) -> dict:
    """Train the scores for ``epochs`` with ``optim`` and ``schedule`` (per epoch), thresholding every
    ``gems.iter_period`` epochs (``hc_iter``)."""
    device, g, o, epochs = cfg["device"], cfg["gems"], cfg["optim"], cfg["epochs"]
    params = search.score_list()
    if o["name"] == "sgd":
        optimizer = torch.optim.SGD(params, lr=o["lr"], momentum=o["momentum"], weight_decay=o["weight_decay"],
                                    nesterov=bool(o["nesterov"]) and o["momentum"] > 0)
    else:
        optimizer = torch.optim.Adam(params, lr=o["lr"], weight_decay=o["weight_decay"])
    total, n_rounds = search.numel(), rounds(epochs, g["iter_period"])
    target = check_reachable(g["density"], total)
    done, stopped, started = 0, None, time.perf_counter()
    milestones = search_milestones(cfg)
    for epoch in range(epochs):
        lr = epoch_lr(cfg["schedule"]["name"], o["lr"], epoch, epochs, milestones, cfg["schedule"]["gamma"])
        for group in optimizer.param_groups:
            group["lr"] = lr
        train_loss, train_acc = search_epoch(search, optimizer, loaders.train, cfg, device)
        pruned = 0
        if g["algo"] == "hc_iter" and is_prune_epoch(epoch, g["iter_period"]) and done < n_rounds:
            done += 1
            pruned = search.keep_top_(survivors(total, g["density"], n_rounds, done), g["invert_sanity_check"])
        rounded = search.hard_masks(g["rounding"], generator)
        row = {"phase": "search", "epoch": epoch + 1, "lr": lr, "train_loss": train_loss, "train_acc": train_acc,
               "test_acc": masked_accuracy(search, None, loaders.test, device),
               "test_acc_rounded": masked_accuracy(search, rounded, loaders.test, device),
               "flag_density": search.flagged() / total, "rounded_density": density_of(rounded),
               "round": done, "pruned": pruned, "time": time.perf_counter() - started}
        log(row)
        if g["algo"] in ("hc", "hc_iter") and row["rounded_density"] == 0.0:
            # the 0 %-remaining safety of the original: stop and threshold once to the target
            search.keep_top_(target, g["invert_sanity_check"])
            stopped = epoch + 1
            log({"phase": "search", "event": "zero_remaining_stop", "epoch": epoch + 1,
                 "flag_density": search.flagged() / total})
            break
    return {"rounds_done": done, "rounds": n_rounds, "rate": round_rate(g["density"], max(1, n_rounds)),
            "stopped_at_epoch": stopped, "target_count": target, "time_s": time.perf_counter() - started}


def finetune_masks(search: ScoreSearch, gems: dict) -> dict[str, Tensor]:
    """The mask the weights are trained under: the flags (``unflag_before_finetune``: scores
    reset to 1, so exactly the target survives) or flag * 1[p > 0.5]; edge-popup's top-k.

    Plain ``hc`` has no thresholding rounds (every flag is on), so unflagging would
    train the dense network: it always fine-tunes the rounded mask. ``gems`` is the config's ``gems:`` section.
    """
    if search.algo in ("ep", "global_ep"):
        return search.hard_masks()
    unflag = gems["unflag_before_finetune"] and search.algo == "hc_iter"
    return search.hard_masks("all_ones" if unflag else "naive")


def sanity_masks(kind: str, masks: dict[str, Tensor], search: ScoreSearch,
                 generator: torch.Generator) -> dict[str, Tensor]:
    """``reshuffle``: each layer's mask randomly permuted; ``reinit``: the mask unchanged (the
    weights change). The inverted check is a whole run of its own (``invert_sanity_check``)."""
    out = {}
    for name, m in masks.items():
        if kind == "reshuffle":
            perm = torch.randperm(m.numel(), generator=generator).to(m.device)
            out[name] = m.flatten()[perm].view_as(m)
        else:
            out[name] = m.clone()
    return out


def _save_plot(rows: list[dict], path: Path) -> Path | None:
    from sparsetrain.core.figures import pyplot, save_figure
    plt = pyplot()
    if plt is None:
        return None
    rows = [r for r in rows if r.get("phase") == "search" and "test_acc" in r]
    ep = [r["epoch"] for r in rows]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.5))
    a.plot(ep, [r["flag_density"] for r in rows], label="flagged (thresholding)")
    a.plot(ep, [r["rounded_density"] for r in rows], label="rounded (p > 0.5)")
    a.set(xlabel="search epoch", ylabel="density", yscale="log", title="density")
    b.plot(ep, [r["test_acc"] for r in rows], label="search forward")
    b.plot(ep, [r["test_acc_rounded"] for r in rows], label="rounded mask")
    b.set(xlabel="search epoch", ylabel="test accuracy", title="accuracy of untrained weights")
    for ax in (a, b):
        ax.legend()
    return save_figure(fig, path, dpi=100)


def run_gems(config: dict | str | Path, out_dir: str | Path, *, progress: bool = True) -> dict:
    """Run the Gem-Miner (or edge-popup) procedure into the run folder ``out_dir``.

    ``config`` is anything :func:`load_gems_config` reads: a resolved config, a
    YAML path or bundled name, or a dict (nested, or flat with Rare Gems keys).

    Writes ``config.yaml`` (resolved), ``metrics.jsonl`` (one row per epoch of
    every phase), ``mask.pt`` (``{name: bool tensor}``, loads with
    ``torch.load(weights_only=True)``), ``model.pt`` (the fine-tuned plain state
    dict), ``search.png`` and ``summary.json``. Returns the summary: ``density``,
    ``gem_acc_before_finetune`` (rounded mask, untrained weights),
    ``acc_after_finetune``, ``sanity`` ``{name: accuracy}``, ``layer_densities``,
    ``mask_path`` and more.
    """
    cfg = load_gems_config(config)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(dump_config(cfg))
    cfg = {**cfg, "device": str(pick_device(cfg["device"]))}  # "auto" is recorded, the device found is used
    g = cfg["gems"]
    if cfg["threads"]:
        torch.set_num_threads(int(cfg["threads"]))
    generator = torch.Generator().manual_seed(cfg["seed"])
    model, loaders, splits = build(cfg)
    log = RunLog(out / "metrics.jsonl", progress)
    prepare_model(model, cfg, generator)
    search = ScoreSearch.create(model, g["algo"], g["density"], score_init=g["score_init"],
                                generator=generator, quantized=g["quantized"],
                                threshold=g["quantize_threshold"], exclude=tuple(g["exclude"]),
                                search_only=tuple(g["search_only"]))
    info = search_phase(search, cfg, loaders, log, generator)
    search.release()
    device = cfg["device"]
    searched = search.hard_masks(g["rounding"], generator)  # search_only layers masked too, as searched
    gem_masks = search.prunable(searched)
    masks = search.prunable(finetune_masks(search, g))
    summary: dict[str, Any] = {
        "algo": g["algo"], "dataset": cfg["data"]["name"], "model": cfg["model"]["name"], "seed": cfg["seed"],
        "target_density": g["density"], "density": density_of(masks), "rounded_density": density_of(gem_masks),
        "gem_acc_before_finetune": masked_accuracy(search, searched, loaders.test, device),
        "acc_before_finetune": masked_accuracy(search, {**{n: torch.ones_like(f) for n, f in search.flags.items()},
                                                        **masks}, loaders.test, device),
        "layer_densities": layer_densities(masks), "search": info,
        "inverted_search": bool(g["invert_sanity_check"])}
    mask_path = out / "mask.pt"
    torch.save({n: m.cpu() for n, m in masks.items()}, mask_path)
    summary["mask_path"] = str(mask_path)
    base = copy.deepcopy(model.state_dict())
    trainer = MaskedTrainer(cfg, loaders, log)
    summary["acc_after_finetune"] = None
    if g["finetune"]:
        tuned = trainer.run(model, masks, "finetune")
        summary["acc_after_finetune"] = tuned["test_acc"]
        torch.save(model.state_dict(), out / "model.pt")
        summary["time_finetune_s"] = tuned["time_s"]
    summary["sanity"] = {}
    if g["finetune"] and g["sanity_checks"] and g["algo"] in ("hc", "hc_iter"):
        for kind in ("reinit", "reshuffle"):
            twin = copy.deepcopy(model)
            twin.load_state_dict(base)
            if kind == "reinit":
                modules = dict(twin.named_parameters())
                for name in masks:
                    kaiming_normal_(modules[name], generator, out_axis(twin.get_submodule(name.rpartition(".")[0])))
            result = trainer.run(twin, sanity_masks(kind, masks, search, generator), f"sanity_{kind}")
            summary["sanity"][kind] = result["test_acc"]
    plot = _save_plot(log.rows, out / "search.png")
    summary["plot_path"] = str(plot) if plot else None
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


__all__ = ["RunLog", "build", "finetune_masks", "load_gems_config", "make_bn_nonaffine_", "prepare_model", "run_gems",
           "sanity_masks", "search_phase"]
