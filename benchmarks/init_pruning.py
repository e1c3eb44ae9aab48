"""Pruning at initialisation at CPU scale (issue 6; ALGORITHMS.md 1.1, 6, 11).

Same data, model, optimizer and budget for every method; only the method
changes: dense, random (ERK and Smart Ratio layer densities), SNIP, GraSP,
SynFlow, magnitude at init (``lottery_ticket``), and RigL / GraNet from the
engine for reference. Two data sets that ship offline: MNIST-1D with the 1D
CNN (the trainer's defaults) and scikit-learn's digits with the MLP
(64-300-100-10). Layer collapse (a layer left with no active weight) is
reported from each run's per-layer densities. Also times the mask selection
itself (the ``attach`` call) per method.

    python benchmarks/init_pruning.py            # 90/95/98 %, 3 seeds, 30 epochs (~30 min on 2 busy cores)
    python benchmarks/init_pruning.py --quick    # one seed, 90 % only, 3 epochs (smoke test)

Finished runs are reused (their summary.json), so an interrupted sweep continues.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import time
from pathlib import Path

import torch

from sparsetrain.train.config import load_config
from sparsetrain.train.loop import train

HERE = Path(__file__).resolve().parent
DATASETS = {"mnist1d": ["--data.name", "mnist1d", "--model.name", "cnn1d"],
            "digits": ["--data.name", "digits", "--model.name", "mlp"]}
#: (label, method, extra method arguments)
METHODS = [
    ("random[erk]", "random", {"distribution": "erk"}),
    ("random[smart_ratio]", "random", {"distribution": "smart_ratio"}),
    ("snip", "snip", {}),
    ("grasp", "grasp", {}),
    ("synflow", "synflow", {}),
    ("lottery_ticket", "lottery_ticket", {}),
    ("rigl", "rigl", {}),
    ("granet", "granet", {}),
]


def run(data: str, label: str, method: str, kwargs: dict, sparsity: float | None, seed: int, epochs: int,
        out: Path) -> dict:
    """One training run (reused if its summary.json exists)."""
    run_dir = out / f"{data}-{label}-{'dense' if sparsity is None else f'{sparsity:g}'}-s{seed}"
    if (run_dir / "summary.json").is_file():
        return json.loads((run_dir / "summary.json").read_text())
    overrides = [*DATASETS[data], "--method.name", method, "--epochs", str(epochs), "--seed", str(seed),
                 "--threads", "1", "--run.plots", "false", "--run.progress", "false"]
    if sparsity is not None:
        overrides += ["--method.density", f"{1 - sparsity:.6g}"]
    for key, value in kwargs.items():
        overrides += [f"--method.{key}", str(value)]
    return train(load_config(None, overrides), run_dir)


def collapsed(summary: dict) -> list[str]:
    """Layers with no active weight at the end of training."""
    return [n for n, d in summary.get("layer_density", {}).items() if d == 0.0]


def init_cost(data: str, reps: int = 3) -> dict[str, float]:
    """Median seconds of ``sparsetrain.attach`` (mask selection) per method at 95 % sparsity."""
    import sparsetrain
    from sparsetrain.train.data import create_dataset
    from sparsetrain.train.models import create_model, input_kwargs
    splits = create_dataset(DATASETS[data][1], seed=0)
    x, y = torch.utils.data.default_collate([splits.train[i] for i in range(128)])
    name = DATASETS[data][3]
    shape = input_kwargs(name, splits.input_shape)
    out = {}
    for label, method, kwargs in METHODS:
        times = []
        for _ in range(reps):
            model = create_model(name, num_classes=splits.num_classes, **shape)
            opt = torch.optim.SGD(model.parameters(), lr=0.1)
            start = time.perf_counter()
            sparsetrain.attach(model, opt, method, density=0.05, total_steps=1000, data=[(x, y)],
                               example_input=x, **kwargs)
            times.append(time.perf_counter() - start)
        out[label] = statistics.median(times)
    return out


def header(epochs: int, seeds: list[int], elapsed: float, train_s: float) -> list[str]:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=HERE,
                            check=False).stdout.strip() or "?"
    load = " ".join(f"{v:.2f}" for v in os.getloadavg())
    return [f"- date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, git {commit}, torch {torch.__version__}, "
            f"Python {platform.python_version()}, {os.cpu_count()} logical cores, 1 thread per run, load average "
            f"at the end {load}",
            f"- budget: {epochs} epochs per run (SGD 0.1 Nesterov, wd 5e-4, cosine LR, batch 128: the trainer's "
            f"defaults), seeds {seeds}; training time summed over the runs {train_s / 60:.1f} min (their "
            f"summary.json), this invocation {elapsed / 60:.1f} min (finished runs are reused)"]


def table(rows: list[dict], data: str, sparsities: list[float]) -> list[str]:
    lines = ["| method | " + " | ".join(f"{100 * s:g} % sparsity" for s in sparsities) + " |",
             "|---|" + "---|" * len(sparsities)]
    dense = [r for r in rows if r["data"] == data and r["label"] == "dense"]
    if dense:
        acc = dense[0]["accs"]
        cell = f"{100 * statistics.mean(acc):.2f} ± {100 * (statistics.stdev(acc) if len(acc) > 1 else 0):.2f}"
        lines.append("| dense (0 %) | " + " | ".join([cell] * len(sparsities)) + " |")
    for label, _, _ in METHODS:
        cells = []
        for s in sparsities:
            r = next((r for r in rows if r["data"] == data and r["label"] == label and r["sparsity"] == s), None)
            if r is None:
                cells.append("")
                continue
            std = statistics.stdev(r["accs"]) if len(r["accs"]) > 1 else 0.0
            note = f" (collapse in {r['n_collapsed']}/{len(r['accs'])} seeds)" if r["n_collapsed"] else ""
            cells.append(f"{100 * statistics.mean(r['accs']):.2f} ± {100 * std:.2f}{note}")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--data", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    parser.add_argument("--sparsities", nargs="+", type=float, default=None)
    parser.add_argument("--out", default="runs/init_pruning")
    parser.add_argument("--write", default=str(HERE / "results_init_pruning.md"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    seeds = [0] if args.quick else [0, 1, 2]
    sparsities = args.sparsities or ([0.9] if args.quick else [0.9, 0.95, 0.98])
    epochs = args.epochs or (3 if args.quick else 30)
    out = Path(args.out) / f"e{epochs}"
    started = time.time()
    rows: list[dict] = []
    train_s = 0.0
    for data in args.data:
        dense = [run(data, "dense", "dense", {}, None, s, epochs, out) for s in seeds]
        train_s += sum(d["wall_time_s"] for d in dense)
        rows.append({"data": data, "label": "dense", "sparsity": 0.0, "accs": [d["final_test_acc"] for d in dense],
                     "n_collapsed": 0, "collapsed": []})
        for sparsity in sparsities:
            for label, method, kwargs in METHODS:
                sums = [run(data, label, method, kwargs, sparsity, s, epochs, out) for s in seeds]
                layers = [collapsed(s) for s in sums]
                train_s += sum(s["wall_time_s"] for s in sums)
                rows.append({"data": data, "label": label, "sparsity": sparsity,
                             "accs": [s["final_test_acc"] for s in sums], "density": sums[0]["density"],
                             "n_collapsed": sum(bool(c) for c in layers), "collapsed": layers})
                print(f"{data} {label} {sparsity:g}: {[round(100 * a, 2) for a in rows[-1]['accs']]} "
                      f"collapsed {layers}", flush=True)
    costs = {data: init_cost(data) for data in args.data}
    elapsed = time.time() - started
    out.mkdir(parents=True, exist_ok=True)
    (out / "init_pruning.json").write_text(json.dumps({"rows": rows, "init_cost_s": costs}, indent=2))
    lines = ["# Pruning at initialisation: measured", "", "Written by `python benchmarks/init_pruning.py"
             + (" --quick" if args.quick else "") + "`.", "", *header(epochs, seeds, elapsed, train_s), ""]
    for data in args.data:
        lines += [f"## {data} ({' '.join(DATASETS[data][1::2])}): final test accuracy %, mean ± std over seeds", "",
                  *table(rows, data, sparsities), ""]
        hit = [r for r in rows if r["data"] == data and r["n_collapsed"]]
        for r in hit:
            names = sorted({n for c in r["collapsed"] for n in c})
            lines.append(f"- layer collapse: {r['label']} at {100 * r['sparsity']:g} %: {', '.join(names)} "
                         f"({r['n_collapsed']} of {len(r['accs'])} seeds)")
        if not hit:
            lines.append("- no layer collapse in any run")
        lines.append("")
    lines += ["## Cost of the mask selection (`attach`, 95 % sparsity, one batch of 128), median of 3, seconds", "",
              "| method | " + " | ".join(args.data) + " |", "|---|" + "---|" * len(args.data)]
    for label, _, _ in METHODS:
        lines.append(f"| {label} | " + " | ".join(f"{costs[d][label]:.3f}" for d in args.data) + " |")
    text = "\n".join(lines) + "\n"
    print("\n" + text)
    if not args.quick:
        Path(args.write).write_text(text)
        print(f"written: {args.write}")


if __name__ == "__main__":
    main()
