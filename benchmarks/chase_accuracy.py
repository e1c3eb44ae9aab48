"""Chase vs DST at the same density on MNIST-1D (issue 4, ALGORITHMS.md 5): accuracy, channels removed,
and the compact model's accuracy next to the uncompacted one.

Runs the bundled recipes ``chase_mnist1d`` (S_c = 0.3, 90 % sparsity) and ``dst_mnist1d`` (90 %),
identical except for the method, for ``--seeds`` seeds each, one thread per run, one run at a
time (budget on 2 shared cores: about 5 minutes at width 24, 15 at width 64; finished runs with
the same configuration are reused). After each Chase run the
trained model is compacted with ``sparsetrain.compact`` (if present) and evaluated on the test set.
Writes ``benchmarks/results_chase.md``.

    python benchmarks/chase_accuracy.py              # 3 seeds, 30 epochs (the recipes, width 24)
    python benchmarks/chase_accuracy.py --widths 24,64   # also the cnn1d builder's default width
    python benchmarks/chase_accuracy.py --quick      # 1 seed, 3 epochs: a smoke run
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import common  # noqa: E402

OUT = HERE / "results_chase.md"


def _config(recipe: str, seed: int, epochs: int | None, threads: int, width: int) -> dict:
    from sparsetrain.train.config import load_config
    cfg = load_config(recipe)
    cfg.update(seed=seed, threads=threads)
    cfg["run"] = {**cfg["run"], "plots": False}
    cfg["model"] = {**cfg["model"], "width": width}
    if epochs:
        cfg["epochs"] = epochs
    return cfg


def _train(cfg: dict, run_dir: Path) -> dict:
    """Train, or reuse a finished run of the very same configuration."""
    from sparsetrain.train.config import dump_config
    from sparsetrain.train.loop import train
    summary, config = run_dir / "summary.json", run_dir / "config.yaml"
    if summary.is_file() and config.is_file() and config.read_text() == dump_config(cfg):
        return json.loads(summary.read_text())
    return train(cfg, run_dir)


def _rebuild(cfg: dict, run_dir: Path):
    """The trained model from the run's checkpoint, with its test set and the saved sparsifier state."""
    from sparsetrain.train.data import create_dataset
    from sparsetrain.train.models import create_model, input_kwargs
    splits = create_dataset(cfg["data"]["name"], seed=cfg["seed"], val_fraction=cfg["data"]["val_fraction"])
    kwargs = {k: v for k, v in cfg["model"].items() if k != "name"}
    model = create_model(cfg["model"]["name"], num_classes=splits.num_classes,
                         **input_kwargs(cfg["model"]["name"], splits.input_shape, kwargs), **kwargs)
    state = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    model.load_state_dict(state["model"])
    return model.eval(), splits.test, state["sparsifier"]


@torch.no_grad()
def _accuracy(model, dataset) -> float:
    loader = torch.utils.data.DataLoader(dataset, batch_size=500)
    correct = sum(int((model(x).argmax(1) == y).sum()) for x, y in loader)
    return correct / len(dataset)


def _compact_row(cfg: dict, run_dir: Path) -> dict:
    model, test, state = _rebuild(cfg, run_dir)
    alive = state["method_state"]["chase"]["alive"]
    channels = sum(int(a.numel()) for a in alive.values())
    row = {"acc_masked": _accuracy(model, test), "channel_sparsity": 1 - sum(int(a.sum()) for a in alive.values())
           / channels, "params": sum(p.numel() for p in model.parameters())}
    try:
        from sparsetrain import compact
    except ImportError:
        return row
    example = torch.stack([test[i][0] for i in range(8)])
    small, _ = compact(model, example)
    row.update(acc_compact=_accuracy(small.eval(), test), params_compact=sum(p.numel() for p in small.parameters()))
    return row


#: what is compared: label -> (recipe, method overrides); S_c = 0 is the DST underneath Chase alone
RUNS = {"chase_mnist1d": ("chase_mnist1d", {}), "chase_mnist1d[S_c=0]": ("chase_mnist1d", {"channel_sparsity": 0.0}),
        "chase_mnist1d[norm=layer]": ("chase_mnist1d", {"score_norm": "layer"}),
        "dst_mnist1d": ("dst_mnist1d", {})}
#: run-folder suffix of each variant label
FOLDER = {"[S_c=0]": "-sc0", "[norm=layer]": "-layer"}


def run(args, width: int) -> dict:
    results: dict[str, list[dict]] = {label: [] for label in RUNS}
    for seed in range(args.seeds):
        for label, (recipe, overrides) in RUNS.items():
            cfg = _config(recipe, seed, args.epochs, args.threads, width)
            cfg["method"] = {**cfg["method"], **overrides}
            name = label
            for tag, suffix in FOLDER.items():
                name = name.replace(tag, suffix)
            run_dir = Path(args.out) / (f"{name}-s{seed}" if width == 24 else f"{name}-w{width}-s{seed}")
            summary = _train(cfg, run_dir)
            row = {"seed": seed, "acc": summary["final_test_acc"], "density": summary["density"],
                   "time": summary["wall_time_s"]}
            if label in ("chase_mnist1d", "chase_mnist1d[norm=layer]"):  # runs that remove channels
                row.update(_compact_row(cfg, run_dir))
            results[label].append(row)
            print(json.dumps({"run": label, "width": width, **row}), flush=True)
    return results


def _mean(rows: list[dict], key: str) -> str:
    values = [r[key] for r in rows if key in r]
    return common.mean_std(values) if values else "n/a"


def report(by_width: dict[int, dict], args, seconds: float) -> str:
    train_min = sum(r["time"] for res in by_width.values() for rows in res.values() for r in rows) / 60
    lines = ["# Chase vs DST on MNIST-1D (issue 4)", "", *common.machine_info(), "",
             f"Command: `python benchmarks/chase_accuracy.py {' '.join(sys.argv[1:])}` ({seconds / 60:.1f} min "
             f"this call, reusing finished runs; the runs' training time adds up to {train_min:.1f} min; "
             f"{args.seeds} seeds, one thread per run, runs one after the other on a shared 2-core machine).",
             "Recipes `chase_mnist1d` and `dst_mnist1d` (identical but for the method): cnn1d, 30 epochs, SGD 0.1 "
             "cosine, batch 128, 90 % sparsity; final test accuracy (%), mean ± std over seeds. Width 24 is the "
             "recipes' (and the trainer's default) model; width 64 is the cnn1d builder's default. The S_c = 0 row "
             "is Chase's own unstructured DST (global MEST soft bound, then global DST) without channel removal: "
             "it separates the effect of removing channels from that of the DST underneath.", ""]
    for width, results in by_width.items():
        lines += [f"## cnn1d width {width}", "", *_width_report(results), ""]
    return "\n".join(lines)


def _width_report(results: dict) -> list[str]:
    chase, dst, sc0 = results["chase_mnist1d"], results["dst_mnist1d"], results["chase_mnist1d[S_c=0]"]
    gap = (statistics.mean(r["acc"] for r in dst) - statistics.mean(r["acc"] for r in chase)) * 100
    rows = [["dst (RigL-ITOP), 90 %", _mean(dst, "acc"), f"{statistics.mean(r['density'] for r in dst):.4f}",
             "0", "-", "-"],
            ["chase S_c = 0.3, 90 %", _mean(chase, "acc"), f"{statistics.mean(r['density'] for r in chase):.4f}",
             f"{statistics.mean(r['channel_sparsity'] for r in chase):.3f}", _mean(chase, "acc_compact"),
             f"{statistics.mean(r['params'] for r in chase):.0f} -> "
             + (f"{statistics.mean(r['params_compact'] for r in chase):.0f}" if "params_compact" in chase[0] else "?")],
            ["chase S_c = 0 (its global MEST/DST alone), 90 %", _mean(sc0, "acc"),
             f"{statistics.mean(r['density'] for r in sc0):.4f}", "0", "-", "-"]]
    layer = results.get("chase_mnist1d[norm=layer]")
    if layer:  # our extension (score_norm="layer"), not the paper's ranking
        rows.append(["chase S_c = 0.3, score_norm=layer (ours), 90 %", _mean(layer, "acc"),
                     f"{statistics.mean(r['density'] for r in layer):.4f}",
                     f"{statistics.mean(r['channel_sparsity'] for r in layer):.3f}", _mean(layer, "acc_compact"),
                     f"{statistics.mean(r['params'] for r in layer):.0f} -> "
                     + (f"{statistics.mean(r['params_compact'] for r in layer):.0f}"
                        if "params_compact" in layer[0] else "?")])
    exact = all(r.get("acc_compact") == r["acc_masked"] for r in chase + (layer or []))
    return [common.table(["method", "test acc", "density", "channel sparsity", "compact test acc",
                          "parameters (all) -> compact"], rows), "",
            f"Gap dst - chase: {gap:.2f} points (target: within 1.5). "
            f"Compact model accuracy equal to the uncompacted one on every seed: {exact}.", "",
            "Per run (test accuracy, training seconds): " + "; ".join(
                f"{k} s{r['seed']} {r['acc'] * 100:.2f}% {r['time']:.0f}s" for k, v in results.items() for r in v)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=None, help="override the recipes' 30 epochs")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--widths", default="24", help="comma-separated cnn1d widths (24: the recipes)")
    parser.add_argument("--out", default="/tmp/sparsetrain-chase-bench")
    parser.add_argument("--quick", action="store_true", help="1 seed, 3 epochs (smoke run, not written)")
    args = parser.parse_args(argv)
    if args.quick:
        args.seeds, args.epochs = 1, 3
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    by_width = {int(w): run(args, int(w)) for w in args.widths.split(",")}
    text = report(by_width, args, time.perf_counter() - started)
    print(text)
    if not args.quick:
        OUT.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
