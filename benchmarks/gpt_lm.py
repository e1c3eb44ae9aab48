"""The GPT recipes (issue 13): validation loss of dense, static, SET, RigL, GraNet and 2:4, with training FLOPs.

    python benchmarks/gpt_lm.py                 # 6 recipes x 3 seeds x 5 epochs: a few hours on 2 CPU cores
    python benchmarks/gpt_lm.py --epochs 2      # shorter
    python benchmarks/gpt_lm.py --quick         # smoke run: tiny corpus and model, 1 seed, 3 recipes

Each bundled ``*_gpt_pystdlib`` recipe (a 2-layer character-level GPT on the
Python standard library's sources, ``sparsetrain.train.data.text``; 90 %
sparsity except 2:4, which fixes 50 %) is trained with the reference trainer
for ``--seeds`` seeds. The table gives the final validation loss and
perplexity and the test loss (mean ± std over seeds), the final density of
the sparsified layers, and training FLOPs as a fraction of dense training
(benchmarks/accuracy.py's accounting: 3 f_S per step, 2 f_S + f_D at a step
that needs the dense gradient; the tied embedding / head, attention and
norms stay dense). Finished runs are reused unless ``--fresh``. Goal: RigL
and GraNet beat static by a clear margin.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from accuracy import cached_summary, training_flops  # noqa: E402
from common import HERE, Tee, demote, machine_info, table, write_section  # noqa: E402

RECIPES = ["dense", "static", "set", "rigl", "granet", "nm24"]
QUICK_RECIPES = ["dense", "static", "rigl"]
#: the corpus and model of --quick (what tests/test_benchmarks.py runs)
TINY = ["--data.train_chars", "4000", "--data.val_chars", "1000", "--data.test_chars", "1000", "--data.context",
        "16", "--model.n_layer", "1", "--model.n_head", "2", "--model.n_embd", "32", "--batch_size", "16"]


def loss_stats(values: list[float]) -> str:
    """``mean ± std`` of losses, 4 decimals (std 0 for one seed)."""
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.4f} ± {std:.4f}"


def rows_for(recipes: list[str], args) -> list[dict]:
    from sparsetrain.train.config import load_config
    from sparsetrain.train.loop import train
    overrides = ["--threads", str(args.threads), "--run.progress", "false", "--run.plots", "false",
                 "--run.layer_density_every", "1", "--run.checkpoint_every", str(10**6)]
    overrides += (["--epochs", str(args.epochs)] if args.epochs else []) + (TINY if args.quick else [])
    out, rows, cache = Path(args.out), [], {}
    for name in recipes:
        cfg = load_config(f"{name}_gpt_pystdlib", overrides)
        runs = []
        for seed in range(args.seeds):
            run_cfg, run_dir = {**cfg, "seed": seed}, out / f"{name}-s{seed}"
            summary = None if args.fresh else cached_summary(run_dir, run_cfg)
            if summary is None:
                print(f"== {name} seed {seed}", flush=True)
                summary = train(run_cfg, run_dir)
            runs.append((summary, training_flops(run_cfg, run_dir, cache)))
        flops = [f for _, f in runs]
        rows.append({"recipe": name, "density": statistics.mean(s["density"] for s, _ in runs),
                     "val_loss": [s["final_val_loss"] for s, _ in runs],
                     "val_ppl": statistics.mean(s["final_val_ppl"] for s, _ in runs),
                     "test_loss": [s["final_test_loss"] for s, _ in runs],
                     "train_flops": None if None in flops else statistics.mean(flops),
                     "time": statistics.mean(s["wall_time_s"] for s, _ in runs)})
    return rows


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny corpus and model, 1 seed, 3 recipes")
    parser.add_argument("--recipes", default=None, help=f"comma-separated subset of {', '.join(RECIPES)}")
    parser.add_argument("--seeds", type=int, default=None, help="seeds per recipe (default 3; --quick: 1)")
    parser.add_argument("--epochs", type=int, default=None, help="epochs (default: the recipes' 5; --quick: 1)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=str(HERE.parent / "runs" / "bench-gpt"), help="run folders")
    parser.add_argument("--fresh", action="store_true", help="retrain runs that already finished")
    parser.add_argument("--results", default=None, help="Markdown file for the report (default: "
                        "benchmarks/RESULTS.md, section 'gpt-lm', or 'gpt-lm-N-epochs' with --epochs N; --quick: none)")
    args = parser.parse_args(argv)
    args.seeds = args.seeds or (1 if args.quick else 3)
    args.epochs = args.epochs or (1 if args.quick else None)
    recipes = args.recipes.split(",") if args.recipes else (QUICK_RECIPES if args.quick else RECIPES)
    unknown = sorted(set(recipes) - set(RECIPES))
    if unknown:
        parser.error(f"unknown recipe {unknown[0]!r}; choose from {', '.join(RECIPES)}")
    results = args.results or (None if args.quick else str(HERE / "RESULTS.md"))
    torch.set_num_threads(args.threads)  # as the runs will (machine_info prints it)
    with Tee() as tee:
        print("\n".join(machine_info()))
        rows = rows_for(recipes, args)
        print(f"\n{args.seeds} seeds; mean ± std over seeds\n")
        print(table(["recipe", "density", "val loss", "val ppl", "test loss", "training FLOPs (x dense)",
                     "time/run s"],
                    [[r["recipe"], f"{r['density']:.3f}", loss_stats(r["val_loss"]), f"{r['val_ppl']:.3f}",
                      loss_stats(r["test_loss"]), "?" if r["train_flops"] is None else f"{r['train_flops']:.3f}",
                      f"{r['time']:.0f}"] for r in rows]))
    if results:
        command = "python benchmarks/gpt_lm.py" + "".join(f" {a}" for a in argv)
        # a shorter run keeps its own section, so it never replaces the full-length figures
        key = "gpt-lm" if args.epochs is None else f"gpt-lm-{args.epochs}-epochs"
        length = "" if args.epochs is None else f", {args.epochs} epochs"
        write_section(key, f"## The GPT recipes on pystdlib{length}: validation loss and training FLOPs (issue 13)\n\n"
                      f"```\n{command}\n```\n\n" + demote(tee.text(), 2), results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
