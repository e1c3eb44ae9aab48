"""Chase on a residual network trained on real data: CIFAR ResNet-20 on scikit-learn digits (issue 4,
ALGORITHMS.md 5), the four Chase forms next to DST and dense at 90 % sparsity.

Every run uses the trainer (`sparsetrain.train.loop.train`) with configurations built from the bundled
recipes: ``dst_mnist1d`` for ``dst`` and dense, ``chase_mnist1d`` for Chase, with digits (1438 train /
359 test 8x8 grey images), ``resnet20`` (``in_channels`` = 1 is derived from the data), batch 64 and
``--epochs`` epochs. All runs share the optimiser and LR schedule of the recipes (SGD 0.1, Nesterov,
weight decay 5e-4, cosine). Chase runs at S_c = 0.5 in four forms, ``score_norm`` none (the paper's
ranking) or layer (our extension) x ``prune_skip`` False or True (the paper's "Chase (prune skip)":
channels tied through residual additions may go too), with the recipe's step schedule (channel events
every 40 steps offset by 10, parameter updates every 20, of a ~940-step run) scaled to this run's
length. Each sparse run is then compacted with ``sparsetrain.compact`` and the compact model
evaluated on the test set next to the masked one; parameters and FLOPs per sample are counted with
``sparsetrain.deploy.bench.count``. One thread per run, one run at a time; finished runs with
the same configuration are reused. Writes ``benchmarks/results_chase_residual.md``.

    python benchmarks/chase_residual.py            # 3 seeds, 40 epochs (~7 min on one thread)
    python benchmarks/chase_residual.py --quick    # 1 seed, 2 epochs: a smoke run, writes nothing
    python benchmarks/chase_residual.py --quick --epochs 1 --results /tmp/r.md   # what the smoke test runs
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import chase_accuracy  # noqa: E402  (its train-or-reuse, rebuild and accuracy helpers)
import common  # noqa: E402

OUT = HERE / "results_chase_residual.md"
#: the steps of the run ``chase_mnist1d``'s schedule was written for (30 epochs x 32 batches of MNIST-1D,
#: rounded as in its comment); its step intervals are scaled by total steps / this
RECIPE_STEPS = 940
#: the criterion of issue 4: a Chase variant is acceptable within this many points of dst
CRITERION = 1.5
#: variant label -> (recipe, method overrides); Chase's step intervals are filled in by ``chase_schedule``
VARIANTS: dict[str, tuple[str, dict]] = {
    "dense": ("dst_mnist1d", {"name": "dense"}),
    "dst": ("dst_mnist1d", {}),
    "chase none": ("chase_mnist1d", {"score_norm": "none", "prune_skip": False}),
    "chase none + prune_skip": ("chase_mnist1d", {"score_norm": "none", "prune_skip": True}),
    "chase layer": ("chase_mnist1d", {"score_norm": "layer", "prune_skip": False}),
    "chase layer + prune_skip": ("chase_mnist1d", {"score_norm": "layer", "prune_skip": True}),
}


def chase_schedule(total_steps: int) -> dict[str, int]:
    """``chase_mnist1d``'s step intervals (channel events every 40, offset 10; updates every 20 of ~940
    steps) scaled to a run of ``total_steps``, so the same number of events fall before ``end``.

    Example:
        >>> chase_schedule(920)
        {'channel_every': 39, 'channel_offset': 10, 'update_every': 20}
        >>> chase_schedule(46)   # --quick: still several channel events before end
        {'channel_every': 2, 'channel_offset': 0, 'update_every': 1}
    """
    scale = total_steps / RECIPE_STEPS
    return {"channel_every": max(1, round(40 * scale)), "channel_offset": round(10 * scale),
            "update_every": max(1, round(20 * scale))}


def steps_per_epoch(batch_size: int) -> int:
    """Optimizer steps per epoch on digits' training split (the trainer keeps the last partial batch)."""
    from sparsetrain.train.data import create_dataset
    return -(-len(create_dataset("digits").train) // batch_size)


def config(label: str, seed: int, epochs: int, batch_size: int, threads: int) -> dict:
    """The trainer configuration of one variant: its recipe on digits / ResNet-20, same budget for all."""
    from sparsetrain.train.config import load_config
    recipe, method = VARIANTS[label]
    method = {**method, "density": 0.1} if method.get("name") != "dense" else method
    if recipe == "chase_mnist1d":  # S_c = 0.5, min_ratio 0.5 and the fractions end / soft_end from the recipe
        method = {**method, "channel_sparsity": 0.5, "min_ratio": 0.5,
                  **chase_schedule(epochs * steps_per_epoch(batch_size))}
    return load_config(recipe, {"data": {"name": "digits"}, "model": {"name": "resnet20"}, "seed": seed,
                                "epochs": epochs, "batch_size": batch_size, "threads": threads, "method": method,
                                "run": {"plots": False, "progress": False}})


def conv_channels(model: torch.nn.Module) -> int:
    """Output channels of all convolutions (each one's width, residual ties counted per layer)."""
    return sum(m.out_channels for m in model.modules() if isinstance(m, torch.nn.Conv2d))


def compact_row(cfg: dict, run_dir: Path) -> dict:
    """Compact the trained (masked) model and compare it with the masked one on the test set."""
    from sparsetrain import compact
    from sparsetrain.deploy.bench import count
    model, test, state = chase_accuracy._rebuild(cfg, run_dir)
    x = torch.stack([test[i][0] for i in range(len(test))])
    example = x[:8]
    with warnings.catch_warnings():  # dst may leave no empty channel: compact then warns and returns the model
        warnings.simplefilter("ignore")
        small, spec = compact(model, example)
    small.eval()
    params, flops = count(model, example[:1])
    params_c, flops_c = count(small, example[:1])
    with torch.no_grad():  # not around compact: its tracer needs autograd
        logit_diff = float((model(x) - small(x)).abs().max())
    row = {"acc_masked": chase_accuracy._accuracy(model, test), "acc_compact": chase_accuracy._accuracy(small, test),
           "max_logit_diff": logit_diff, "params": params, "flops": flops,
           "params_compact": params_c, "flops_compact": flops_c,
           "conv_removed": 1 - conv_channels(small) / conv_channels(model)}
    chase = state.get("method_state", {}).get("chase")
    if chase and chase.get("alive"):  # the removable channels Chase traced (its S_c counts these)
        alive = chase["alive"].values()
        row["plan_removed"] = 1 - sum(int(a.sum()) for a in alive) / sum(int(a.numel()) for a in alive)
        row["plan_channels"] = sum(int(a.numel()) for a in alive)
    return row


def run(args) -> dict[str, list[dict]]:
    """Train (or reuse) every variant for every seed, then compact and evaluate the sparse ones."""
    results: dict[str, list[dict]] = {label: [] for label in VARIANTS}
    for seed in range(args.seeds):
        for label in VARIANTS:
            cfg = config(label, seed, args.epochs, args.batch_size, args.threads)
            run_dir = Path(args.out) / f"{label.replace(' + ', '-').replace(' ', '-')}-e{args.epochs}-s{seed}"
            summary = chase_accuracy._train(cfg, run_dir)
            row = {"seed": seed, "acc": summary["final_test_acc"], "density": summary["density"],
                   "sparse_flops_ratio": summary["flops"]["ratio"], "time": summary["wall_time_s"]}
            if label != "dense":
                row.update(compact_row(cfg, run_dir))
            results[label].append(row)
            print(json.dumps({"run": label, **row}), flush=True)
    return results


def _mean(rows: list[dict], key: str, fmt: str = "{:.3f}") -> str:
    values = [r[key] for r in rows if key in r]
    return fmt.format(statistics.mean(values)) if values else "-"


def table(results: dict[str, list[dict]]) -> tuple[str, list[str]]:
    """The Markdown table and the verdicts (gap to dst's mean accuracy, within ``CRITERION`` points)."""
    dst = statistics.mean(r["acc"] for r in results["dst"]) * 100
    ref_params = next(r["params"] for label, runs in results.items() if label != "dense" for r in runs)
    rows, verdicts = [], []
    for label, runs in results.items():
        mean = statistics.mean(r["acc"] for r in runs) * 100
        sparse = label != "dense"
        gap = dst - mean
        ok = gap <= CRITERION
        if label.startswith("chase"):
            verdicts.append(f"{label}: dst - {label} = {gap:+.2f} points -> {'within' if ok else 'NOT within'} "
                            f"{CRITERION} of dst")
        diff_acc = max(abs(r["acc_compact"] - r["acc_masked"]) for r in runs) * 100 if sparse else None
        params = statistics.mean(r["params_compact"] for r in runs) if sparse else ref_params
        rows.append([
            label, common.mean_std([r["acc"] for r in runs]),
            common.mean_std([r["acc_compact"] for r in runs]) if sparse else "-",
            f"{diff_acc:.2f} / {max(r['max_logit_diff'] for r in runs):.1e}" if sparse else "-",
            _mean(runs, "plan_removed"), _mean(runs, "conv_removed") if sparse else "0",
            f"{params:.0f}", _mean(runs, "params_compact_ratio") if sparse else "1",
            _mean(runs, "flops_compact_ratio") if sparse else "1",
            _mean(runs, "sparse_flops_ratio"),
            "-" if label in ("dense", "dst") else f"{gap:+.2f}",
            "-" if label in ("dense", "dst") else ("yes" if ok else "no")])
    header = ["variant", "test acc (masked)", "compact test acc", "max abs diff: acc (points) / logit",
              "channels removed (Chase's plan)", "conv channels removed (compact)", "params (compact)",
              "params compact / dense", "FLOPs compact / dense", "FLOPs sparse / dense (density-scaled)",
              "dst - variant (points)", f"within {CRITERION} of dst"]
    return common.table(header, rows), verdicts


def add_ratios(results: dict[str, list[dict]]) -> tuple[int, int]:
    """Compact params and FLOPs as fractions of the dense model's (taken from any sparse run's full width)."""
    ref = next(r for label, runs in results.items() if label != "dense" for r in runs)
    for runs in results.values():
        for r in runs:
            if "params_compact" in r:
                r["params_compact_ratio"] = r["params_compact"] / ref["params"]
                r["flops_compact_ratio"] = r["flops_compact"] / ref["flops"]
    return ref["params"], ref["flops"]


def report(results: dict[str, list[dict]], args, seconds: float) -> str:
    params, flops = add_ratios(results)
    train_min = sum(r["time"] for runs in results.values() for r in runs) / 60
    tab, verdicts = table(results)
    sched = chase_schedule(args.epochs * steps_per_epoch(args.batch_size))
    command = " ".join(["python benchmarks/chase_residual.py", *sys.argv[1:]])
    lines = ["# Chase on a residual network: ResNet-20 on scikit-learn digits (issue 4)", "",
             f"Command: `{command}`", "", *common.machine_info(), "",
             f"Wall time of this call: {seconds / 60:.1f} min (the runs' training time adds up to {train_min:.1f} min; "
             f"{args.seeds} seeds x {len(VARIANTS)} variants, one thread per run, one run at a time; finished runs "
             "with the same configuration are reused).", "",
             f"Setup: CIFAR ResNet-20 (in_channels 1; {params} parameters, {flops} FLOPs per sample dense on "
             f"8x8 inputs) on digits (1438 train / 359 test images, the same split for every seed; one test image = "
             f"0.28 points), {args.epochs} epochs at batch {args.batch_size} "
             f"({args.epochs * steps_per_epoch(args.batch_size)} steps), SGD 0.1 Nesterov, weight decay 5e-4, "
             "cosine, for every variant. Sparse runs at density 0.1 (90 % sparse): `dst` is recipe `dst_mnist1d`'s "
             "method (RigL-ITOP), Chase is recipe `chase_mnist1d`'s with S_c = 0.5, min_ratio 0.5, end = soft_end = "
             f"0.8125, channel events every {sched['channel_every']} steps offset by {sched['channel_offset']}, "
             f"parameter updates every {sched['update_every']}. `score_norm=layer` is our extension (not the paper); "
             "`prune_skip` is the paper's \"Chase (prune skip)\". Final-epoch test accuracy (%), "
             "mean ± std over seeds.",
             "",
             "Columns: \"channels removed (Chase's plan)\" is the share of the channels Chase may remove (without "
             "prune_skip the channels tied through residual additions are not among them), which S_c = 0.5 targets; "
             "\"conv channels removed\" is 1 - (sum of the compact model's convolution widths) / (the dense one's); "
             "params and FLOPs (per sample, `sparsetrain.deploy.bench.count`) of the compact model run densely, "
             "against the dense ResNet-20; \"FLOPs sparse\" is the trainer's density-scaled count of the masked "
             "model (RigL-paper convention). dst is compacted too (it removes only channels that happen to be "
             "empty). The max abs differences are over seeds, compact vs masked model on the whole test set.", "",
             tab, "", *[f"- {v}" for v in verdicts], "",
             "Per run (test accuracy, training seconds): " + "; ".join(
                 f"{k} s{r['seed']} {r['acc'] * 100:.2f}% {r['time']:.0f}s" for k, v in results.items() for r in v)]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=None, help="default 40 (--quick: 2)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="/tmp/sparsetrain-chase-residual", help="folder of the runs")
    parser.add_argument("--results", default=None, help=f"Markdown file to write (default {OUT.name}; "
                        "--quick writes only when given)")
    parser.add_argument("--quick", action="store_true", help="1 seed, 2 epochs (smoke run)")
    args = parser.parse_args(argv)
    if args.quick:
        args.seeds = 1
    args.epochs = args.epochs or (2 if args.quick else 40)
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    results = run(args)
    text = report(results, args, time.perf_counter() - started)
    print(text)
    target = args.results or (None if args.quick else OUT)
    if target:
        Path(target).write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
