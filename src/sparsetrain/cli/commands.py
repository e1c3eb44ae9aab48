"""The sub-commands. Each is ``fn(args, extra_overrides) -> exit code``."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from sparsetrain.cli import arguments
from sparsetrain.errors import SparsetrainError, check_density
from sparsetrain.train.folders import check_run_name, replace_folder


def default_run_name(cfg: dict) -> str:
    """``{method}-{model}-{dataset}-s{seed}`` unless ``run.name`` is set."""
    return cfg["run"]["name"] or f"{cfg['method']['name']}-{cfg['model']['name']}-{cfg['data']['name']}-s{cfg['seed']}"


def prepare_run_dir(cfg: dict, resume: str | None, overwrite: bool) -> tuple[Path, bool]:
    """The run folder; refuses an existing one unless resuming or overwriting."""
    if resume:
        run_dir = Path(resume)
        if not (run_dir / "config.yaml").is_file():
            raise SparsetrainError(f"cannot resume {run_dir}: not a run folder (no config.yaml).")
        return run_dir, True
    name = default_run_name(cfg)
    check_run_name(name)
    run_dir = Path(cfg["run"]["dir"]) / name
    if run_dir.exists() and (not run_dir.is_dir() or any(run_dir.iterdir())):
        if not overwrite:
            raise SparsetrainError(f"run folder {run_dir} already exists. Pass --resume {run_dir} to continue it, "
                                   "--overwrite to start again (the old run is kept as NAME.old-<time>), or "
                                   "--run.name NAME for a new one.")
        replace_folder(run_dir)
    return run_dir, False


#: config sections whose values live in the checkpoint's state: changing them on --resume is refused
FROZEN_ON_RESUME = ("optim", "schedule", "seed", "label_smoothing", "sparsity")


# ---------------------------------------------------------------- train
def configure_train(p) -> None:
    p.add_argument("--config", "-c", help="a recipe name (sparsetrain recipes) or a YAML file")
    p.add_argument("--print-config", action="store_true", help="print the resolved configuration and exit")
    p.add_argument("--resume", metavar="RUN", help="continue the run in folder RUN from its last checkpoint")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run folder")


def cmd_train(args, extra: list[str]) -> int:
    from sparsetrain.train.config import dump_config, load_config, parse_overrides
    if args.resume:
        if not (Path(args.resume) / "config.yaml").is_file():
            raise SparsetrainError(f"cannot resume {args.resume}: not a run folder (no config.yaml).")
        frozen = sorted(k for k in parse_overrides(extra) if k in FROZEN_ON_RESUME)
        if frozen:
            raise SparsetrainError(
                f"--resume restores {', '.join(frozen)} from the checkpoint (optimizer and LR schedule state, RNG), so "
                "a change there would act late or not at all. Resume without it, or start a new run with it.")
        cfg = load_config(Path(args.resume) / "config.yaml", extra)
    else:
        cfg = load_config(args.config, extra)
    if args.print_config:
        print(dump_config(cfg), end="")
        return 0
    from sparsetrain.distributed import decided_by_rank_zero, setup
    from sparsetrain.train.loop import train
    _, rank, _ = setup(cfg["device"])
    decided = decided_by_rank_zero(lambda: prepare_run_dir(cfg, args.resume, args.overwrite))
    run_dir, resume = decided or (Path(args.resume or Path(cfg["run"]["dir"]) / default_run_name(cfg)),
                                  bool(args.resume))
    try:
        summary = train(cfg, run_dir, resume=resume)
    except KeyboardInterrupt:
        if rank == 0:
            print(f"sparsetrain train: interrupted; the last checkpoint is intact (resume with --resume {run_dir}).",
                  file=sys.stderr)
        return 130
    if rank == 0:
        print_summary(summary, run_dir)
    return 0


def print_summary(summary: dict, run_dir: Path) -> None:
    """The result table printed at the end of a run."""
    acc = summary["final_test_acc"]
    print(f"\n{'run':<10} {run_dir}")
    print(f"{'method':<10} {summary['method']}  ({summary['model']} on {summary['dataset']}, seed {summary['seed']})")
    print(f"{'test acc':<10} {acc * 100:.2f}% final, {summary['best']['test_acc'] * 100:.2f}% at the best "
          f"{summary['best']['selected_by'].split('_')[0]} epoch {summary['best']['epoch']}")
    if summary.get("final_test_ppl") is not None:  # a language model
        print(f"{'test loss':<10} {summary['final_test_loss']:.4f}   perplexity {summary['final_test_ppl']:.3f}")
    print(f"{'density':<10} {summary['density']:.4f}   ITOP rate {summary['itop_rate']:.3f}")
    f = summary["flops"]
    print(f"{'FLOPs':<10} {f['sparse']:.3g} sparse / {f['dense']:.3g} dense ({f['ratio']:.3f}x)   "
          f"wall {summary['wall_time_s']:.1f}s")


# ---------------------------------------------------------------- compare
def configure_compare(p) -> None:
    p.add_argument("recipes", nargs="*", help="recipe names or YAML files (one configuration each)")
    p.add_argument("--methods", help="comma-separated method names on the default (or --config) setup, "
                                     "'dense' included")
    p.add_argument("--config", "-c", help="base recipe for --methods")
    p.add_argument("--seeds", type=arguments.count(), default=3, help="seeds per configuration (default 3)")
    p.add_argument("--out", default=None, help="output folder (default runs/compare-<methods>)")
    p.add_argument("--overwrite", action="store_true",
                   help="start again in an existing output folder (an earlier comparison is kept as NAME.old-<time>)")
    p.add_argument("--densities", type=arguments.comma_list(check_density),
                   help="comma-separated densities: run every sparse configuration at each "
                        "(accuracy-vs-sparsity plot), e.g. 0.2,0.1,0.05")


def cmd_compare(args, extra: list[str]) -> int:
    from sparsetrain.train.compare import compare
    if not args.recipes and not args.methods:
        raise SparsetrainError("compare needs recipes or --methods a,b,c (e.g. --methods dense,rigl,granet).")
    compare(recipes=args.recipes, methods=args.methods.split(",") if args.methods else None, base=args.config,
            seeds=args.seeds, overrides=extra, out=args.out, densities=args.densities, overwrite=args.overwrite)
    return 0


# ---------------------------------------------------------------- methods / recipes
def configure_methods(p) -> None:
    p.add_argument("pattern", nargs="?", default="*", help="glob over method names, e.g. '*rig*'")


def cmd_methods(args, extra) -> int:
    from sparsetrain.methods import list_methods, method_info, method_signature
    names = list_methods(args.pattern)
    if not names:
        raise SparsetrainError(f"no method matches {args.pattern!r}; try 'sparsetrain methods'.")
    for name in names:
        info = method_info(name)
        print(f"{name:<16} {info['family']:<36} {info['paper']}")
        print(f"{'':<16} {info['summary']}")
        if len(names) == 1:
            for p in method_signature(name).parameters.values():
                print(f"{'':<16}   --method.{p.name} (default {p.default!r})")
    return 0


def configure_recipes(p) -> None:
    p.add_argument("name", nargs="?", help="show this recipe")


def cmd_recipes(args, extra) -> int:
    from sparsetrain.train.recipes import find_recipe, list_recipes
    if args.name:
        print(find_recipe(args.name).read_text(), end="")
        return 0
    for name, description in list_recipes().items():
        print(f"{name:<36} {description}")
    return 0


# ---------------------------------------------------------------- report / plot
def configure_report(p) -> None:
    p.add_argument("run", help="a run folder or a checkpoint.pt inside one")


def cmd_report(args, extra) -> int:
    from sparsetrain.train.report import report
    print(report(args.run))
    return 0


def configure_plot(p) -> None:
    p.add_argument("run", help="a run folder")


def cmd_plot(args, extra) -> int:
    from sparsetrain.train.plots import plot_run
    for path in plot_run(args.run):
        print(path)
    return 0


# ---------------------------------------------------------------- schedules
def configure_schedules(p) -> None:
    p.add_argument("--plot", metavar="PNG", nargs="?", const="schedules.png",
                   help="draw every schedule into a PNG (default schedules.png)")
    p.add_argument("--sparsity", type=arguments.fraction(), default=0.9,
                   help="final sparsity for the table and plot (0.9)")


def cmd_schedules(args, extra) -> int:
    from sparsetrain.schedules import CURVES, SparsitySchedule, plot_schedules
    positions = [0.0, 0.25, 0.5, 0.75, 1.0]
    print(f"{'schedule':<10} " + " ".join(f"{'pos ' + str(p):>8}" for p in positions))
    for name in CURVES.names():
        sched = SparsitySchedule(name, start_sparsity=1e-6 if name == "exp" else 0.0, end_sparsity=args.sparsity)
        print(f"{name:<10} " + " ".join(f"{sched.at(p):8.4f}" for p in positions))
    if args.plot:
        print(plot_schedules(args.plot, end_sparsity=args.sparsity))
    return 0


def _listing():
    from sparsetrain.cli import listing
    return listing


COMMANDS = {
    "train": (cmd_train, "train one configuration into a run folder", configure_train,
              "  sparsetrain train\n  sparsetrain train --config rigl_mnist1d --method.density 0.05\n"
              "  sparsetrain train --resume runs/granet-cnn1d-mnist1d-s0\n"),
    "compare": (cmd_compare, "run several configurations on the same data and budget, print one table",
                configure_compare,
                "  sparsetrain compare --methods dense,static,set,rigl,gmp,granet --seeds 3\n"
                "  sparsetrain compare --methods dense,rigl,granet --densities 0.2,0.1,0.05 --seeds 2\n"
                "  sparsetrain compare granet_mnist1d rigl_mnist1d --seeds 2\n"),
    "methods": (cmd_methods, "list the registered methods", configure_methods,
                "  sparsetrain methods\n  sparsetrain methods granet\n"),
    "models": (lambda args, extra: _listing().lister("model", "models")(args, extra),
               "list the registered models", lambda p: _listing().configure(p),
               "  sparsetrain models\n  sparsetrain models 'resnet*'\n"),
    "datasets": (lambda args, extra: _listing().lister("dataset", "datasets")(args, extra),
                 "list the registered datasets", lambda p: _listing().configure(p),
                 "  sparsetrain datasets\n"),
    "criteria": (lambda args, extra: _listing().lister("criterion", "criteria")(args, extra),
                 "list the registered criteria (what drop, grow and prune rank by)",
                 lambda p: _listing().configure(p), "  sparsetrain criteria\n  sparsetrain criteria '*init*'\n"),
    "granularities": (lambda args, extra: _listing().lister("granularity", "granularities")(args, extra),
                      "list the granularities (which weights are pruned, dropped and grown together)",
                      lambda p: _listing().configure(p), "  sparsetrain granularities\n"),
    "recipes": (cmd_recipes, "list the bundled recipes, or show one", configure_recipes,
                "  sparsetrain recipes\n  sparsetrain recipes granet_cifar10_resnet50\n"),
    "schedules": (cmd_schedules, "the pruning schedules of the schedule study (table, --plot PNG)",
                  configure_schedules, "  sparsetrain schedules\n  sparsetrain schedules --plot schedules.png\n"),
    "report": (cmd_report, "per-layer density, FLOPs and ITOP rate of a run or checkpoint", configure_report,
               "  sparsetrain report runs/granet-cnn1d-mnist1d-s0\n"),
    "plot": (cmd_plot, "(re)draw the PNG plots of a run folder", configure_plot,
             "  sparsetrain plot runs/granet-cnn1d-mnist1d-s0\n"),
    "tickets": (lambda args, extra: __import__("sparsetrain.cli.tickets", fromlist=["_"]).cmd_tickets(args, extra),
                "lottery-ticket procedures: imp (iterative magnitude pruning with rewinding) or gems (Gem-Miner)",
                lambda p: __import__("sparsetrain.cli.tickets", fromlist=["_"]).configure(p),
                "  sparsetrain tickets imp --config imp_mnist1d_mlp\n"
                "  sparsetrain tickets imp --config imp_mnist1d_mlp --epochs 20 --imp.rounds 3 --imp.scope global\n"
                "  sparsetrain tickets imp --out runs/imp-mlp-mnist1d-s0 --resume\n"
                "  sparsetrain tickets gems --config gems.yaml\n"),
    "compact": (lambda args, extra: __import__("sparsetrain.cli.export", fromlist=["_"]).cmd_compact(args, extra),
                "physically remove empty channels of a run's model (compact.safetensors + width_spec.json)",
                lambda p: __import__("sparsetrain.cli.export", fromlist=["_"]).configure_compact(p),
                "  sparsetrain compact runs/chase-cnn1d-mnist1d-s0\n"),
    "export": (lambda args, extra: __import__("sparsetrain.cli.export", fromlist=["_"]).cmd_export(args, extra),
               "export a run's compact model as ONNX and/or a sparse safetensors checkpoint",
               lambda p: __import__("sparsetrain.cli.export", fromlist=["_"]).configure_export(p),
               "  sparsetrain export runs/chase-cnn1d-mnist1d-s0 --onnx model.onnx --sparse model.safetensors\n"),
    "bench": (lambda args, extra: __import__("sparsetrain.cli.export", fromlist=["_"]).cmd_bench(args, extra),
              "latency, throughput, params and FLOPs: dense vs compact vs CSR",
              lambda p: __import__("sparsetrain.cli.export", fromlist=["_"]).configure_bench(p),
              "  sparsetrain bench vgg19 --channel-sparsity 0.5 --threads 2\n"
              "  sparsetrain bench runs/chase-cnn1d-mnist1d-s0 --batch-sizes 1,64\n"),
}

__all__ = ["COMMANDS", "json"]
