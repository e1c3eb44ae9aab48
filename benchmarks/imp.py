"""Lottery tickets on MNIST-1D: IMP against dense, a random re-init of the ticket's mask, and random pruning.

    python benchmarks/imp.py                 # 3 seeds (about 8 min per seed on one busy CPU core)
    python benchmarks/imp.py --seeds 1 --quick   # smoke run: 2 rounds, 2 epochs

The MNIST-1D authors' lottery-ticket setup (Greydanus 2020; the package's
``notebooks/train.py`` defaults): MNIST-1D with 4000 training / 1000 test
samples (``mnist1d.data.get_dataset_args()``, data seed 42, generated locally
by our loader), an MLP 40-100-100-10, Adam lr 1e-2 without weight decay, a
constant LR, batch 100 (our trainer: 150 epochs of 40 steps = 6000 steps),
per-layer magnitude pruning, survivors rewound to their initial values.
Bundled config: ``imp_mnist1d_mlp`` (``src/sparsetrain/recipes/tickets``).

IMP prunes ``p = 1 - 0.1 ** 0.1`` (20.6 %) of the survivors per round, so that
round 10 sits at exactly 10 % density, round 13 at 5.0 % and round 17 at 2 %
(90 / 95 / 98 % sparsity) in one chain. At each of those masks two controls
train for the same 6000 steps with the same data order:

- ``reinit``: the ticket's mask on a fresh random initialisation (another seed);
- ``random``: random pruning at the same per-layer counts (exact-count uniform
  random masks) on the original initialisation.

Accuracy: the final test accuracy (after the last step) and the best test
accuracy over the epochs (the notebook reports both as last_acc / max_acc).
Results go to ``benchmarks/results_imp.md`` (one section per variant) and
``benchmarks/imp-<variant>.png``.

``--variant notebook`` runs the setup of the authors' notebook instead
(``notebooks/5. lottery_tickets.ipynb``: hidden 500, lr 2e-2, 1501 steps; we
train 38 epochs = 1520 steps), at 90 % only.
Finished runs are reused, so an interrupted benchmark continues.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch

from sparsetrain.core.topk import random_mask
from sparsetrain.procedures.lottery import load_tickets_config, round_dir, run_imp, train_round
from sparsetrain.train.checkpoint import load_checkpoint, save_checkpoint
from sparsetrain.train.models import create_model, input_kwargs

HERE = Path(__file__).resolve().parent
P = 1 - 0.1 ** 0.1
MARKS = {0.9: 10, 0.95: 13, 0.98: 17}  # sparsity -> IMP round


def fresh_init(cfg: dict, seed: int) -> dict:
    """A newly initialised model of the config's architecture (MNIST-1D input), drawn from ``seed``."""
    torch.manual_seed(seed)
    kwargs = {k: v for k, v in cfg["model"].items() if k != "name"}
    model = create_model(cfg["model"]["name"], num_classes=10, **input_kwargs(cfg["model"]["name"], (1, 40), kwargs),
                         **kwargs)
    return {k: v.clone() for k, v in model.state_dict().items()}


def controls(cfg: dict, chain: Path, r: int, seed: int) -> dict[str, dict]:
    """Train the re-init and random-pruning controls of round ``r``'s mask; returns their summaries."""
    masks = load_checkpoint(round_dir(chain, r) / "masks.pt")
    gen = torch.Generator().manual_seed(10_000 + seed * 100 + r)
    setups = {"reinit": (masks, fresh_init(cfg, 1000 + seed)),
              "random": ({n: random_mask(m.shape, int(m.sum()), gen) for n, m in masks.items()},
                         load_checkpoint(chain / "rewind.pt"))}
    out = {}
    for name, (mask, weights) in setups.items():
        run = chain / f"{name}_{r:02d}"
        if not (run / "summary.json").is_file():
            save_checkpoint(mask, run / "masks.pt")
            save_checkpoint(weights, run / "weights.pt")
            train_round(cfg, run, masks=(run / "masks.pt").resolve(), weights=(run / "weights.pt").resolve())
        out[name] = json.loads((run / "summary.json").read_text())
    return out


TITLES = {"brief": "MNIST-1D MLP 40-100-100-10, Adam 1e-2, 6000 steps (the setup as the issue states it)",
          "notebook": "MNIST-1D MLP 40-500-500-10, Adam 2e-2, 1520 steps (the notebook's lottery-ticket cell)"}
#: the notebook's lottery-ticket cell (``notebooks/5. lottery_tickets.ipynb``): hidden 500, lr 2e-2, 1501 steps
NOTEBOOK = ["--model.hidden", "[500, 500]", "--optim.lr", "0.02", "--epochs", "38"]


def one_seed(seed: int, root: Path, quick: bool, variant: str = "brief") -> dict:
    """The IMP chain and the controls of one seed."""
    overrides = ["--seed", str(seed), "--threads", "1", "--run.progress", "false", "--imp.prune_fraction", str(P)]
    if variant == "notebook":
        overrides += NOTEBOOK
    if quick:
        overrides += ["--epochs", "2"]
    marks = {0.9: 1, 0.95: 2} if quick else {0.9: 10} if variant == "notebook" else MARKS
    chain = root / f"imp-s{seed}"
    result: dict = {"marks": {}}
    # the chain is extended target by target (resuming), each mark's controls trained as soon as it exists
    for sparsity, r in marks.items():
        cfg, imp = load_tickets_config("imp_mnist1d_mlp", overrides + ["--imp.target_density", "null",
                                                                       "--imp.rounds", str(r)])
        rows = run_imp(cfg, imp, chain, resume=True)["rounds"]
        result["marks"][sparsity] = {"imp": rows[r], **controls(cfg, chain, r, seed)}
    return {**result, "dense": rows[0], "rows": rows}


def _acc(summary: dict, which: str) -> float:
    return 100 * (summary["final_test_acc"] if which == "final" else summary["best"]["test_acc"]
                  if "best" in summary else summary["best_test_acc"])


def _train_time(result: dict) -> float:
    """Seconds of training of one seed: every IMP round and every control."""
    controls = [m[k]["wall_time_s"] for m in result["marks"].values() for k in ("reinit", "random")]
    return sum(r["wall_time_s"] for r in result["rows"]) + sum(controls)


def _cell(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.1f}"
    return f"{statistics.mean(values):.1f} ± {statistics.stdev(values):.1f}"


def report(results: list[dict], quick: bool, title: str) -> str:
    """The Markdown section for ``results_imp.md``."""
    import common
    lines = [f"## {title}", "",
             *[f"    {line}" for line in common.machine_info()], "",
             f"Seeds {[r['seed'] for r in results]}; training wall time per seed (sum over its runs, on a CPU "
             f"core shared with other jobs): {', '.join(f'{_train_time(r) / 60:.1f}' for r in results)} min"
             f"{' (QUICK smoke run)' if quick else ''}.",
             "Test accuracy % (mean ± std over seeds), final epoch / best epoch. Setup in the script's docstring.", "",
             "| sparsity | density | dense | IMP ticket | ticket mask, re-init | random pruning |",
             "|---|---|---|---|---|---|"]
    dense = [_acc(r["dense"], w) for r in results for w in ("final", "best")]
    for sparsity in results[0]["marks"]:
        cells = []
        for kind in ("imp", "reinit", "random"):
            cells.append(" / ".join(_cell([_acc(r["marks"][sparsity][kind], w) for r in results])
                                    for w in ("final", "best")))
        density = results[0]["marks"][sparsity]["imp"]["density"]
        lines.append(f"| {100 * sparsity:.0f} % | {density:.4f} | {_cell(dense[0::2])} / {_cell(dense[1::2])} | "
                     + " | ".join(cells) + " |")
    lines += ["", "IMP per round (final test accuracy %, per seed):", "",
              "| round | density | " + " | ".join(f"seed {r['seed']}" for r in results) + " |",
              "|---|---|" + "---|" * len(results)]
    for i, row in enumerate(results[0]["rows"]):
        lines.append(f"| {row['round']} | {row['density']:.4f} | "
                     + " | ".join(f"{100 * r['rows'][i]['final_test_acc']:.1f}" for r in results) + " |")
    return "\n".join(lines) + "\n"


def plot(results: list[dict], path: Path, title: str) -> None:
    """Mean final accuracy vs density: the IMP chain, with the controls at the marked sparsities."""
    from sparsetrain.core.figures import pyplot
    plt = pyplot()
    if plt is None:
        return
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    rows = results[0]["rows"]
    ax.plot([r["density"] for r in rows], [statistics.mean(100 * res["rows"][i]["final_test_acc"] for res in results)
                                           for i in range(len(rows))], "o-", label="IMP ticket (rewind to init)")
    for kind, style in (("reinit", "s"), ("random", "v")):
        xs = [results[0]["marks"][s]["imp"]["density"] for s in results[0]["marks"]]
        ys = [statistics.mean(_acc(res["marks"][s][kind], "final") for res in results) for s in results[0]["marks"]]
        ax.plot(xs, ys, style, markersize=8, label={"reinit": "ticket mask, re-init", "random": "random pruning"}[kind])
    ax.axhline(statistics.mean(_acc(r["dense"], "final") for r in results), color="gray", ls="--", label="dense")
    ax.set_xscale("log")
    ax.invert_xaxis()
    ax.set(xlabel="density", ylabel="test accuracy %", title=title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--seed", type=int, help="run only this seed (several processes can share --root)")
    ap.add_argument("--root", default="runs/bench_imp")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--report-only", action="store_true", help="only collect finished seeds into the report")
    ap.add_argument("--variant", choices=["brief", "notebook"], default="brief",
                    help="brief: MLP 100-100, lr 1e-2, 6000 steps; notebook: the notebook's MLP 500-500, lr 2e-2, "
                         "1520 steps, 90 %% only")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    sys.path.insert(0, str(HERE))
    root = Path(args.root) / ("quick" if args.quick else "full" if args.variant == "brief" else "notebook")
    seeds = [args.seed] if args.seed is not None else list(range(args.seeds))
    results = []
    for seed in seeds:
        if args.report_only and not (root / f"imp-s{seed}" / "imp_summary.json").is_file():
            continue
        results.append({"seed": seed, **one_seed(seed, root, args.quick, args.variant)})
    if args.seed is None:
        import common
        title = TITLES[args.variant] + (" (QUICK smoke run)" if args.quick else "")
        text = report(results, args.quick, title)
        key = f"imp-{args.variant}{'-quick' if args.quick else ''}"
        png = HERE / f"{key}.png"
        plot(results, png, title.split(",")[0] + ": lottery tickets")
        out = HERE / "results_imp.md"
        if not out.is_file():
            out.write_text("# IMP lottery tickets on MNIST-1D (`python benchmarks/imp.py`)\n")
        common.write_section(key, text + f"\n![{title}]({png.name})\n", out)
        print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
