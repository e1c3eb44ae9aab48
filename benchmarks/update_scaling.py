"""How the time of one topology update grows with the number of weights (0.1M to 25M).

    python benchmarks/update_scaling.py             # 0.1M .. 25M weights (a few minutes on 2 CPU cores)
    python benchmarks/update_scaling.py --quick     # smoke run: two tiny sizes, one repetition
    python benchmarks/update_scaling.py --sizes 1e5,1e6 --methods rigl --device cuda

The models are MLPs of four square ``nn.Linear`` layers (width ``w``, ``4 w^2``
weights), so only the size changes. For each size and method, one topology
update is timed the way ``benchmarks/overhead.py`` (b) does it: the
``optimizer.step()`` at an update step minus an ordinary step (gradient
snapshot, drop, grow, re-masking of weights and optimizer state), density 0.1,
uniform layer densities, ``update_every`` 100; ``rigl-torch`` is its
``RigLScheduler._rigl_step()`` on the same model (density 0.1, linear layers
sparse). Methods: ``rigl`` (drop by |w|, grow by |g|) and ``set`` (drop by
|w|, random growth); any method whose update changes the mask every time it
runs can be named with ``--methods`` (not ``gmp``: repeated at the same step it
has nothing left to prune, so its timed update would be empty).

Each size prints the median with min and max over its repetitions; the fit is
least squares of log(time) against log(weights) (a slope of 1 is linear), over
all sizes and over sizes of at least 1M weights (below that, the fixed cost per
layer and per kernel call dominates).
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import overhead  # noqa: E402
from common import HERE, Tee, fmt_stats, machine_info, pyplot, table, write_section  # noqa: E402

FULL = {"sizes": [1e5, 3e5, 1e6, 3e6, 1e7, 2.5e7], "methods": "rigl,set"}
QUICK = {"sizes": [1e4, 4e4], "methods": "rigl,set"}
LAYERS = 4


def width_for(weights: float) -> int:
    """The width ``w`` of the square layers whose ``4 w^2`` weights come closest to ``weights``.

    Example:
        >>> width_for(1e6), 4 * width_for(1e6) ** 2
        (500, 1000000)
    """
    return max(2, round(math.sqrt(weights / LAYERS)))


def reps_for(weights: float, quick: bool) -> int:
    """Fewer repetitions for big models (one update at 25M takes a second or more on CPU)."""
    if quick:
        return 1
    return 9 if weights <= 1e6 else 5 if weights <= 1e7 else 3


def builder(width: int):
    def build():
        torch.manual_seed(overhead.SEED)
        layers: list[nn.Module] = []
        for _ in range(LAYERS):
            layers += [nn.Linear(width, width), nn.ReLU()]
        model = nn.Sequential(*layers[:-1]).to(overhead.DEVICE)
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=5e-4)
        return model, opt
    return build


def slope(sizes: list[float], times: list[float]) -> float | None:
    """Least-squares slope of log(time) against log(size); None with fewer than two points.

    Example:
        >>> round(slope([1, 10, 100], [2, 20, 200]), 6)
        1.0
    """
    pts = [(math.log(s), math.log(t)) for s, t in zip(sizes, times, strict=True) if t > 0]
    if len(pts) < 2:
        return None
    mx = statistics.mean(p[0] for p in pts)
    my = statistics.mean(p[1] for p in pts)
    var = sum((x - mx) ** 2 for x, _ in pts)
    return sum((x - mx) * (y - my) for x, y in pts) / var if var else None


def measure(sizes: list[float], methods: list[str], rigl_scheduler, quick: bool, their_max: float) -> dict:
    """{series: {"weights": [...], "times": [[seconds per repetition], ...]}}."""
    out: dict[str, dict] = {}
    for size in sizes:
        width = width_for(size)
        build = builder(width)
        x = torch.randn(8, width, device=overhead.DEVICE)
        y = torch.randint(0, width, (8,), device=overhead.DEVICE)
        reps = reps_for(size, quick)
        for method in methods:
            theirs = rigl_scheduler if method == "rigl" and LAYERS * width ** 2 <= their_max else None
            r = overhead.update_cost(f"mlp{width}", reps, theirs, build=build, inputs=(x, y), method=method,
                                     their_reps=max(1, min(reps, 3)))
            series = [(f"ours: {method}", r["ours"])] + ([("rigl-torch", r["theirs"])] if r["theirs"] else [])
            for name, times in series:
                s = out.setdefault(name, {"weights": [], "times": []})
                s["weights"].append(r["weights"])
                s["times"].append(times)
            print(f"  {r['weights'] / 1e6:.2f}M weights (width {width}), {method}: ours {fmt_stats(r['ours'], 1e3, 2)} "
                  f"ms" + (f", rigl-torch {fmt_stats(r['theirs'], 1e3, 1)} ms" if r["theirs"] else ""), flush=True)
    return out


def report(res: dict) -> str:
    weights = sorted({w for s in res.values() for w in s["weights"]})
    rows = []
    for w in weights:
        line = [f"{w / 1e6:.2f}M", str(width_for(w))]
        for s in res.values():
            line.append(fmt_stats(s["times"][s["weights"].index(w)], 1e3, 2) if w in s["weights"] else "-")
        rows.append(line)
    fits = []
    for name, s in res.items():
        med = [statistics.median(t) for t in s["times"]]
        big = [(w, t) for w, t in zip(s["weights"], med, strict=True) if w >= 1e6]
        b = slope([w for w, _ in big], [t for _, t in big]) if len(big) >= 2 else None
        a = slope(s["weights"], med)
        fits.append([name, "n/a" if a is None else f"{a:.2f}", "n/a" if b is None else f"{b:.2f}",
                     f"{1e9 * med[-1] / s['weights'][-1]:.1f}"])
    return "\n".join([
        table(["weights", "width"] + [f"{n}: update ms, median (min-max)" for n in res], rows), "",
        table(["series", "log-log slope, all sizes", "slope, >= 1M weights", "ns per weight at the largest size"],
              fits)])


def plot(res: dict, path: Path) -> Path | None:
    plt = pyplot()
    if plt is None:
        return None
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for name, s in res.items():
        med = [statistics.median(t) * 1e3 for t in s["times"]]
        lo = [med[i] - min(t) * 1e3 for i, t in enumerate(s["times"])]
        hi = [max(t) * 1e3 - med[i] for i, t in enumerate(s["times"])]
        k = slope(s["weights"], med)
        ax.errorbar(s["weights"], med, yerr=[lo, hi], marker="o", capsize=3,
                    label=f"{name} (slope {k:.2f})" if k is not None else name)
    ws = sorted({w for s in res.values() for w in s["weights"]})
    ref = [min(statistics.median(t) for s in res.values() for t in s["times"]) * 1e3 * w / ws[0] for w in ws]
    ax.plot(ws, ref, "k:", label="linear (slope 1)")
    ax.set(xscale="log", yscale="log", xlabel="weights", ylabel="one topology update (ms)",
           title="Update time vs model size (4-layer MLP, density 0.1)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="two tiny sizes, one repetition")
    parser.add_argument("--sizes", default=None, help="comma-separated weight counts (default 1e5..2.5e7)")
    parser.add_argument("--methods", default=None, help="comma-separated methods (default rigl,set)")
    parser.add_argument("--their-max", type=float, default=2.5e7, help="largest size rigl-torch runs at")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--results", default=None, help="Markdown file (default RESULTS.md; --quick: none)")
    parser.add_argument("--plot", default=None, help="PNG (default benchmarks/update_scaling.png; --quick: none)")
    args = parser.parse_args(argv)
    cfg = QUICK if args.quick else FULL
    sizes = [float(s) for s in args.sizes.split(",")] if args.sizes else cfg["sizes"]
    methods = [m.strip() for m in (args.methods or cfg["methods"]).split(",") if m.strip()]
    overhead.DEVICE = torch.device(args.device)
    torch.set_num_threads(args.threads)
    rigl_scheduler, note = overhead.import_rigl_torch()
    start = time.perf_counter()
    with Tee() as tee:
        print("update time vs number of weights" + (" (--quick)" if args.quick else ""))
        print()
        for line in machine_info(args.device) + [f"rigl-torch: {note}", f"methods {', '.join(methods)}; "
                                                 f"repetitions 9 (<= 1M), 5 (<= 10M), 3 (larger; rigl-torch <= 3)"]:
            print(f"- {line}")
        res = measure(sizes, methods, rigl_scheduler, args.quick, args.their_max)
        print()
        print(report(res))
        print()
        print(f"total time {time.perf_counter() - start:.0f} s")
    png = Path(args.plot) if args.plot else (None if args.quick else HERE / "update_scaling.png")
    written = plot(res, png) if png else None
    results = args.results or (None if args.quick else str(HERE / "RESULTS.md"))
    if results:
        command = "python benchmarks/update_scaling.py" + "".join(
            f" {a}" for a in (argv if argv is not None else sys.argv[1:]))
        picture = f"\n![update time vs weights]({png.name})\n" if written else ""
        write_section("update-scaling", "## Topology-update time vs number of weights (issue 7)\n\n"
                      f"```\n{command}\n```\n\n" + "\n".join(tee.text().splitlines()[2:]) + picture, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
