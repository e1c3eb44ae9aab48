"""Six measurements behind statements in RESULTS.md (issues 2 and 4), each re-runnable.

    python benchmarks/diagnostics.py mask-cost   # gradient-mask multiply after backward vs warm, per dtype
    python benchmarks/diagnostics.py round-to    # compact(round_to=1/8/16) on Chase ResNet-50; one conv
    python benchmarks/diagnostics.py per-conv    # each conv of a Chase-compacted ResNet-50: time vs FLOP ratio
    python benchmarks/diagnostics.py kernels     # top-k primitives on 235k entries: torch vs NumPy views
    python benchmarks/diagnostics.py update-time # each topology update of GraNet / SNFS / RigL on the MLP, in ms
    python benchmarks/diagnostics.py snfs-erk    # SNFS with distribution="erk" on MNIST-1D, 90/95/98 %, 3 seeds

``mask-cost`` (MLP 784-300-100-10, batch 256, 90 % random masks): the engine's
pre-hook multiplies the gradients by float masks; timed straight after
``backward()`` (gradients cold in cache, as in training) and again at once
(warm, as in the decomposed overhead timer), for float32 / float16 / bfloat16
/ uint8 / bool masks. ``round-to``: the CIFAR ResNet-50 with Chase masks from
``inference.py``'s mask source, compacted with exact widths and widths
rounded to 8 and 16, batch 64, one thread, interleaved; then one 3x3
convolution at 32x32 with 32-64 input channels. ``per-conv``: the same dense
and compact (exact widths) ResNet-50, every convolution timed alone on the
input it sees, with its FLOP ratio and each stage's share. ``kernels``: the
four primitives of ``core.kernels`` on 235,200 random floats (the MLP's first
layer), torch path against NumPy path. ``update-time``: the MLP at batch 256,
SGD, ``update_every=100``; the optimizer step at each update step minus the
median ordinary step, for the first six updates. ``snfs-erk``: the
``dst_mnist1d`` recipe with ``method: {name: snfs, density: d, distribution:
erk}`` (updates once per epoch, as SNFS does), one thread.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import mean_std, table  # noqa: E402


def _median_ms(f, reps: int) -> float:
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        f()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def _mask(grads: list[torch.Tensor], masks: list[torch.Tensor]) -> None:
    """One fused multiply as the engine's pre-hook does; per tensor where foreach refuses the dtype (bool)."""
    try:
        torch._foreach_mul_(grads, masks)
    except RuntimeError:
        for g, m in zip(grads, masks, strict=True):
            g.mul_(m)


def mask_cost(reps: int) -> str:
    from sparsetrain.train.models import create_model
    torch.manual_seed(0)
    model = create_model("mlp")
    x, y = torch.randn(256, 1, 28, 28), torch.randint(0, 10, (256,))
    params = [p for p in model.parameters() if p.dim() > 1]
    masks = [torch.rand(p.shape) < 0.1 for p in params]
    dtypes = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16,
              "uint8": torch.uint8, "bool": torch.bool}
    cold: dict[str, list[float]] = {k: [] for k in dtypes}
    warm: dict[str, list[float]] = {k: [] for k in dtypes}
    typed = {k: [m.to(d) for m in masks] for k, d in dtypes.items()}
    for _ in range(reps):
        for name, ms in typed.items():
            model.zero_grad()
            F.cross_entropy(model(x), y).backward()
            grads = [p.grad for p in params]
            for bucket in (cold, warm):  # first straight after backward, then again with the gradients in cache
                start = time.perf_counter()
                _mask(grads, ms)
                bucket[name].append(time.perf_counter() - start)
    rows = [[k, f"{statistics.median(cold[k]) * 1e6:.0f}", f"{statistics.median(warm[k]) * 1e6:.0f}"] for k in dtypes]
    return table(["mask dtype", "after backward (us)", "warm (us)"], rows)


def round_to(reps: int) -> str:
    from inference import chase_masks

    from sparsetrain.deploy.bench import time_variants
    from sparsetrain.deploy.compact import compact
    torch.set_num_threads(1)
    model = chase_masks("resnet50", 40)
    example = torch.randn(2, 3, 32, 32)
    models = {"dense": copy.deepcopy(model).eval()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for n in (1, 8, 16):
            models[f"round_to={n}"] = compact(model, example, round_to=n)[0].eval()
    times = time_variants(models, torch.randn(64, 3, 32, 32), reps=reps, warmup=2)
    base = statistics.median(times["dense"])
    rows = [[k, f"{statistics.median(v) * 1e3:.0f}", f"{base / statistics.median(v):.2f}x"] for k, v in times.items()]
    out = table(["ResNet-50, Chase S_c=0.5 (seed ranking)", "batch-64 ms", "speedup"], rows)
    conv_rows = []
    with torch.inference_mode():
        for cin in (32, 37, 40, 48, 64):
            conv = torch.nn.Conv2d(cin, 64, 3, padding=1, bias=False).eval()
            inp = torch.randn(64, cin, 32, 32)
            conv(inp)
            conv_rows.append([str(cin), f"{_median_ms(lambda c=conv, i=inp: c(i), reps):.1f}"])
    return out + "\n\n" + table(["3x3 conv 64 out, 32x32, batch 64: input channels", "ms"], conv_rows)


def per_conv(reps: int) -> str:
    from inference import chase_masks

    from sparsetrain.deploy.compact import compact
    torch.set_num_threads(1)
    dense = chase_masks("resnet50", 40)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        small = compact(dense, torch.randn(2, 3, 32, 32))[0].eval()
    x = torch.randn(64, 3, 32, 32)

    def conv_inputs(model: torch.nn.Module) -> dict[str, tuple[torch.nn.Conv2d, torch.Tensor]]:
        seen: dict = {}

        def keep(name: str):
            def hook(module, args) -> None:  # returns None: the forward goes on with its own input
                seen.setdefault(name, (module, args[0].clone()))
            return hook
        convs = [(n, m) for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)]
        hooks = [m.register_forward_pre_hook(keep(n)) for n, m in convs]
        with torch.inference_mode():
            model(x)
        for h in hooks:
            h.remove()
        return seen

    before, after = conv_inputs(dense), conv_inputs(small)
    rows, stage_ms = [], {}
    with torch.inference_mode():
        for name, (conv, inp) in before.items():
            other, other_inp = after[name]
            t_dense = _median_ms(lambda c=conv, i=inp: c(i), reps)
            t_small = _median_ms(lambda c=other, i=other_inp: c(i), reps)
            flops = [c.in_channels * c.out_channels for c in (conv, other)]
            stage_ms[name.split(".")[0]] = stage_ms.get(name.split(".")[0], 0.0) + t_dense
            widths = [f"{c.in_channels}->{c.out_channels}" for c in (conv, other)]
            rows.append([name, *widths, f"{t_dense:.1f}", f"{t_small:.1f}", f"{t_dense / t_small:.2f}x",
                         f"{flops[0] / flops[1]:.2f}x"])
    total = sum(stage_ms.values())
    shares = ", ".join(f"{k} {v / total * 100:.0f} %" for k, v in stage_ms.items())
    return (table(["conv", "dense", "compact", "dense ms", "compact ms", "time ratio", "FLOP ratio"], rows)
            + f"\n\nShare of the dense convolution time per stage: {shares}")


def kernel_times(reps: int) -> str:
    from sparsetrain.core import kernels
    torch.manual_seed(0)
    flat = torch.rand(235_200)
    mask = flat > 0.95
    calls = {"compare (>=)": lambda: kernels.greater_equal(flat, 0.5),
             "count (>)": lambda: kernels.count_greater(flat, 0.5),
             "band": lambda: kernels.between(flat, 0.9, 0.95),
             "nonzero": lambda: kernels.nonzero(mask)}
    rows = []
    for name, call in calls.items():
        per_path = []
        for use_numpy in (False, True):
            kernels.USE_NUMPY = use_numpy and kernels.np is not None
            per_path.append(_median_ms(call, reps) * 1e3)
        kernels.USE_NUMPY = kernels.np is not None
        rows.append([name, f"{per_path[0]:.0f}", f"{per_path[1]:.0f}"])
    return table(["primitive, 235,200 floats", "torch (us)", "NumPy view (us)"], rows)


def update_time(methods: list[str]) -> str:
    import sparsetrain
    from sparsetrain.train.models import create_model
    rows = []
    for method in methods:
        torch.manual_seed(0)
        model = create_model("mlp")
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=5e-4)
        x, y = torch.randn(256, 1, 28, 28), torch.randint(0, 10, (256,))
        sparsetrain.attach(model, opt, method, total_steps=1000, update_every=100)
        ordinary, updates = [], []
        for step in range(1, 601):
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            start = time.perf_counter()
            opt.step()
            (updates if step % 100 == 0 else ordinary).append(time.perf_counter() - start)
        base = statistics.median(ordinary)
        rows.append([method, " / ".join(f"{(u - base) * 1e3:.1f}" for u in updates)])
    return table(["method (MLP, update every 100 steps)", "update ms at steps 100 / 200 / ... / 600"], rows)


def snfs_erk(seeds: int, epochs: int | None) -> str:
    from sparsetrain.train.config import load_config
    from sparsetrain.train.loop import train
    rows = []
    for density in (0.1, 0.05, 0.02):
        accs = []
        for seed in range(seeds):
            cfg = load_config("dst_mnist1d")
            cfg.update(seed=seed, threads=1)
            if epochs:
                cfg["epochs"] = epochs
            cfg["run"] = {**cfg["run"], "plots": False}
            cfg["method"] = {"name": "snfs", "density": density, "distribution": "erk"}
            summary = train(cfg, Path("runs") / "diagnostics" / f"snfs-erk-{density}-s{seed}")
            accs.append(summary["final_test_acc"])
        rows.append([f"{(1 - density) * 100:.0f} %", mean_std(accs)])
    return table(["sparsity", "SNFS, ERK: test acc (mean ± std)"], rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=("mask-cost", "round-to", "per-conv", "kernels", "update-time", "snfs-erk"))
    parser.add_argument("--methods", default="granet,snfs,rigl", help="update-time: comma-separated methods")
    parser.add_argument("--reps", type=int, default=None, help="timed repetitions (default 400 / 7 / 5 / 500)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=None, help="snfs-erk: override the recipe's 30 epochs")
    args = parser.parse_args(argv)
    if args.what == "mask-cost":
        print(mask_cost(args.reps or 400))
    elif args.what == "round-to":
        print(round_to(args.reps or 7))
    elif args.what == "per-conv":
        print(per_conv(args.reps or 5))
    elif args.what == "kernels":
        print(kernel_times(args.reps or 500))
    elif args.what == "update-time":
        print(update_time(args.methods.split(",")))
    else:
        print(snfs_erk(args.seeds, args.epochs))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
