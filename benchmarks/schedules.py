"""The pruning-schedule study at CPU scale (issue 5; ALGORITHMS.md 8, seeds/pruning_schedules.txt).

Same model, data, optimizer and budget for every schedule; only the sparsity
schedule of the ``prune`` method changes (local magnitude, ``large_final``,
weight granularity, as in the blog). One-shot is run at several starts and
its best start is reported, as the study does.

    python benchmarks/schedules.py                 # 90 % and 95 %, 3 seeds (~5 min on 2 cores)
    python benchmarks/schedules.py --quick         # one seed, 90 % only
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from sparsetrain.train.config import load_config
from sparsetrain.train.loop import train

#: (label, prune arguments); one_shot starts are searched, the best one is kept
SCHEDULES = [
    ("one_shot@0.2", {"schedule": "one_shot", "start": 0.2}),
    ("one_shot@0.4", {"schedule": "one_shot", "start": 0.4}),
    ("one_shot@0.6", {"schedule": "one_shot", "start": 0.6}),
    ("iterative", {"schedule": "iterative", "start": 0.2, "n_steps": 3}),
    ("agp", {"schedule": "agp", "start": 0.2}),
    ("lin", {"schedule": "lin"}),
    ("cos", {"schedule": "cos"}),
    ("cos+tail", {"schedule": "cos", "end": 0.75}),
    ("exp", {"schedule": "exp", "start_sparsity": 1e-6}),  # the blog's 0.0001 is a percentage
    ("one_cycle", {"schedule": "one_cycle"}),
]


def run(label: str, sparsity: float, seed: int, kwargs: dict, out: Path, base: list[str]) -> dict:
    overrides = [*base, "--seed", str(seed), "--method.name", "prune", "--method.sparsity", str(sparsity),
                 "--method.layer_type", "all",
                 "--run.plots", "false", "--run.progress", "false"]
    for key, value in kwargs.items():
        overrides += [f"--method.{key}", str(value)]
    cfg = load_config(None, overrides)
    return train(cfg, out / f"{label}-{sparsity:g}-s{seed}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", default="runs/schedules")
    args = parser.parse_args()
    torch.set_num_threads(1)
    seeds = [0] if args.quick else [0, 1, 2]
    sparsities = [0.9] if args.quick else [0.9, 0.95]
    base = ["--threads", "1"]
    out = Path(args.out)
    started = time.time()
    rows = []
    for sparsity in sparsities:
        for label, kwargs in SCHEDULES:
            accs = [run(label, sparsity, s, kwargs, out, base)["final_test_acc"] for s in seeds]
            rows.append({"sparsity": sparsity, "schedule": label, "mean": statistics.mean(accs),
                         "std": statistics.stdev(accs) if len(accs) > 1 else 0.0, "accs": accs})
    dense = [train(load_config(None, [*base, "--seed", str(s), "--method.name", "dense", "--run.plots", "false"]),
                   out / f"dense-s{s}")["final_test_acc"] for s in seeds]
    print(f"# pruning-schedule study, MNIST-1D, 1D CNN (width 24), 30 epochs, seeds {seeds}, torch "
          f"{torch.__version__}, {time.time() - started:.0f} s")
    print(f"dense: {100 * statistics.mean(dense):.2f} %\n")
    for sparsity in sparsities:
        sub = [r for r in rows if r["sparsity"] == sparsity]
        best_one_shot = max((r for r in sub if r["schedule"].startswith("one_shot")), key=lambda r: r["mean"])
        table = [best_one_shot] + [r for r in sub if not r["schedule"].startswith("one_shot")]
        print(f"| sparsity {sparsity:g} | test acc (mean ± std) |\n|---|---|")
        for r in sorted(table, key=lambda r: -r["mean"]):
            name = f"{r['schedule']} (best one-shot start)" if r is best_one_shot else r["schedule"]
            print(f"| {name} | {100 * r['mean']:.2f} ± {100 * r['std']:.2f} |")
        print()
    out.mkdir(parents=True, exist_ok=True)
    (out / "schedules.json").write_text(json.dumps({"rows": rows, "dense": dense}, indent=2))
    plot(rows, dense, out / "schedules.png")
    print(f"written: {out / 'schedules.json'}, {out / 'schedules.png'}")


def plot(rows: list[dict], dense: list[float], path: Path) -> None:
    """Left: sparsity vs training progress per schedule; right: final accuracy per schedule."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from sparsetrain.schedules import SparsitySchedule
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    steps = 200
    for label, kwargs in SCHEDULES:
        sched = SparsitySchedule(kwargs["schedule"], start_sparsity=kwargs.get("start_sparsity", 0.0),
                                 end_sparsity=0.9, start=kwargs.get("start", 0.0), end=kwargs.get("end", 1.0),
                                 n_steps=kwargs.get("n_steps", 3))
        left.plot([t / steps for t in range(steps + 1)], [sched(t, steps) for t in range(steps + 1)], label=label)
    left.set(xlabel="fraction of training", ylabel="sparsity", title="Schedules (target 0.9)")
    left.legend(fontsize=7)
    for sparsity in sorted({r["sparsity"] for r in rows}):
        sub = [r for r in rows if r["sparsity"] == sparsity]
        right.errorbar(range(len(sub)), [100 * r["mean"] for r in sub], yerr=[100 * r["std"] for r in sub],
                       marker="o", linestyle="none", capsize=3, label=f"sparsity {sparsity:g}")
        right.set_xticks(range(len(sub)), [r["schedule"] for r in sub], rotation=60, fontsize=7)
    right.axhline(100 * statistics.mean(dense), color="gray", linestyle="--", label="dense")
    right.set(ylabel="final test accuracy (%)", title="Accuracy at equal budget")
    right.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
