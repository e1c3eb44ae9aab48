"""Shrink while training (issue 14): end-to-end CPU training time of dense vs Chase (masked) vs
Chase + shrink, where the time goes per layer, and accuracy at equal epochs.

    python benchmarks/shrink.py                     # timing (VGG-19, ResNet-50) + accuracy, on a QUIET machine
    python benchmarks/shrink.py --skip-accuracy     # timing only
    python benchmarks/shrink.py --skip-timing       # accuracy only (~10 min on one thread)
    python benchmarks/shrink.py --tiny              # smoke run: tiny sizes, writes nothing

Timing. CIFAR-shaped models (3x32x32 inputs, 100 classes: ``vgg19`` and ``resnet50`` of the
trainer) train ``--steps`` SGD steps (momentum 0.9, weight decay 5e-4) on synthetic batches of
``--batch``, three ways: dense; Chase at density 0.1 and channel sparsity 0.5 with the channels
masked; the same Chase with ``shrink=True``. Chase's arguments are the bundled recipes'
(``chase_cifar100_vgg19`` / ``chase_cifar100_resnet50``: ERK, cubic channel schedule to 130/160 of
the run, UMM scores, min_ratio, ignore) with its channel events scaled to this run: ``channel_every``
and ``channel_offset`` are multiplied by steps / the recipe's 72,000 steps (160 epochs x 450), so as
large a share of the run is trained at the narrowed widths as in the seed. Parameter updates (MEST /
DST) keep the seed's interval, ``--update-every`` 1000 steps, unscaled: the seed runs one every 1000
steps (0.1 % of its steps), so their cost per step is negligible there, and scaling the interval
down would put a global top-k over all weights every few steps, an overhead the seed never pays.
The channel events (and the shrinks after them) are as many as in the seed but in far fewer steps, so
their share of the time is overstated: the table shows the seconds of that one-off work (timed inside
the engine), the end-to-end ratio without it (the seed-length estimate), and the median time of the
other steps in the last quarter of the run (where the shrunk run has its final widths). A run's time
is measured from ``attach`` (the traces included) to the end of its last step; each repetition runs
the set-ups in a shuffled order, and the table gives medians over ``--reps`` repetitions.

Where the time goes: every convolution / linear layer alone (forward + backward of its input's
shape, median of ``--layer-reps``) at the full widths and at the widths the shrunk run ended with.

Accuracy: the trainer (``sparsetrain.train.loop.train``) on CIFAR ResNet-20 / scikit-learn digits
and on the 1D CNN / MNIST-1D (recipe ``chase_mnist1d`` at S_c = 0.5; the ResNet-20 configuration of
``benchmarks/chase_residual.py``), ``--seeds`` seeds, masked Chase vs Chase + shrink at equal
epochs. A shrunk run computes what the masked run does (only float sums in another order), so the
accuracies should agree to noise. Writes section ``shrink-latest`` of ``benchmarks/RESULTS.md``
(not with ``--tiny``).

Timings taken on a busy machine are not results: run it alone.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import random
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import chase_accuracy  # noqa: E402  (train-or-reuse)
import chase_residual  # noqa: E402  (the ResNet-20 / digits configuration, Chase's schedule scaling)
import common  # noqa: E402

SETUPS = ("dense", "chase", "chase + shrink")
#: ``--with-prune``: fasterai-style filter pruning (AGP to the channel sparsity, on Chase's channel cadence) + shrink
PRUNE = "prune filter + shrink"
#: ``--with-layer-scores``: Chase with our layer-relative channel scores (``score_norm="layer"``) + shrink
LAYER_SCORES = "chase layer scores + shrink"
RECIPES = {"vgg19": "chase_cifar100_vgg19", "resnet50": "chase_cifar100_resnet50"}
#: steps of the seed's CIFAR-100 runs (160 epochs x 450 batches of 100), to which the recipes' intervals belong
SEED_STEPS = 72_000
FULL = {"steps": 60, "batch": 32, "reps": 3, "layer_reps": 5, "seeds": 3, "epochs": 20}
TINY = {"steps": 6, "batch": 2, "reps": 1, "layer_reps": 1, "seeds": 1, "epochs": 1}


def chase_kwargs(model: str, steps: int, update_every: int) -> dict:
    """The recipe's Chase arguments with its channel events scaled to a run of ``steps``.

    Example:
        >>> kw = chase_kwargs("vgg19", 720, 1000)
        >>> kw["channel_every"], kw["channel_offset"], kw["update_every"], kw["end"]
        (80, 5, 1000, 0.8125)
    """
    from sparsetrain.train.config import load_config
    from sparsetrain.train.loop import method_kwargs
    cfg = load_config(RECIPES[model])
    kwargs = method_kwargs(cfg, 450)
    scale = steps / SEED_STEPS
    kwargs.update(channel_every=max(1, round(kwargs["channel_every"] * scale)),
                  channel_offset=round(kwargs["channel_offset"] * scale), update_every=update_every)
    return kwargs


def method_args(setup: str, kwargs: dict) -> tuple[str, dict]:
    """The method and its arguments of a set-up: Chase, Chase with layer-relative channel scores
    (``--with-layer-scores``), or filter pruning to Chase's channel sparsity on its channel cadence and
    window (``--with-prune``).

    Example:
        >>> method_args(PRUNE, {"channel_sparsity": 0.5, "channel_every": 80, "end": 0.8})
        ('prune', {'sparsity': 0.5, 'granularity': 'filter', 'schedule': 'agp', 'end': 0.8, 'update_every': 80})
    """
    if setup == LAYER_SCORES:
        return "chase", {**kwargs, "score_norm": "layer"}
    if setup != PRUNE:
        return "chase", kwargs
    return "prune", {"sparsity": kwargs["channel_sparsity"], "granularity": "filter", "schedule": "agp",
                     "end": kwargs["end"], "update_every": kwargs["channel_every"]}


def build(model: str) -> nn.Module:
    from sparsetrain.train.models import create_model
    torch.manual_seed(0)
    return create_model(model, num_classes=100, in_channels=3)


def timed(fn, spent: list[float]):
    """``fn`` that adds the seconds of each call to ``spent[0]``.

    Example:
        >>> spent = [0.0]; timed(abs, spent)(-2), spent[0] >= 0
        (2, True)
    """
    def wrapper(*args, **kwargs):
        begin = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            spent[0] += time.perf_counter() - begin
    return wrapper


def train_run(model: str, setup: str, batches: list, kwargs: dict, steps: int) -> dict:
    """One timed run: ``seconds`` (attach to the last step), ``step`` times, ``event`` flags (a topology
    update or shrink ran in that step), ``work`` (seconds of the sparsifier's one-off work: the trace at
    attach, the topology updates and channel events, the shrinks), the trained ``net`` and the
    sparsifier's ``history``."""
    import sparsetrain
    net = build(model)
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    start = time.perf_counter()
    sp, work = None, [0.0]
    if setup != "dense":
        method, margs = method_args(setup, kwargs)
        sp = sparsetrain.attach(net, opt, method, total_steps=steps, example_input=batches[0][0][:2],
                                shrink=setup.endswith("shrink"), **margs)
        work[0] = time.perf_counter() - start
        # the engine calls these through self: the instance attributes catch every event
        sp._run, sp._shrink = timed(sp._run, work), timed(sp._shrink, work)
    times, events = [], []
    for t in range(steps):
        x, y = batches[t % len(batches)]
        seen, begin = len(sp.history) if sp is not None else 0, time.perf_counter()
        opt.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
        times.append(time.perf_counter() - begin)
        events.append(sp is not None and len(sp.history) > seen)
    return {"seconds": time.perf_counter() - start, "step": times, "event": events, "work": work[0], "net": net,
            "history": sp.history if sp is not None else []}


def late_step(runs: list[dict]) -> float:
    """Median time of the steps in the last quarter of the runs that ran no topology update or shrink.

    Example:
        >>> late_step([{"step": [9.0, 9.0, 9.0, 1.0, 3.0, 2.0, 5.0, 2.0], "event": [False] * 6 + [True, False]}])
        2.0
    """
    late = [list(zip(r["step"], r["event"], strict=True))[3 * len(r["step"]) // 4:] for r in runs]
    plain = [t for steps in late for t, event in steps if not event]
    return statistics.median(plain or [t for steps in late for t, _ in steps])


def at_widths(layer: nn.Module, out_in: list[int]) -> nn.Module:
    """A fresh copy of a convolution / linear layer with ``[out, in]`` channels (features).

    Example:
        >>> at_widths(nn.Conv2d(8, 16, 3, padding=1, bias=False), [4, 2])
        Conv2d(2, 4, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1), bias=False)
    """
    out, inp = out_in
    if isinstance(layer, nn.Linear):
        return nn.Linear(inp, out, bias=layer.bias is not None)
    return nn.Conv2d(inp, out, layer.kernel_size, layer.stride, layer.padding, layer.dilation, layer.groups,
                     bias=layer.bias is not None)


def layer_times(model: nn.Module, x: torch.Tensor, reps: int,
                widths: dict[str, list[int]] | None = None) -> dict[str, float]:
    """Forward + backward seconds of every convolution / linear layer alone, on its input's shape (median);
    with ``widths`` (``{layer: [out, in]}``, a shrink event's), each layer at those widths instead."""
    shapes: dict[str, tuple] = {}
    layers = {n: m for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    def remember(name):
        def hook(module, args):
            shapes.setdefault(name, tuple(args[0].shape))
        return hook
    handles = [m.register_forward_pre_hook(remember(n)) for n, m in layers.items()]
    with torch.no_grad():
        model.eval()(x)
    for h in handles:
        h.remove()
    out = {}
    for name, layer in layers.items():
        shape = shapes[name]
        if widths is not None and name in widths:
            layer, shape = at_widths(layer, widths[name]), (shape[0], widths[name][1], *shape[2:])
        layer = copy.deepcopy(layer).train()
        inp = torch.randn(shape, requires_grad=True)
        samples = []
        for i in range(reps + 1):  # the first one warms up
            start = time.perf_counter()
            y = layer(inp)
            y.backward(torch.ones_like(y))
            if i:
                samples.append(time.perf_counter() - start)
        out[name] = statistics.median(samples)
    return out


def timing(args) -> list[str]:
    lines = []
    for model in args.models.split(","):
        kwargs = chase_kwargs(model, args.steps, args.update_every)
        g = torch.Generator().manual_seed(0)
        batches = [(torch.randn(args.batch, 3, 32, 32, generator=g), torch.randint(0, 100, (args.batch,), generator=g))
                   for _ in range(4)]
        setups = SETUPS + ((PRUNE,) if args.with_prune else ()) + (
            (LAYER_SCORES,) if args.with_layer_scores else ())
        runs: dict[str, list[dict]] = {s: [] for s in setups}
        order, rng = list(setups), random.Random(0)
        for _ in range(args.reps):
            rng.shuffle(order)
            for setup in order:
                runs[setup].append(train_run(model, setup, batches, kwargs, args.steps))
        med = {s: statistics.median(r["seconds"] for r in v) for s, v in runs.items()}
        late = {s: late_step(v) for s, v in runs.items()}
        work = {s: statistics.median(r["work"] for r in v) for s, v in runs.items()}
        compute = {s: statistics.median(r["seconds"] - r["work"] for r in v) for s, v in runs.items()}
        lines += [f"### {model}, CIFAR shape, batch {args.batch}, {args.steps} steps", "",
                  f"Chase: density {kwargs['density']}, channel sparsity {kwargs['channel_sparsity']}, "
                  f"channel events every {kwargs['channel_every']} steps (offset {kwargs['channel_offset']}) "
                  f"until {kwargs['end']:.4f} of the run, parameter updates every {kwargs['update_every']} steps; "
                  f"medians of {args.reps} interleaved repetitions.", ""]
        rows = [[s, f"{med[s]:.2f}", f"{med['dense'] / med[s]:.3f}x", f"{work[s]:.2f}",
                 f"{compute['dense'] / compute[s]:.3f}x", f"{1e3 * late[s]:.1f}", f"{late['dense'] / late[s]:.3f}x",
                 ", ".join(f"{r['seconds']:.2f}" for r in runs[s])] for s in setups]
        lines += [common.table(["set-up", "end to end s", "vs dense", "s of event work",
                                "vs dense, event work left out", "ms per step, last quarter", "vs dense",
                                "repetitions (s)"], rows), "",
                  "'event work': the seconds the sparsifier spent in its one-off work (the trace at attach, the "
                  "topology updates and channel events, the shrinks), timed inside the engine; 'left out' is the "
                  "end-to-end time without it, so the training steps at the widths each step had. The run's widths "
                  "over time are the seed's (its channel events are scaled to the run), but the seed does the same "
                  "number of events in 72,000 steps instead of this run's few: there that work is about 0.1 % of "
                  "the time, so the 'left out' ratio estimates the end-to-end ratio of a seed-length run. The last "
                  "quarter's steps run at the final widths (the steady state).", ""]
        history = runs["chase + shrink"][-1]["history"]
        steps = ", ".join(f"{h['step']}: {h['parameters'] / 1e6:.2f}M" for h in history if "shrunk" in h)
        lines += [f"Parameters of the shrunk run (step: count): {steps}", ""]
        shrunk = runs["chase + shrink"][-1]["net"]
        lines += per_layer(model, shrunk, batches[0][0], args.layer_reps)
        lines += per_shrink(model, history, batches[0][0], args.layer_reps)
    return lines


def per_layer(model: str, shrunk: nn.Module, x: torch.Tensor, reps: int) -> list[str]:
    before, after = layer_times(build(model), x, reps), layer_times(shrunk, x, reps)
    widths = {n: (m.out_channels if isinstance(m, nn.Conv2d) else m.out_features)
              for n, m in build(model).named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    now = {n: (m.out_channels if isinstance(m, nn.Conv2d) else m.out_features)
           for n, m in shrunk.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    top = sorted(before, key=before.get, reverse=True)[:12]
    rows = [[n, f"{widths[n]} -> {now[n]}", f"{1e3 * before[n]:.2f}", f"{1e3 * after[n]:.2f}",
             f"{before[n] / after[n]:.2f}x"] for n in top]
    rows.append(["all layers", "", f"{1e3 * sum(before.values()):.1f}", f"{1e3 * sum(after.values()):.1f}",
                 f"{sum(before.values()) / sum(after.values()):.2f}x"])
    return ["Where the time goes: forward + backward of each layer alone (the 12 slowest at full width), "
            "full widths vs the widths the shrunk run ended with:", "",
            common.table(["layer", "out width", "ms before", "ms after", "speed-up"], rows), ""]


def per_shrink(model: str, history: list[dict], x: torch.Tensor, reps: int) -> list[str]:
    """Forward + backward of all layers alone at the widths after each shrink of the run (step time's
    share that shrinking can change), with the three layers that then take the most time."""
    full = build(model)
    base = layer_times(full, x, reps)
    def slowest(times: dict[str, float]) -> str:
        return ", ".join(f"{n} {1e3 * times[n]:.1f}" for n in sorted(times, key=times.get, reverse=True)[:3])
    rows = [["full widths", f"{sum(p.numel() for p in full.parameters()) / 1e6:.2f}M",
             f"{1e3 * sum(base.values()):.1f}", "1.00x", slowest(base)]]
    for event in (h for h in history if h.get("shrunk")):
        now = layer_times(full, x, reps, widths=event["widths"])
        rows.append([f"after the shrink at step {event['step']}", f"{event['parameters'] / 1e6:.2f}M",
                     f"{1e3 * sum(now.values()):.1f}", f"{sum(base.values()) / sum(now.values()):.2f}x", slowest(now)])
    return ["Where the time goes over the run: all convolution / linear layers alone (forward + backward, ms) "
            "at the widths after each shrink of the shrunk run:", "",
            common.table(["widths", "parameters", "ms, all layers", "speed-up", "slowest three layers (ms)"], rows),
            ""]


#: the accuracy runs: masked Chase on one thread, the same on two threads (it sums in another order too:
#: the noise floor of float32 training), Chase + shrink on one thread
VARIANTS = {"masked": (False, 1), "masked 2 threads": (False, 2), "shrink": (True, 1)}


def accuracy_config(task: str, seed: int, epochs: int, shrink: bool, threads: int) -> dict:
    """The trainer configuration of one accuracy run (ResNet-20 / digits or the 1D CNN / MNIST-1D)."""
    from sparsetrain.train.config import load_config
    from sparsetrain.train.data import create_dataset
    if task.startswith("resnet20"):
        cfg = chase_residual.config("chase none", seed, epochs, 64, threads)
    else:
        steps = epochs * -(-len(create_dataset("mnist1d").train) // 128)
        cfg = load_config("chase_mnist1d", {
            "seed": seed, "epochs": epochs, "threads": threads, "run": {"plots": False, "progress": False},
            "method": {"channel_sparsity": 0.5, **chase_residual.chase_schedule(steps)}})
    cfg["method"]["shrink"] = shrink
    return cfg


#: the accuracy tasks (``--tasks`` picks by the first word)
TASKS = ("resnet20 / digits", "cnn1d / mnist1d")


def gap_stats(gaps: list[float]) -> str:
    """``mean ± std (mean |gap|)`` of accuracy changes in points (std 0 for one seed).

    Example:
        >>> gap_stats([1.0, -1.0])
        '+0.00 ± 1.41 (1.00)'
    """
    std = statistics.stdev(gaps) if len(gaps) > 1 else 0.0
    return f"{statistics.mean(gaps):+.2f} ± {std:.2f} ({statistics.mean(abs(g) for g in gaps):.2f})"


def accuracy(args) -> list[str]:
    from sparsetrain.train.plots import read_metrics
    rows, overview = [], []
    for task in [t for t in TASKS if t.split(" ")[0] in args.tasks.split(",")]:
        gaps: dict[str, list[float]] = {"masked 2 threads": [], "shrink": []}
        for seed in range(args.seeds):
            runs = {}
            for label, (shrink, threads) in VARIANTS.items():
                name = f"{task.split(' ')[0]}-{label.replace(' ', '-')}-s{seed}"
                with contextlib.redirect_stdout(io.StringIO()):  # the trainer's epoch lines
                    summary = chase_accuracy._train(accuracy_config(task, seed, args.epochs, shrink, threads),
                                                    Path(args.out) / name)
                losses = [r["train_loss"] for r in read_metrics(Path(args.out) / name) if r.get("event") == "epoch"]
                runs[label] = (summary["final_test_acc"], losses, summary.get("shrink", [{}])[-1].get("parameters"))
            base = runs["masked"]
            row = [task, str(seed), f"{100 * base[0]:.2f}"]
            for label in ("masked 2 threads", "shrink"):
                agree = next((i for i, (a, b) in enumerate(zip(base[1], runs[label][1], strict=True))
                              if abs(a - b) > 1e-4 * abs(a)), len(base[1]))
                gaps[label].append(100 * (runs[label][0] - base[0]))
                row += [f"{100 * runs[label][0]:.2f} ({gaps[label][-1]:+.2f})", str(agree)]
            rows.append([*row, str(runs["shrink"][2] or "-")])
        overview.append([task, str(args.seeds), *(gap_stats(gaps[label]) for label in gaps)])
    return [f"### Accuracy at equal epochs ({args.epochs} epochs, {args.seeds} seeds)", "",
            "Test accuracy % of masked Chase (one thread), of the same run on two threads, and of Chase + shrink "
            "(one thread); 'agree' counts the epochs whose training loss agrees with the first run's to 1e-4. "
            "float32: a run on two threads, like a shrunk one, sums in another order, and the rounding "
            "differences grow over training: the two-thread column is the noise floor. (In float64 a shrunk "
            "ResNet-20 follows its masked twin to 1e-9, tests/test_shrink.py.)", "",
            common.table(["model / data", "seed", "masked", "masked, 2 threads", "agree", "shrink", "agree",
                          "params at the end (shrunk)"], rows), "",
            "Over the seeds: the change in test accuracy (percentage points) against masked Chase, mean ± std, "
            "and the mean of its size. Shrinking is within noise when its row looks like the two-thread row.", "",
            common.table(["model / data", "seeds", "masked, 2 threads: mean ± std (mean size)",
                          "shrink: mean ± std (mean size)"], overview), ""]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tiny", action="store_true", help="tiny sizes, one repetition, writes nothing")
    parser.add_argument("--models", default="vgg19,resnet50")
    for key, value in FULL.items():
        parser.add_argument(f"--{key.replace('_', '-')}", type=int, default=None, help=f"default {value}")
    parser.add_argument("--update-every", type=int, default=1000, help="steps between parameter updates "
                        "(default 1000, the seed's, unscaled)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--tasks", default="resnet20,cnn1d", help="accuracy tasks: resnet20 (digits), "
                        "cnn1d (MNIST-1D)")
    parser.add_argument("--with-prune", action="store_true", help=f"also time {PRUNE!r} (filter pruning to the "
                        "channel sparsity on Chase's channel cadence, shrinking while it trains)")
    parser.add_argument("--with-layer-scores", action="store_true", help=f"also time {LAYER_SCORES!r} (our "
                        "score_norm='layer' extension: layers compete on relative weakness, so the wide late "
                        "layers lose fewer channels and the earlier, costlier ones more)")
    parser.add_argument("--skip-timing", action="store_true")
    parser.add_argument("--skip-accuracy", action="store_true")
    parser.add_argument("--out", default=str(HERE / "runs" / "shrink"), help="run folders of the accuracy part")
    parser.add_argument("--results", default=None, help="Markdown file for the report (default: "
                        "benchmarks/RESULTS.md, section 'shrink-latest'; --tiny: none)")
    args = parser.parse_args(argv)
    common.fill_defaults(args, TINY if args.tiny else FULL)
    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    with common.Tee() as tee:
        print("# Shrink while training: dense vs Chase vs Chase + shrink" + (" (--tiny)" if args.tiny else ""))
        print()
        for line in common.machine_info("cpu"):
            print(f"- {line}")
        print(f"- torch threads: {torch.get_num_threads()}")
        print()
        if not args.skip_timing:
            print("\n".join(timing(args)))
        if not args.skip_accuracy:
            print("\n".join(accuracy(args)))
        print(f"Total {time.perf_counter() - started:.0f} s.")
    results = args.results or (None if args.tiny else str(HERE / "RESULTS.md"))
    if results:
        command = "python benchmarks/shrink.py" + "".join(f" {a}" for a in (argv or sys.argv[1:]))
        common.write_section("shrink-latest", "## Shrink while training, latest run (issue 14)\n\n"
                             f"```\n{command}\n```\n\n" + common.demote(tee.text(), 2), results)
    return 0


if __name__ == "__main__":
    sys.exit(main())


