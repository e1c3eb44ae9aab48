"""Accuracy against density for every registered method, and training FLOPs against accuracy.

    python benchmarks/accuracy.py                      # full sweep (see README.md for its time)
    python benchmarks/accuracy.py --quick              # smoke run: tiny data, 1 seed, 2 methods
    python benchmarks/accuracy.py --methods dense,rigl,gmp --densities 0.1 --seeds 3 --datasets mnist1d

Every method of ``sparsetrain.list_methods()`` (read at run time) plus dense is
trained with the reference trainer through ``sparsetrain.train.compare``'s
machinery (``method_configs`` + ``density_sweep`` + ``summarise``), on

- MNIST-1D (4000/1000, generated locally) with the 1D CNN of width 24
  (4.6k prunable weights), 30 epochs at batch 128 (930 steps), the setup of
  the issue-3 table;
- scikit-learn's digits (1438/359) with the LeNet-300-100 style MLP
  64-300-100-10 (50k prunable weights), 40 epochs at batch 64 (880 steps).

Both: SGD 0.1 Nesterov, wd 5e-4, cosine LR, ``update_every`` 20 steps, every
method at its own defaults otherwise (distribution, schedules), each density in
``--densities`` (fraction of weights kept: 0.2, 0.1, 0.05, 0.02 = 80, 90, 95,
98 % sparsity), seeds 0..n-1. Accuracy is the final epoch's test accuracy,
mean ± std over seeds.

Training FLOPs (RigL paper, Evci et al. 2020, appendix H): a step costs
``3 f_S`` (forward ``f_S``, backward ``2 f_S``) where ``f_S`` is the forward
FLOPs at the step's topology (each sparsified layer's dense FLOPs times its
density, read from the run's logged per-layer densities after every update;
unsparsified layers dense); a step where the method needs the dense gradient
(an update op with ``needs_grad``, e.g. RigL's and GraNet's growth, or a
per-step observer such as SNFS's momentum) costs ``2 f_S + f_D``. Dense
training costs ``3 f_D`` per step. Reported as a fraction of dense training.

A method that fails (e.g. one that needs inputs the trainer cannot give it)
is listed with its error and the sweep goes on. Finished runs are reused
(``summary.json`` in the run folder) unless ``--fresh``, so an interrupted
sweep continues where it stopped.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from common import HERE, fmt_stats, machine_info, pyplot, table, write_section

import sparsetrain

FULL_DENSITIES = [0.2, 0.1, 0.05, 0.02]
FLOPS_DENSITY = 0.1
DATASETS = {
    "mnist1d": {"title": "MNIST-1D, 1D CNN (width 24)", "data": "mnist1d", "model": ["--model.name", "cnn1d",
                "--model.width", "24"], "epochs": 30, "batch": 128, "quick": ["--data.num_samples", "600"]},
    "digits": {"title": "digits (sklearn), MLP 64-300-100-10", "data": "digits", "model": ["--model.name", "mlp"],
               "epochs": 40, "batch": 64, "quick": []},
}
QUICK = {"epochs": 2, "methods": "dense,static,rigl", "densities": [0.1], "seeds": 1}


# ---------------------------------------------------------------------------- configurations
def base_overrides(dataset: str, epochs: int, device: str, threads: int, quick: bool) -> list[str]:
    d = DATASETS[dataset]
    over = ["--data.name", d["data"], *d["model"], "--epochs", str(epochs), "--batch_size", str(d["batch"]),
            "--device", device, "--threads", str(threads), "--run.progress", "false", "--run.plots", "false",
            "--run.layer_density_every", "1", "--run.checkpoint_every", str(10**6)]
    return over + (d["quick"] if quick else [])


def every_layer(method: str) -> list[str]:
    """Every method prunes every conv / linear layer here, so the rows compare like with like:
    a method with fasterai's ``layer_type`` (Conv2d only by default) is told ``all``."""
    from sparsetrain.methods import method_signature
    takes = method != "dense" and "layer_type" in method_signature(method).parameters
    return ["--method.layer_type", "all"] if takes else []


def select_methods(spec: str) -> list[str]:
    """``dense`` first, then the methods named (comma-separated names or globs) among the registered ones."""
    names: list[str] = []
    for part in [p.strip() for p in spec.split(",") if p.strip()]:
        found = ["dense"] if part == "dense" else sparsetrain.list_methods(part)
        if part == "*":
            found = ["dense", *found]
        if not found:
            from sparsetrain.errors import unknown_choice
            raise unknown_choice("method", part, ["dense", *sparsetrain.list_methods()])
        names += [n for n in found if n not in names]
    return sorted(names, key=lambda n: n != "dense")


# ---------------------------------------------------------------------------- training FLOPs
def _layer_flops(cfg: dict) -> tuple[dict[str, int], int]:
    """Forward FLOPs per sample: {module name: flops} of the model's leaf modules, and the total."""
    from sparsetrain.metrics.flops import module_flops
    from sparsetrain.train.config import builder_kwargs
    from sparsetrain.train.data import create_dataset
    from sparsetrain.train.models import create_model, input_kwargs
    splits = create_dataset(cfg["data"]["name"], **builder_kwargs(cfg, "data"))
    kwargs = builder_kwargs(cfg, "model")
    model = create_model(cfg["model"]["name"], num_classes=splits.num_classes,
                         **input_kwargs(cfg["model"]["name"], splits.input_shape, kwargs), **kwargs)
    example = torch.zeros(1, *splits.input_shape, dtype=splits.train[0][0].dtype)  # token ids for a language model
    total, per_module = module_flops(model, example)
    return per_module, total


def dense_grad_steps(cfg: dict, total: int) -> list[bool]:
    """Per step: does the method need the dense gradient there (observer, or a due update with needs_grad)?"""
    from sparsetrain.methods import create_method
    from sparsetrain.train.loop import method_kwargs
    method = create_method(cfg["method"]["name"], **method_kwargs(cfg, total // cfg["epochs"]))
    if method.observers:
        return [True] * total
    # the engine asks due(s) with s = optimizer steps taken including this one
    return [any(u.op.needs_grad for u in method.due(t + 1, total)) for t in range(total)]


def training_flops(cfg: dict, run_dir: Path, flops_cache: dict) -> float | None:
    """Training FLOPs of one run as a fraction of dense training (module docstring); None if unknown."""
    from sparsetrain.train.plots import read_metrics
    key = json.dumps([cfg["data"], cfg["model"]], sort_keys=True)
    if key not in flops_cache:
        flops_cache[key] = _layer_flops(cfg)
    per_module, f_dense = flops_cache[key]
    if cfg["method"]["name"] == "dense":
        return 1.0
    records = read_metrics(run_dir)
    total = max(r["step"] for r in records if r.get("event") == "epoch")
    events = sorted((r["step"], r["layer_density"]) for r in records
                    if r.get("event") == "update" and "layer_density" in r)
    if not events:
        return None
    try:
        needs = dense_grad_steps(cfg, total)
    except Exception:  # noqa: BLE001  (a method the replay cannot build: FLOPs unknown, not wrong)
        return None

    def forward(density: dict[str, float]) -> float:
        return f_dense - sum(per_module.get(n.rsplit(".", 1)[0], 0) * (1 - d) for n, d in density.items())

    cost, e = 0.0, 0
    f_s = forward(events[0][1])
    for t in range(total):
        while e + 1 < len(events) and events[e + 1][0] <= t:
            e += 1
            f_s = forward(events[e][1])
        cost += 2 * f_s + (f_dense if needs[t] else f_s)
    return cost / (3 * f_dense * total)


# ---------------------------------------------------------------------------- running
def run_sweep(dataset: str, methods: list[str], densities: list[float], seeds: int, args) -> list[dict]:
    """Train every (method, density, seed) of one data set; one row per (method, density)."""
    from sparsetrain.train.compare import density_sweep, method_configs, summarise
    from sparsetrain.train.loop import train
    epochs = args.epochs or (QUICK["epochs"] if args.quick else DATASETS[dataset]["epochs"])
    overrides = base_overrides(dataset, epochs, args.device, args.threads, args.quick)
    out_dir = Path(args.out) / dataset
    rows, flops_cache = [], {}
    for method in methods:
        try:
            configs = density_sweep(method_configs([method], None, overrides + every_layer(method)), densities)
        except Exception as err:  # noqa: BLE001
            rows.append({"method": method, "label": method, "error": f"{type(err).__name__}: {err}"})
            continue
        for label, cfg in configs:
            summaries, train_flops, error = [], [], None
            for seed in range(seeds):
                run_cfg = {**cfg, "seed": seed}
                run_dir = out_dir / f"{label}-s{seed}"
                try:
                    summary = cached_summary(run_dir, run_cfg) if not args.fresh else None
                    if summary is None and args.report_only:
                        error = "not run"
                        break
                    if summary is None:
                        print(f"== {dataset} {label} seed {seed}", flush=True)
                        summary = train(run_cfg, run_dir)
                    summaries.append(summary)
                    train_flops.append(training_flops(run_cfg, run_dir, flops_cache))
                except Exception as err:  # noqa: BLE001  (one failing method must not stop the sweep)
                    error = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
                    print(f"!! {dataset} {label} seed {seed}: {error}", flush=True)
                    break
            if error:
                rows.append({"method": method, "label": label, "error": error,
                             "target": cfg["method"].get("density", 1.0)})
                continue
            row = summarise(label, summaries)
            row.update(method=method, target=cfg["method"].get("density", 1.0),
                       times=[s["wall_time_s"] for s in summaries], commits=[s.get("git") for s in summaries],
                       train_flops=None if None in train_flops else statistics.mean(train_flops))
            rows.append(row)
    return rows


def cached_summary(run_dir: Path, cfg: dict) -> dict | None:
    """The summary of a finished run with the same configuration, else None."""
    from sparsetrain.train.config import dump_config
    summary, config = run_dir / "summary.json", run_dir / "config.yaml"
    if summary.is_file() and config.is_file() and config.read_text() == dump_config(cfg):
        return json.loads(summary.read_text())
    return None


# ---------------------------------------------------------------------------- reporting
def density_table(rows: list[dict], densities: list[float]) -> str:
    """Methods down, densities across: test accuracy mean ± std (dense: one column for all)."""
    by_method: dict[str, dict[float, dict]] = {}
    for r in rows:
        by_method.setdefault(r["method"], {})[r.get("target", 1.0)] = r
    header = ["method"] + [f"{100 * (1 - d):g} % sparse (d={d:g})" for d in densities] + ["time/run s"]
    out = []
    for method, cells in by_method.items():
        line, times = [method], []
        for d in densities:
            r = cells.get(1.0) if method == "dense" else cells.get(d)
            if r is None:
                line.append("")
            elif "error" in r:
                line.append("not run" if r["error"] == "not run" else f"failed: {r['error'][:80]}")
            else:
                line.append(f"{r['acc_mean'] * 100:.2f} ± {r['acc_std'] * 100:.2f}")
                times += r["times"]
        if method == "dense" or (len(cells) == 1 and "error" in next(iter(cells.values())) and
                                 next(iter(cells.values())).get("target") is None):
            only = next(iter(cells.values()))
            if "error" in only:
                line = [method, f"failed: {only['error'][:120]}"] + [""] * (len(densities) - 1)
        line.append(fmt_stats(times, 1, 1) if times else "")
        out.append(line)
    return table(header, out)


def flops_table(rows: list[dict], density: float) -> str:
    """At one density: accuracy, training FLOPs and inference FLOPs (fractions of dense)."""
    out = []
    for r in rows:
        if "error" in r or (r["method"] != "dense" and abs(r["target"] - density) > 1e-9):
            continue
        tf = "n/a" if r["train_flops"] is None else f"{r['train_flops']:.3f}"
        out.append([r["method"], f"{r['density']:.4f}", f"{r['acc_mean'] * 100:.2f} ± {r['acc_std'] * 100:.2f}",
                    tf, f"{r['flops_ratio']:.3f}"])
    out.sort(key=lambda line: (line[0] != "dense", line[3] == "n/a", float(line[3]) if line[3] != "n/a" else 0))
    return table(["method", "final density", "test acc (mean ± std)", "training FLOPs (x dense)",
                  "inference FLOPs (x dense)"], out)


def plot(results: dict[str, list[dict]], density: float, path: Path) -> Path | None:
    """Top row: accuracy vs sparsity per data set; bottom row: accuracy vs training FLOPs at ``density``."""
    plt = pyplot()
    if plt is None:
        return None
    fig, axes = plt.subplots(2, len(results), figsize=(6.5 * len(results), 8.5), squeeze=False)
    for col, (dataset, rows) in enumerate(results.items()):
        ax, ax2 = axes[0][col], axes[1][col]
        groups: dict[str, list[dict]] = {}
        for r in rows:
            if "error" not in r:
                groups.setdefault(r["method"], []).append(r)
        for i, (method, group) in enumerate(groups.items()):
            style = "-" if i < 10 else "--"
            group.sort(key=lambda r: r["target"])
            if method == "dense":
                ax.axhline(100 * group[0]["acc_mean"], color="k", linestyle=":", label="dense")
                continue
            ax.errorbar([100 * (1 - r["target"]) for r in group], [100 * r["acc_mean"] for r in group],
                        yerr=[100 * r["acc_std"] for r in group], marker="o", capsize=3, linestyle=style,
                        label=method)
        ax.set(xlabel="sparsity (%)", ylabel="test accuracy (%)", title=DATASETS[dataset]["title"])
        ax.legend(fontsize=7, ncol=2)
        for method, group in groups.items():
            at = [r for r in group if (method == "dense" or abs(r["target"] - density) < 1e-9)
                  and r["train_flops"] is not None]
            for r in at:
                ax2.errorbar(r["train_flops"], 100 * r["acc_mean"], yerr=100 * r["acc_std"], marker="o", capsize=3)
                ax2.annotate(method, (r["train_flops"], 100 * r["acc_mean"]), fontsize=7,
                             textcoords="offset points", xytext=(4, 2))
        ax2.set(xscale="log", xlabel="training FLOPs (fraction of dense, log)", ylabel="test accuracy (%)",
                title=f"{dataset}: accuracy vs training FLOPs at density {density:g}")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def report(results: dict[str, list[dict]], args, densities: list[float], command: str, seconds: float) -> str:
    lines = [f"```\n{command}\n```", ""]
    lines += [f"- {line}" for line in machine_info(args.device)]
    done = [r for rows in results.values() for r in rows if "error" not in r]
    runs = sum(len(r["times"]) for r in done)
    train_s = sum(sum(r["times"]) for r in done)
    commits = sorted({(c or "?")[:7] for r in done for c in r.get("commits", [])})
    failed = sorted({f"{r['method']}: {r['error'][:100]}" for rows in results.values() for r in rows
                     if "error" in r and r["error"] != "not run"})
    missing = [f"{dataset} {r['label']}" for dataset, rows in results.items() for r in rows
               if r.get("error") == "not run"]
    lines += [f"- seeds 0..{args.seeds - 1} per configuration (the repeats); {runs} training runs, "
              f"{train_s / 60:.1f} min of training wall time in all ({seconds / 60:.1f} min for this command; "
              "finished runs are reused)",
              f"- git commits the runs were trained at: {', '.join(commits)} (other work was committed during the "
              "sweep)" if len(commits) > 1 else f"- git commit of the runs: {', '.join(commits)}",
              *([f"- failed: {'; '.join(failed)}"] if failed else []),
              *([f"- not run (no finished run for every seed; --report-only): {len(missing)} configurations: "
                 f"{', '.join(missing)}"] if missing else []),
              "- accuracy: final-epoch test accuracy, mean ± std over seeds; time/run: median (min-max) wall "
              "seconds of one training run", ""]
    for dataset, rows in results.items():
        d = DATASETS[dataset]
        epochs = args.epochs or (QUICK["epochs"] if args.quick else d["epochs"])
        lines += [f"### {d['title']}: {epochs} epochs, batch {d['batch']}", "",
                  density_table(rows, densities), ""]
        if FLOPS_DENSITY in densities or args.quick:
            at = densities[0] if args.quick else FLOPS_DENSITY
            lines += [f"Training FLOPs at density {at:g} ({100 * (1 - at):g} % sparsity), sorted by training FLOPs:",
                      "", flops_table(rows, at), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--methods", default=None, help="comma-separated names or globs (default: dense and every "
                        "registered method)")
    parser.add_argument("--densities", default=None, help="comma-separated densities (default 0.2,0.1,0.05,0.02)")
    parser.add_argument("--seeds", type=int, default=None, help="seeds 0..n-1 (default 3)")
    parser.add_argument("--datasets", default="mnist1d,digits", help=f"comma-separated, of {', '.join(DATASETS)}")
    parser.add_argument("--epochs", type=int, default=None, help="override every data set's epochs")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run (default 1)")
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny data, 2 epochs, dense/static/rigl")
    parser.add_argument("--out", default="runs/bench-accuracy", help="folder of the run folders")
    parser.add_argument("--results", default=None, help="Markdown file to write the section into (default "
                        "benchmarks/RESULTS.md; with --quick: none)")
    parser.add_argument("--plot", default=None, help="PNG path (default benchmarks/accuracy.png; --quick: in --out)")
    parser.add_argument("--fresh", action="store_true", help="re-run finished runs instead of reusing them")
    parser.add_argument("--report-only", action="store_true", help="train nothing: report the finished runs "
                        "and list the configurations that have not run for every seed")
    args = parser.parse_args(argv)
    methods = select_methods(args.methods or (QUICK["methods"] if args.quick else "*"))
    densities = ([float(x) for x in args.densities.split(",")] if args.densities else
                 QUICK["densities"] if args.quick else FULL_DENSITIES)
    args.seeds = args.seeds or (QUICK["seeds"] if args.quick else 3)
    datasets = [d.strip() for d in args.datasets.split(",") if d.strip()]
    bad = [d for d in datasets + [str(x) for x in densities if not 0 < x <= 1] if d not in DATASETS]
    if bad:
        from sparsetrain.errors import SparsetrainError
        raise SparsetrainError(f"unknown data set or density out of (0, 1]: {bad[0]}. Data sets: "
                               f"{', '.join(DATASETS)}.")
    torch.set_num_threads(args.threads)
    command = "python benchmarks/accuracy.py" + ("" if argv is None and len(sys.argv) == 1 else
                                                 " " + " ".join(argv if argv is not None else sys.argv[1:]))
    print("# accuracy vs density" + (" (--quick)" if args.quick else ""))
    for line in machine_info(args.device):
        print(f"- {line}")
    print(f"- methods: {', '.join(methods)}; densities {densities}; seeds {args.seeds}; data {datasets}", flush=True)
    start = time.perf_counter()
    results = {d: run_sweep(d, methods, densities, args.seeds, args) for d in datasets}
    body = report(results, args, densities, command, time.perf_counter() - start)
    print("\n" + body)
    png = Path(args.plot) if args.plot else (Path(args.out) / "accuracy.png" if args.quick else HERE / "accuracy.png")
    written = plot(results, densities[0] if args.quick else FLOPS_DENSITY, png)
    results_path = args.results or (None if args.quick else str(HERE / "RESULTS.md"))
    if results_path:
        picture = f"\n![accuracy vs sparsity and training FLOPs]({png.name})\n" if written else ""
        write_section("accuracy", "## Accuracy vs density, every method (issue 7)\n\n" + body + picture,
                      results_path)
    print(f"\nwritten: {written or 'no plot (matplotlib missing)'}" + (f", {results_path}" if results_path else ""))
    (Path(args.out) / "accuracy.json").write_text(json.dumps(results, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
