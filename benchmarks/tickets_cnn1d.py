"""Lottery tickets and Gem-Miner on the trainer's default MNIST-1D cnn1d (issue 6): one comparison table.

Writes ``benchmarks/results_tickets.md``: rows dense, the pruning-at-init methods,
RigL and GraNet (read from the finished ``benchmarks/init_pruning.py`` runs under
``runs/init_pruning/e30/``, not retrained), Gem-Miner before / after fine-tuning,
its two sanity checks, and IMP (rewind to init, k = 0), on the same model
(cnn1d, width 24), data and per-run budget (30 epochs), at 90 / 95 / 98 %
sparsity, mean ± std over seeds.

- IMP: global magnitude pruning of ``p = 1 - 0.1 ** 0.1`` of the survivors per
  round (round 10 = 90 %, 13 = 95 %, 17 = 98 % sparsity, one chain per seed),
  survivors rewound to their initial values (k = 0), 30 epochs per round with
  the trainer's defaults (SGD 0.1 Nesterov, wd 5e-4, cosine, batch 128).
- Gem-Miner (``hc_iter``): non-affine BatchNorm, signed-constant frozen weights,
  30 epochs of score search (SGD 0.1, cosine, L2 1e-4, pruning every 5 epochs),
  then 30 epochs of fine-tuning under the mask with the trainer's recipe
  (SGD 0.1, cosine, wd 5e-4); the sanity checks (weight re-init, per-layer
  mask reshuffle) get the same fine-tuning.

Usage::

    python benchmarks/tickets_cnn1d.py --part imp --seeds 0 1 2     # one process
    python benchmarks/tickets_cnn1d.py --part gems --seeds 0 1 2    # another process
    python benchmarks/tickets_cnn1d.py                              # the table from what is finished
    python benchmarks/tickets_cnn1d.py --quick --part all           # smoke run (2 epochs, 2 rounds)

Finished runs are reused (IMP resumes at round granularity, Gem-Miner per run folder).
"""

from __future__ import annotations

import argparse
import datetime
import glob
import json
import os
import platform
import statistics
import subprocess
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
P = 1 - 0.1 ** 0.1
MARKS = {0.9: 10, 0.95: 13, 0.98: 17}  # sparsity -> IMP round
SPARSITIES = tuple(MARKS)
READING = "## Reading (by hand"
INIT_ROWS = [("dense", "dense-dense"), ("random (ERK)", "random[erk]"), ("random (Smart Ratio)", "random[smart_ratio]"),
             ("SNIP", "snip"), ("GraSP", "grasp"), ("SynFlow", "synflow"), ("lottery_ticket (magnitude at init)",
             "lottery_ticket"), ("RigL", "rigl"), ("GraNet", "granet")]


def imp_chain(seed: int, out: Path, quick: bool, k: int = 0) -> list[dict]:
    """One IMP chain (dense round 0 plus 17 pruning rounds) rewinding to step ``k``; returns its rows."""
    from sparsetrain.procedures.lottery import load_tickets_config, run_imp
    overrides = ["--seed", str(seed), "--threads", "1", "--run.progress", "false", "--run.plots", "false",
                 "--imp.prune_fraction", str(P), "--imp.rounds", "2" if quick else "17", "--imp.scope", "global",
                 "--imp.rewind", "weights", "--imp.rewind_iter", str(k)]
    if quick:
        overrides += ["--epochs", "2"]
    cfg, imp = load_tickets_config(None, overrides)
    return run_imp(cfg, imp, out / f"imp-k{k}-s{seed}", resume=True)["rounds"]


def gems_run(sparsity: float, seed: int, out: Path, quick: bool) -> dict:
    """One Gem-Miner run (search, fine-tune, both sanity checks); reused when finished."""
    from sparsetrain.procedures.gems import run_gems
    run = out / f"gems-{sparsity}-s{seed}"
    if (run / "summary.json").is_file():
        return json.loads((run / "summary.json").read_text())
    epochs = 2 if quick else 30
    cfg = {"dataset": "mnist1d", "model": "cnn1d", "model_kwargs": {"width": 24}, "seed": seed,
           "density": round(1 - sparsity, 6), "algo": "hc_iter", "epochs": epochs, "iter_period": 1 if quick else 5,
           "lr": 0.1, "lr_policy": "cosine", "batch_size": 128, "threads": 1, "nonaffine_bn": True,
           "finetune_epochs": epochs, "finetune_lr": 0.1, "finetune_lr_policy": "cosine",
           "finetune_weight_decay": 5e-4, "sanity_checks": True}
    return run_gems(cfg, run, progress=False)


def mean_std(values: list[float], collapsed: int = 0) -> str:
    """``mean ± std`` in % (std 0 for one value), with the seed count if not 3 and layer collapses."""
    if not values:
        return "not run"
    m = 100 * statistics.mean(values)
    s = 100 * statistics.stdev(values) if len(values) > 1 else 0.0
    note = [f"n={len(values)}"] if len(values) != 3 else []
    if collapsed:
        note.append(f"collapse in {collapsed}/{len(values)} seeds")
    return f"{m:.2f} ± {s:.2f}" + (f" ({', '.join(note)})" if note else "")


def cell(runs: list[tuple[float | None, dict]]) -> str:
    """A table cell from (accuracy, layer densities) per seed; a layer left empty counts as a collapse."""
    runs = [(acc, dens) for acc, dens in runs if acc is not None]
    return mean_std([acc for acc, _ in runs], sum(any(v == 0 for v in dens.values()) for _, dens in runs))


def init_rows(root: Path) -> list[tuple[str, list[str]]]:
    """Rows from the finished pruning-at-init runs (their summary.json: final test accuracy)."""
    rows = []
    for label, key in INIT_ROWS:
        cells = []
        for sp in SPARSITIES:
            stem = f"mnist1d-{key}" if key == "dense-dense" else f"mnist1d-{key}-{sp}"
            sums = [json.loads((d / "summary.json").read_text())
                    for d in sorted(root.glob(glob.escape(stem) + "-s*")) if (d / "summary.json").is_file()]
            cells.append(cell([(s["final_test_acc"], s["layer_density"]) for s in sums]))
        rows.append((label, cells))
    return rows


def gems_rows(out: Path) -> list[tuple[str, list[str]]]:
    """Gem-Miner rows: before / after fine-tuning and the two sanity checks."""
    fields = {"Gem-Miner, before fine-tuning": lambda s: s["gem_acc_before_finetune"],
              "Gem-Miner, after fine-tuning": lambda s: s["acc_after_finetune"],
              "Gem-Miner sanity: weight re-init": lambda s: s["sanity"].get("reinit"),
              "Gem-Miner sanity: mask reshuffle": lambda s: s["sanity"].get("reshuffle")}
    rows = []
    for label, get in fields.items():
        cells = []
        for sp in SPARSITIES:
            sums = [json.loads(p.read_text()) for p in sorted(out.glob(f"gems-{sp}-s*/summary.json"))]
            cells.append(cell([(get(s), s["layer_densities"]) for s in sums]))
        rows.append((label, cells))
    return rows


def imp_rows(out: Path) -> list[tuple[str, list[str]]]:
    """IMP at rounds 10 / 13 / 17 of each seed's chain (final test accuracy), one row per rewind step k."""
    ks = sorted({int(d.name.split("-")[1][1:]) for d in out.glob("imp-k*-s*")})
    rows = []
    for k in ks:
        cells = []
        for r in MARKS.values():
            sums = [json.loads(p.read_text()) for p in sorted(out.glob(f"imp-k{k}-s*/round_{r:02d}/summary.json"))]
            cells.append(cell([(s["final_test_acc"], s["layer_density"]) for s in sums]))
        label = ("IMP, rewind to init (k = 0)" if k == 0 else f"IMP, weight rewinding to step k = {k}")
        rows.append((label + ", global magnitude", cells))
    return rows


def run_time(out: Path) -> float:
    """Training time summed over the runs of this benchmark (IMP rounds' summary.json, Gem-Miner phases)."""
    total = sum(json.loads(p.read_text()).get("wall_time_s", 0.0) for p in out.glob("imp-k*-s*/round_*/summary.json"))
    for p in out.glob("gems-*/metrics.jsonl"):
        phases: dict[str, float] = {}  # "time" is cumulative within a phase
        for row in (json.loads(line) for line in p.read_text().splitlines() if line.strip()):
            phases[row["phase"]] = max(phases.get(row["phase"], 0.0), row.get("time", 0.0))
        total += sum(phases.values())
    return total


def write_table(out: Path, init_root: Path, path: Path) -> str:
    """The one comparison table, as Markdown, written to ``path``."""
    try:
        git = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                             text=True).stdout.strip()
    except OSError:
        git = "?"
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    src = init_root.relative_to(ROOT) if init_root.is_relative_to(ROOT) else init_root
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = ["# Lottery tickets and Gem-Miner vs pruning at init: MNIST-1D cnn1d, one budget", "",
             "Written by `python benchmarks/tickets_cnn1d.py` (runs: `--part imp` and `--part gems`).", "",
             f"- date: {now}, git {git}, torch {torch.__version__}, Python {platform.python_version()}, "
             f"{os.cpu_count()} logical cores, 1 thread per process, load average {load}",
             "- model / data: MNIST-1D (4000 train / 1000 test), cnn1d width 24 (the trainer's default config)",
             "- budget: 30 epochs per run. Pruning at init, RigL, GraNet, dense and every IMP round: SGD 0.1 "
             "Nesterov, wd 5e-4, cosine, batch 128. Gem-Miner: 30 epochs of score search (SGD 0.1 momentum 0.9, "
             "cosine, L2 1e-4 on the scores, pruning every 5 epochs, non-affine BN, signed-constant weights) + "
             "30 epochs of fine-tuning (SGD 0.1 momentum 0.9, cosine, wd 5e-4); each sanity check is another "
             "30-epoch fine-tuning. IMP: 17 rounds of 30 epochs per seed (one chain gives all three sparsities).",
             f"- training time summed over the new runs (IMP rounds + Gem-Miner epochs): {run_time(out) / 60:.1f} min; "
             f"rows above Gem-Miner are read from `{src}` "
             "(`python benchmarks/init_pruning.py`, not retrained)",
             "- cells: final test accuracy %, mean ± std over seeds 0, 1, 2; `(n=k)` marks a cell with fewer seeds", "",
             "| method | 90 % sparsity | 95 % sparsity | 98 % sparsity |", "|---|---|---|---|"]
    for label, cells in init_rows(init_root) + gems_rows(out) + imp_rows(out):
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    text = "\n".join(lines) + "\n"
    old = path.read_text() if path.is_file() else ""
    if READING in old:  # the hand-written reading survives a re-run
        text += "\n" + old[old.index(READING):]
    path.write_text(text)
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("imp", "gems", "all", "table"), default="table")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--sparsities", type=float, nargs="+", default=list(SPARSITIES))
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "tickets_cnn1d")
    parser.add_argument("--init-runs", type=Path, default=ROOT / "runs" / "init_pruning" / "e30")
    parser.add_argument("--rewind-iter", type=int, default=0, help="IMP rewind step k (0 = init; an epoch is 31 steps)")
    parser.add_argument("--quick", action="store_true", help="2 epochs, 2 IMP rounds (smoke run, not a result)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    out = args.out / "quick" if args.quick else args.out
    out.mkdir(parents=True, exist_ok=True)
    for seed in args.seeds:
        if args.part in ("imp", "all"):
            imp_chain(seed, out, args.quick, args.rewind_iter)
        if args.part in ("gems", "all"):
            for sp in args.sparsities:
                gems_run(sp, seed, out, args.quick)
    if not args.quick:
        print(write_table(out, args.init_runs, HERE / "results_tickets.md"))


if __name__ == "__main__":
    main()
