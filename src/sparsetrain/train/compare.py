"""``sparsetrain compare``: several configurations, same data and budget, one table and one plot."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from sparsetrain.train.checkpoint import atomic_write_text
from sparsetrain.train.config import load_config

#: method arguments that mean the same in every method, carried over when --methods switches method
SHARED_METHOD_ARGS = ("density", "update_every", "distribution")


def method_configs(methods: list[str], base: str | None, overrides: list[str]) -> list[tuple[str, dict]]:
    """One config per method on the base setup, carrying the shared method arguments over."""
    base_cfg = load_config(base, overrides)
    out = []
    for name in methods:
        if name == "dense":
            out.append(("dense", load_config(base, [*overrides, "--method.name", "dense"])))
            continue
        from sparsetrain.methods import method_signature
        params = method_signature(name).parameters
        carry = [x for k in SHARED_METHOD_ARGS if k in params and k in base_cfg["method"]
                 for x in (f"--method.{k}", str(base_cfg["method"][k]))]
        out.append((name, load_config(base, [*overrides, "--method.name", name, *carry])))
    return out


def _table(rows: list[dict]) -> str:
    head = "| config | method | density | test acc (mean ± std) | best acc | FLOPs (sparse/dense) | time (s) | seeds |"
    lines = [head, "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['label']} | {r['method']} | {r['density']:.4f} | {r['acc_mean'] * 100:.2f} ± "
                     f"{r['acc_std'] * 100:.2f} | {r['best_mean'] * 100:.2f} | {r['flops_ratio']:.3f} | "
                     f"{r['time_mean']:.1f} | {r['seeds']} |")
    return "\n".join(lines)


def summarise(label: str, summaries: list[dict]) -> dict:
    """Mean / std over seeds of one configuration's summaries."""
    accs = [s["final_test_acc"] for s in summaries]
    return {"label": label, "method": summaries[0]["method"],
            "density": statistics.mean(s["density"] for s in summaries),
            "acc_mean": statistics.mean(accs), "acc_std": statistics.stdev(accs) if len(accs) > 1 else 0.0,
            "best_mean": statistics.mean(s["best"]["test_acc"] for s in summaries),
            "flops_ratio": statistics.mean(s["flops"]["ratio"] for s in summaries),
            "time_mean": statistics.mean(s["wall_time_s"] for s in summaries), "seeds": len(summaries),
            "accs": accs}


def compare(recipes: list[str] | None = None, methods: list[str] | None = None, base: str | None = None,
            seeds: int = 3, overrides: list[str] | None = None, out: str | None = None) -> list[dict]:
    """Run every configuration for ``seeds`` seeds; print and write the table (compare.md/json) and plot."""
    from sparsetrain.train.loop import train
    overrides = list(overrides or [])
    configs = method_configs(methods, base, overrides) if methods else [
        (Path(r).stem, load_config(r, overrides)) for r in recipes or []]
    out_dir = Path(out or f"runs/compare-{'-'.join(label for label, _ in configs)}"[:120])
    rows = []
    for label, cfg in configs:
        summaries = []
        for seed in range(seeds):
            cfg = {**cfg, "seed": seed, "run": {**cfg["run"], "plots": False}}
            print(f"== {label} seed {seed}", flush=True)
            summaries.append(train(cfg, out_dir / f"{label}-s{seed}"))
        rows.append(summarise(label, summaries))
    table = _table(rows)
    print("\n" + table)
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / "compare.md", table + "\n")
    atomic_write_text(out_dir / "compare.json", json.dumps(rows, indent=2))
    plot_compare(rows, out_dir / "compare.png")
    print(f"\nwritten: {out_dir / 'compare.md'}, compare.json, compare.png")
    return rows


def plot_compare(rows: list[dict], path: Path) -> None:
    """Accuracy (mean ± std over seeds) per configuration, labelled with its density."""
    from sparsetrain.train.plots import _pyplot
    plt = _pyplot()
    if plt is None:
        return
    fig, ax = plt.subplots(figsize=(max(5, 1.1 * len(rows)), 4))
    xs = range(len(rows))
    ax.bar(xs, [100 * r["acc_mean"] for r in rows], yerr=[100 * r["acc_std"] for r in rows], capsize=4)
    ax.set_xticks(list(xs), [f"{r['label']}\nd={r['density']:.2f}" for r in rows], fontsize=8)
    lo = min(100 * (r["acc_mean"] - r["acc_std"]) for r in rows)
    ax.set(ylabel="test accuracy (%)", title="Accuracy at equal budget", ylim=(max(0, lo - 5), 100))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
