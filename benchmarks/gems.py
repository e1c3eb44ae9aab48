"""Gem-Miner vs edge-popup at CPU scale (issue 6, ALGORITHMS.md 6): writes benchmarks/results_gems.md.

For each dataset (MNIST-1D, scikit-learn digits), sparsity (90, 95, 98 %) and
seed, on the MNIST-1D paper's MLP (hidden 100-100):

- Gem-Miner (``hc_iter``): accuracy of the rounded mask on the untrained
  signed-constant weights (the "rare gem"), and after fine-tuning the weights;
- the two sanity checks (weight re-init, per-layer mask reshuffle), fine-tuned identically;
- edge-popup (``ep``, per-layer top-k): before and after the same fine-tuning;
- dense: the same MLP, standard init, trained with the fine-tuning recipe.

Usage::

    python benchmarks/gems.py                      # the full table (~10-15 min on 2 cores)
    python benchmarks/gems.py --quick              # 1 seed, 5 + 5 epochs (smoke test, ~1 min)
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import tempfile
import time
from multiprocessing import get_context
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
MODEL = {"model": "mlp", "model_kwargs": {"hidden": [100, 100]}}


def budget(args) -> dict:
    """The per-run settings shared by every configuration (the CPU-scale budget)."""
    return {**MODEL, "epochs": args.search_epochs, "iter_period": args.iter_period,
            "finetune_epochs": args.finetune_epochs, "finetune_lr": args.finetune_lr, "lr": 0.1,
            "batch_size": 128, "threads": 1}


def job(spec: tuple) -> dict:
    """One (dataset, sparsity, seed, kind) run in a worker process."""
    dataset, sparsity, seed, kind, base, root = spec
    torch.set_num_threads(1)
    started = time.perf_counter()
    out = Path(root) / f"{dataset}-{kind}-{sparsity}-s{seed}"
    if kind == "dense":
        from sparsetrain.procedures.finetune import MaskedTrainer
        from sparsetrain.procedures.gems import build
        from sparsetrain.procedures.gems_config import load_gems_config
        from sparsetrain.train.tasks import evaluate
        cfg = load_gems_config({**base, "dataset": dataset, "seed": seed, "density": 1.0})
        model, loaders, _ = build(cfg)
        masks = {n: torch.ones_like(p, dtype=torch.bool) for n, p in model.named_parameters() if n.endswith("weight")}
        out.mkdir(parents=True, exist_ok=True)
        from sparsetrain.procedures.gems import RunLog
        MaskedTrainer(cfg, loaders, RunLog(out / "metrics.jsonl", False)).run(model, masks, "dense")
        return {"dataset": dataset, "sparsity": 0, "seed": seed, "kind": kind,
                "dense": evaluate(model, loaders.test, "cpu")[0], "time": time.perf_counter() - started}
    from sparsetrain.procedures.gems import run_gems
    cfg = {**base, "dataset": dataset, "seed": seed, "target_sparsity": 100 - sparsity, "algo": kind}
    if kind == "ep":
        cfg.update(regularization="none", sanity_checks=False)
    s = run_gems(cfg, out, progress=False)
    return {"dataset": dataset, "sparsity": sparsity, "seed": seed, "kind": kind, "density": s["density"],
            "before": s["gem_acc_before_finetune"], "after": s["acc_after_finetune"], **s["sanity"],
            "time": time.perf_counter() - started}


def fmt(values: list[float]) -> str:
    """mean ± std in percent."""
    if not values:
        return "n/a"
    mean = 100 * statistics.fmean(values)
    if len(values) == 1:
        return f"{mean:.1f}"
    return f"{mean:.1f} ± {100 * statistics.stdev(values):.1f}"


def render(rows: list[dict], args, wall: float) -> str:
    lines = ["# Gem-Miner and edge-popup at CPU scale (issue 6)", "",
             f"`python benchmarks/gems.py{' --quick' if args.quick else ''}` "
             f"({datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, {platform.processor() or 'cpu'}, "
             f"{os.cpu_count()} cores shared, torch {torch.__version__}, {args.workers} worker processes x 1 thread; "
             f"wall time {wall / 60:.1f} min).", "",
             f"Budget per run: MLP 100-100 (the MNIST-1D paper's), batch 128; score search "
             f"{args.search_epochs} epochs (SGD lr 0.1, momentum 0.9, cosine; Gem-Miner: L2 lambda 1e-4, "
             f"thresholding every {args.iter_period} epochs, K = {(args.search_epochs - 1) // args.iter_period} "
             f"rounds, unflag before fine-tune); fine-tuning {args.finetune_epochs} epochs (SGD lr "
             f"{args.finetune_lr}, momentum 0.9, wd 1e-4, x0.1 at 50 % and 75 %). Dense: the same MLP with its "
             "standard init, trained with the fine-tuning recipe. Sanity checks start from the searched "
             "model and are fine-tuned identically. Test accuracy in %, mean ± std over seeds "
             f"{', '.join(map(str, args.seeds))}.", ""]
    for dataset in args.datasets:
        dense = [r["dense"] for r in rows if r["dataset"] == dataset and r["kind"] == "dense"]
        lines += [f"## {dataset} (dense {fmt(dense)})", "",
                  "| sparsity | GM gem (no weight training) | GM fine-tuned | sanity: weight re-init | "
                  "sanity: mask reshuffle | EP (no weight training) | EP fine-tuned |",
                  "|---|---|---|---|---|---|---|"]
        for sp in args.sparsities:
            gm = [r for r in rows if r["dataset"] == dataset and r["sparsity"] == sp and r["kind"] == "hc_iter"]
            ep = [r for r in rows if r["dataset"] == dataset and r["sparsity"] == sp and r["kind"] == "ep"]
            cells = [fmt([r["before"] for r in gm]), fmt([r["after"] for r in gm]),
                     fmt([r["reinit"] for r in gm if "reinit" in r]),
                     fmt([r["reshuffle"] for r in gm if "reshuffle" in r]),
                     fmt([r["before"] for r in ep]), fmt([r["after"] for r in ep])]
            lines.append(f"| {sp} % | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--datasets", default="mnist1d,digits")
    p.add_argument("--sparsities", default="90,95,98")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--search-epochs", type=int, default=40)
    p.add_argument("--iter-period", type=int, default=4)
    p.add_argument("--finetune-epochs", type=int, default=40)
    p.add_argument("--finetune-lr", type=float, default=0.1)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--out", default=str(HERE / "results_gems.md"))
    p.add_argument("--quick", action="store_true", help="1 seed, 5 + 5 epochs, mnist1d at 90 %% only")
    args = p.parse_args(argv)
    if args.quick:
        args.datasets, args.sparsities, args.seeds = "mnist1d", "90", "0"
        args.search_epochs = args.finetune_epochs = 5
        args.iter_period = 2
    args.datasets = args.datasets.split(",")
    args.sparsities = [int(s) for s in args.sparsities.split(",")]
    args.seeds = [int(s) for s in args.seeds.split(",")]
    base = budget(args)
    root = tempfile.mkdtemp(prefix="gems-bench-")
    specs = [(d, 0, s, "dense", base, root) for d in args.datasets for s in args.seeds]
    specs += [(d, sp, s, kind, base, root) for d in args.datasets for sp in args.sparsities for s in args.seeds
              for kind in ("hc_iter", "ep")]
    started = time.perf_counter()
    rows = []
    with get_context("spawn").Pool(args.workers) as pool:
        for r in pool.imap_unordered(job, specs):
            rows.append(r)
            print(f"[{len(rows)}/{len(specs)}] {r['dataset']} {r['kind']} {r['sparsity']} % s{r['seed']}: "
                  f"{ {k: round(v, 3) for k, v in r.items() if isinstance(v, float)} }", flush=True)
    text = render(rows, args, time.perf_counter() - started)
    Path(args.out).write_text(text + "\n")
    print(text)
    print(f"runs in {root}; table written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
