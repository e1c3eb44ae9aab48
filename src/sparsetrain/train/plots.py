"""PNG plots of a run folder: accuracy, density over training, per-layer density, ITOP rate."""

from __future__ import annotations

import json
from pathlib import Path

from sparsetrain.core.figures import pyplot, save_figure
from sparsetrain.errors import SparsetrainError


def read_metrics(run_dir: str | Path) -> list[dict]:
    """The records of ``metrics.jsonl``."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        raise SparsetrainError(f"{run_dir} is not a run folder (no metrics.jsonl).")
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:  # a line cut short by a kill: skip it
            continue
    return records


def plot_run(run_dir: str | Path) -> list[Path]:
    """Write accuracy.png, density.png, layer_density.png, itop.png and throughput.png into ``run_dir``;
    returns the paths."""
    plt = pyplot()
    if plt is None:
        return []
    run_dir = Path(run_dir)
    records = read_metrics(run_dir)
    epochs = [r for r in records if r.get("event") == "epoch"]
    updates = [r for r in records if r.get("event") == "update"]
    written = []

    fig, ax = plt.subplots(figsize=(6, 4))
    for key, label in (("train_acc", "train"), ("val_acc", "val"), ("test_acc", "test")):
        if epochs and key in epochs[0]:
            ax.plot([r["epoch"] for r in epochs], [100 * r[key] for r in epochs], label=label)
    ax.set(xlabel="epoch", ylabel="accuracy (%)", title="Accuracy")
    ax.legend()
    written.append(save_figure(fig, run_dir / "accuracy.png"))

    points = [(r["step"], r["density"]) for r in updates if "density" in r]
    points += [(r["step"], r["density"]) for r in epochs if "density" in r]
    if points:
        points.sort()
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.step([p[0] for p in points], [p[1] for p in points], where="post", label="density")
        shares = [(r["step"], r["amenable_channels"]) for r in updates if "amenable_channels" in r]
        if shares:  # Chase's biased reallocation, on the same 0-1 scale
            ax.plot([p[0] for p in shares], [p[1] for p in shares], label="channels sparser than the model")
            ax.legend()
        ax.set(xlabel="step", ylabel="density / share", title="Density over training", ylim=(0, 1.05))
        written.append(save_figure(fig, run_dir / "density.png"))

    layers = [r["layer_density"] for r in updates if "layer_density" in r]
    summary = run_dir / "summary.json"
    final = json.loads(summary.read_text()).get("layer_density") if summary.is_file() else None
    if final or layers:
        final = final or layers[-1]
        fig, ax = plt.subplots(figsize=(max(6, 0.35 * len(final)), 4))
        ax.bar(range(len(final)), list(final.values()))
        ax.set_xticks(range(len(final)), list(final), rotation=75, fontsize=7)
        ax.set(ylabel="density", title="Per-layer density (end of training)", ylim=(0, 1.05))
        written.append(save_figure(fig, run_dir / "layer_density.png"))

    itop = [(r["epoch"], r["itop_rate"]) for r in epochs if "itop_rate" in r]
    if itop:
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.plot([p[0] for p in itop], [p[1] for p in itop])
        ax.set(xlabel="epoch", ylabel="ITOP rate R_s", title="Weights ever active", ylim=(0, 1.05))
        written.append(save_figure(fig, run_dir / "itop.png"))

    speed = [(r["epoch"], r["samples_per_s"]) for r in epochs if "samples_per_s" in r]
    if speed:  # a run that shrinks while it trains gets faster as it goes
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.plot([p[0] for p in speed], [p[1] for p in speed], marker="o")
        ax.set(xlabel="epoch", ylabel="training samples / s", title="Training throughput", ylim=(0, None))
        written.append(save_figure(fig, run_dir / "throughput.png"))
    return written
