"""Where the time of the engine goes: per-step hooks and the phases of one RigL update.

    python benchmarks/update_breakdown.py [--reps 30] [--models mlp resnet20 resnet18]

A diagnostic for benchmarks/overhead.py (it reaches into engine internals, so
it may need a touch when the engine changes). For each model: the optimizer
step with and without the sparsifier's hooks, the pre- and post-hook alone (as
torch calls them), the per-step cost of SNFS's gradient EMA observer, and one
RigL update (density 0.1, ERK, drop fraction 0.3, dense gradient) split into
gradient snapshot, drop, grow, prune-and-regrow bookkeeping, the engine's
re-masking (``_apply_topology``) and the history bookkeeping (``fired``,
``density()``). Also the share of the update spent in ``core.topk.topk_mask``.
Medians over ``--reps`` repetitions, in milliseconds.
"""

from __future__ import annotations

import argparse
import importlib
import statistics
import sys
import time

import torch
import torch.nn.functional as F

import sparsetrain
from sparsetrain.methods.common import death, grad_ema
from sparsetrain.schedules import constant
from sparsetrain.train.models import create_model

# the modules themselves (``sparsetrain.ops`` re-exports functions under the same names)
prune_mod = importlib.import_module("sparsetrain.ops.prune")
regrow_mod = importlib.import_module("sparsetrain.ops.regrow")
topk_mod = importlib.import_module("sparsetrain.core.topk")

INPUTS = {"mlp": (256, (1, 28, 28)), "resnet20": (8, (3, 32, 32)), "resnet18": (8, (3, 32, 32))}


def median_ms(fn, reps: int, setup=None) -> float:
    out = []
    for _ in range(reps):
        if setup is not None:
            setup()
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return statistics.median(out) * 1e3


def breakdown(model_name: str, reps: int) -> list[tuple[str, float]]:
    torch.manual_seed(0)
    model = create_model(model_name)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=5e-4)
    bs, shape = INPUTS[model_name]
    F.cross_entropy(model(torch.randn(bs, *shape)), torch.randint(0, 10, (bs,))).backward()
    params = list(model.parameters())
    dense_grads = [p.grad.clone() for p in params]
    pgrads = [p.grad for p in params]

    def restore():
        torch._foreach_copy_(pgrads, dense_grads)

    opt.step()  # warm-up: the first step allocates the momentum buffers
    rows = [("optimizer.step(), no sparsifier", median_ms(opt.step, reps, restore))]
    sp = sparsetrain.attach(model, opt, "rigl", density=0.1, total_steps=10**9, update_every=10**8)
    ctx = sp.ctx
    rows.append(("optimizer.step() with hooks, no update due", median_ms(opt.step, reps, restore)))
    rows.append(("  pre-hook alone", median_ms(lambda: sp._pre_step(opt, (opt,), {}), reps, restore)))
    rows.append(("  post-hook alone", median_ms(lambda: sp._post_step(opt, (opt,), {}), reps, restore)))
    grads = {n: p.grad for n, p in ctx.params.items()}
    observe = grad_ema()
    observe(ctx, grads)
    rows.append(("  snfs gradient-EMA observer (per step)", median_ms(lambda: observe(ctx, grads), reps)))

    # one RigL update, phase by phase, always from the same topology
    masks0 = {n: m.clone() for n, m in ctx.masks.items()}
    dropper = death("magnitude", constant(0.3), rounding="floor")
    grower = regrow_mod.regrow("gradient")
    op = sp.method.updates[0].op

    def reset():
        restore()
        ctx.masks = {n: m.clone() for n, m in masks0.items()}
        ctx.grads = {n: p.grad.detach().clone() for n, p in ctx.params.items()}

    removed = {}

    def drop():
        removed.update(dropper(ctx))

    def drop_then_grow_setup():
        reset()
        drop()

    rows.append(("rigl update: gradient snapshot (clone)",
                 median_ms(lambda: {n: g.detach().clone() for n, g in grads.items()}, reps, restore)))
    rows.append(("rigl update: drop (per layer bottom-k |w|)", median_ms(drop, reps, reset)))
    rows.append(("rigl update: grow (per layer top-k |g|)", median_ms(lambda: grower(ctx, removed), reps,
                                                                     drop_then_grow_setup)))
    rows.append(("rigl update: whole op (drop + grow + bookkeeping)", median_ms(lambda: op(ctx), reps, reset)))
    rows.append(("engine: _apply_topology (masks -> float, re-mask w + state)",
                 median_ms(sp._apply_topology, reps, reset)))

    def history():
        for n, m in ctx.masks.items():
            sp.fired[n] |= m
        sp.density()
    rows.append(("engine: fired |= mask, density()", median_ms(history, reps, reset)))

    spent, calls = [], [0]
    original = regrow_mod.topk_mask

    def timed_topk(*args, **kwargs):
        t0 = time.perf_counter()
        out = original(*args, **kwargs)
        spent.append(time.perf_counter() - t0)
        calls[0] += 1
        return out
    regrow_mod.topk_mask = prune_mod.topk_mask = timed_topk
    topk_mod.topk_mask = timed_topk  # bottomk_mask calls it through the module
    try:
        per_rep = []
        for _ in range(reps):
            reset()
            spent.clear()
            op(ctx)
            per_rep.append(sum(spent))
    finally:
        regrow_mod.topk_mask = prune_mod.topk_mask = topk_mod.topk_mask = original
    rows.append((f"  of which core.topk.topk_mask ({calls[0] // reps} calls)", statistics.median(per_rep) * 1e3))

    def full_update():
        ctx.step = 10**8 - 1
        opt.step()
    rows.append(("optimizer.step() at an update step (all of the above)", median_ms(full_update, reps, reset)))
    sp.detach()
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=30)
    parser.add_argument("--models", nargs="+", default=["mlp", "resnet20", "resnet18"])
    args = parser.parse_args(argv)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}; medians of {args.reps} repetitions, ms")
    for model_name in args.models:
        reps = args.reps if model_name != "resnet18" else max(3, args.reps // 6)
        rows = breakdown(model_name, reps)
        print()
        print(f"| {model_name} | ms |")
        print("|---|---|")
        for name, ms in rows:
            print(f"| {name} | {ms:.3f} |")
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
