"""``sparsetrain compare``: several configurations, same data and budget, one table and one plot."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import yaml

from sparsetrain.core.files import atomic_write_text
from sparsetrain.errors import SparsetrainError
from sparsetrain.train.config import load_config
from sparsetrain.train.folders import replace_folder

#: method arguments that mean the same in every method, carried over when --methods switches method
SHARED_METHOD_ARGS = ("density", "update_every", "distribution")


def method_configs(methods: list[str], base: str | None, overrides: list[str]) -> list[tuple[str, dict]]:
    """One config per method on the base setup.

    The shared method arguments of the base (density, update_every,
    distribution) carry over to every method that takes them; a ``--method.X``
    override goes to the methods that accept X (dense takes none), and one that
    no method accepts is an error.
    """
    from sparsetrain.errors import SparsetrainError
    from sparsetrain.methods import method_signature
    from sparsetrain.train.config import deep_merge, parse_overrides
    given = parse_overrides(overrides)
    method_over = given.pop("method", {})
    base_cfg = load_config(base, given)
    shared = {k: base_cfg["method"][k] for k in SHARED_METHOD_ARGS if k in base_cfg["method"]}
    shared.update(method_over)
    accepted: set[str] = set()
    out = []
    for name in methods:
        params = {} if name == "dense" else method_signature(name).parameters
        args = {k: v for k, v in shared.items() if k in params}
        accepted |= {k for k in method_over if k in params}
        out.append((name, load_config(base, deep_merge(given, {"method": {"name": name, **args}}))))
    unused = sorted(set(method_over) - accepted)
    if unused:
        raise SparsetrainError(f"no method in {methods} takes method.{unused[0]}.")
    return out


def _table(rows: list[dict]) -> str:
    lm = all("loss_mean" in r for r in rows)  # language models: test loss and perplexity too
    head = "| config | method | density | test acc (mean ± std) | best acc | FLOPs (sparse/dense) | time (s) | seeds |"
    lines = [head, "|---|---|---|---|---|---|---|---|"]
    if lm:
        head = head.replace("| best acc |", "| test loss (mean ± std) | test ppl | best acc |")
        lines = [head, "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        loss = f"{r['loss_mean']:.4f} ± {r['loss_std']:.4f} | {r['ppl_mean']:.3f} | " if lm else ""
        lines.append(f"| {r['label']} | {r['method']} | {r['density']:.4f} | {r['acc_mean'] * 100:.2f} ± "
                     f"{r['acc_std'] * 100:.2f} | {loss}{r['best_mean'] * 100:.2f} | {r['flops_ratio']:.3f} | "
                     f"{r['time_mean']:.1f} | {r['seeds']} |")
    return "\n".join(lines)


def summarise(label: str, summaries: list[dict]) -> dict:
    """Mean / std over seeds of one configuration's summaries."""
    accs = [s["final_test_acc"] for s in summaries]
    lm = {}
    if all(s.get("final_test_ppl") is not None for s in summaries):  # a language model
        losses = [s["final_test_loss"] for s in summaries]
        lm = {"loss_mean": statistics.mean(losses), "loss_std": statistics.stdev(losses) if len(losses) > 1 else 0.0,
              "ppl_mean": statistics.mean(s["final_test_ppl"] for s in summaries), "losses": losses}
    return {**lm, "label": label, "method": summaries[0]["method"],
            "density": statistics.mean(s["density"] for s in summaries),
            "acc_mean": statistics.mean(accs), "acc_std": statistics.stdev(accs) if len(accs) > 1 else 0.0,
            "best_mean": statistics.mean(s["best"]["test_acc"] for s in summaries),
            "flops_ratio": statistics.mean(s["flops"]["ratio"] for s in summaries),
            "time_mean": statistics.mean(s["wall_time_s"] for s in summaries), "seeds": len(summaries),
            "accs": accs}


def density_sweep(configs: list[tuple[str, dict]], densities: list[float]) -> list[tuple[str, dict]]:
    """Every configuration at every density (dense once); labels ``method@density``."""
    out = []
    for label, cfg in configs:
        if cfg["method"]["name"] == "dense":
            out.append((label, cfg))
            continue
        for d in densities:
            out.append((f"{label}@{d:g}", {**cfg, "method": {**cfg["method"], "density": d}}))
    return out


def compare(recipes: list[str] | None = None, methods: list[str] | None = None, base: str | None = None,
            seeds: int = 3, overrides: list[str] | None = None, out: str | None = None,
            densities: list[float] | None = None, overwrite: bool = False) -> list[dict]:
    """Run every configuration for ``seeds`` seeds; print and write the table (compare.md/json) and plot.

    With ``densities`` every sparse configuration runs at each density and the
    plot shows accuracy against density, one line per configuration. An
    existing output folder is refused unless ``overwrite``; then an earlier
    comparison is moved aside (``NAME.old-<time>``), anything else refused.
    """
    from sparsetrain.train.loop import train
    overrides = list(overrides or [])
    configs = method_configs(methods, base, overrides) if methods else [
        (Path(r).stem, load_config(r, overrides)) for r in recipes or []]
    if densities:
        configs = density_sweep(configs, densities)
    out_dir = Path(out or f"runs/compare-{'-'.join(label for label, _ in configs)}"[:120])
    _prepare_out(out_dir, overwrite)
    atomic_write_text(out_dir / "compare.yaml", yaml.safe_dump(  # the marker that makes it a compare folder
        {"configurations": [label for label, _ in configs], "seeds": seeds, "overrides": overrides}))
    rows = []
    for label, cfg in configs:
        base_label = label.split("@")[0]
        summaries = []
        for seed in range(seeds):
            cfg = {**cfg, "seed": seed, "run": {**cfg["run"], "plots": False}}
            print(f"== {label} seed {seed}", flush=True)
            summaries.append(train(cfg, out_dir / f"{label}-s{seed}"))
        rows.append({**summarise(label, summaries), "config": base_label})
    table = _table(rows)
    print("\n" + table)
    atomic_write_text(out_dir / "compare.md", table + "\n")
    atomic_write_text(out_dir / "compare.json", json.dumps(rows, indent=2))
    plot_compare(rows, out_dir / "compare.png")
    print(f"\nwritten: {out_dir / 'compare.md'}, compare.json, compare.png")
    return rows


def _prepare_out(out_dir: Path, overwrite: bool) -> None:
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        if not overwrite:
            raise SparsetrainError(f"{out_dir} already exists. Pass --overwrite to start again (an earlier comparison "
                                   "is kept as NAME.old-<time>) or choose another --out.")
        replace_folder(out_dir, what="compare folder")


def plot_compare(rows: list[dict], path: Path) -> None:
    """Accuracy (mean ± std over seeds): against density when configurations were run at
    several densities, else one bar per configuration labelled with its density."""
    from sparsetrain.core.figures import pyplot, save_figure
    plt = pyplot()
    if plt is None:
        return
    groups: dict[str, list[dict]] = {}
    for r in rows:
        groups.setdefault(r.get("config", r["label"]), []).append(r)
    if any(len(g) > 1 for g in groups.values()):
        fig, ax = plt.subplots(figsize=(6, 4))
        for name, group in groups.items():
            group = sorted(group, key=lambda r: r["density"])
            xs = [100 * (1 - r["density"]) for r in group]
            ys = [100 * r["acc_mean"] for r in group]
            if len(group) == 1:
                ax.axhline(ys[0], linestyle="--", color="gray", label=name)
            else:
                ax.errorbar(xs, ys, yerr=[100 * r["acc_std"] for r in group], marker="o", capsize=3, label=name)
        ax.set(xlabel="sparsity (%)", ylabel="test accuracy (%)", title="Accuracy vs sparsity at equal budget")
        ax.legend(fontsize=8)
        save_figure(fig, path)
        return
    fig, ax = plt.subplots(figsize=(max(5, 1.1 * len(rows)), 4))
    xs = range(len(rows))
    ax.bar(xs, [100 * r["acc_mean"] for r in rows], yerr=[100 * r["acc_std"] for r in rows], capsize=4)
    ax.set_xticks(list(xs), [f"{r['label']}\nd={r['density']:.2f}" for r in rows], fontsize=8)
    lo = min(100 * (r["acc_mean"] - r["acc_std"]) for r in rows)
    ax.set(ylabel="test accuracy (%)", title="Accuracy at equal budget", ylim=(max(0, lo - 5), 100))
    save_figure(fig, path)
