"""The measuring parts of ``benchmarks/gpu_suite.py`` (issue 15): shared sizes and timers, and the two
training parts (engine overhead, topology update); the inference parts are in ``gpu_inference.py``.

Each part takes a :class:`Sizes` (the full ImageNet / LLM shapes on CUDA, or toy
shapes for ``--dry-run``) and a deadline (``time.monotonic()`` seconds) it
checks between rounds, and returns ``{"headline": str, "lines": [Markdown],
"raw": {every timing}}``. A part that cannot run here raises :class:`Skip`.
The runner (``gpu_suite.py``) isolates the parts, enforces a hard time limit
and writes the report.

Example:
    >>> TOY.model, FULL.batch
    ('resnet20', 128)
"""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import overhead
import torch
from common import fmt_stats, table
from torch import nn
from torch.nn import functional as F

import sparsetrain
from sparsetrain.train.models import create_model


class Skip(Exception):
    """The part cannot run on this machine (the message says why)."""


@dataclass(frozen=True)
class Sizes:
    """Shapes and repetitions of one suite run."""

    model: str
    model_kwargs: dict[str, Any]
    side: int
    batch: int
    steps_per_round: int
    max_rounds: int
    update_batch: int
    update_reps: int
    chase_batches: tuple[int, ...]
    chase_reps: int
    llm_shapes: tuple[tuple[int, int], ...]
    llm_tokens: tuple[int, ...]
    mlp_widths: tuple[int, ...]
    mlp_batches: tuple[int, ...]
    reps: int
    methods: tuple[str, ...] = ("rigl", "granet", "set", "static")
    channel_sparsities: tuple[float, ...] = (0.3, 0.4, 0.5)
    extra: dict[str, Any] = field(default_factory=dict)


FULL = Sizes("resnet50", {"num_classes": 1000, "stem": "imagenet"}, 224, 128, steps_per_round=10, max_rounds=40,
             update_batch=32, update_reps=5, chase_batches=(64, 256), chase_reps=20,
             llm_shapes=((4096, 4096), (4096, 11008), (11008, 4096)), llm_tokens=(2048, 8192),
             mlp_widths=(4096, 4096, 4096, 1000), mlp_batches=(64, 256), reps=30)
TOY = Sizes("resnet20", {"num_classes": 10}, 16, 4, steps_per_round=2, max_rounds=2, update_batch=2, update_reps=1,
            chase_batches=(2, 4), chase_reps=2, llm_shapes=((64, 128),), llm_tokens=(32,),
            mlp_widths=(64, 64, 10), mlp_batches=(4,), reps=2)

DENSITY = 0.1
#: update_every for the overhead and update parts, and the horizon of every schedule
UPDATE_EVERY, TOTAL_STEPS = 100, 10_000


# ---------------------------------------------------------------------------- timing
class Laps:
    """Intervals between marks: CUDA events on a GPU (read after one synchronise), else ``perf_counter``."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.marks: list[Any] = []

    def mark(self) -> None:
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            self.marks.append(event)
        else:
            self.marks.append(time.perf_counter())

    def seconds(self) -> list[float]:
        """Seconds between consecutive marks (clears the marks)."""
        if self.cuda:
            torch.cuda.synchronize()
            out = [a.elapsed_time(b) / 1e3 for a, b in zip(self.marks, self.marks[1:], strict=False)]
        else:
            out = [b - a for a, b in zip(self.marks, self.marks[1:], strict=False)]
        self.marks = []
        return out


def interleaved(fns: dict[str, Callable[[], Any]], device: torch.device, reps: int, warmup: int = 3,
                deadline: float | None = None) -> dict[str, list[float]]:
    """Seconds per call of each ``fn``, ``reps`` interleaved rounds (shuffled order) after ``warmup`` calls each."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    order = list(fns)
    rng = random.Random(0)
    for r in range(reps):
        if deadline is not None and r >= 3 and time.monotonic() > deadline:
            break
        rng.shuffle(order)
        for name in order:
            laps = Laps(device)
            laps.mark()
            fns[name]()
            laps.mark()
            times[name] += laps.seconds()
    return times


def ms(values: list[float]) -> str:
    return fmt_stats(values, 1e3, 3)


#: set by ``gpu_suite.py --dry-run``: run on the CPU even where CUDA is available
FORCE_CPU = False


def pick_device() -> torch.device:
    """CUDA where available (and not a dry run), else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() and not FORCE_CPU else "cpu")


def needs_cuda() -> torch.device:
    """The CUDA device, or :class:`Skip` (also in a dry run)."""
    if pick_device().type != "cuda":
        raise Skip("needs CUDA")
    return torch.device("cuda")


def _resnet(sz: Sizes, device: torch.device) -> nn.Module:
    torch.manual_seed(0)
    return create_model(sz.model, **sz.model_kwargs).to(device)


def _batch(sz: Sizes, n: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    classes = sz.model_kwargs.get("num_classes", 10)
    return (torch.randn(n, 3, sz.side, sz.side, generator=g).to(device),
            torch.randint(0, classes, (n,), generator=g).to(device))


# ---------------------------------------------------------------------------- (2) engine overhead
def engine_overhead(sz: Sizes, deadline: float) -> dict:
    """Training-step time, dense vs each method: bf16 autocast, channels_last, rounds of steps interleaved."""
    device = pick_device()
    torch.backends.cudnn.benchmark = True
    x, y = _batch(sz, sz.batch, device)
    x = x.contiguous(memory_format=torch.channels_last)
    runs = {}
    for name in ("dense", *sz.methods):
        model = _resnet(sz, device).to(memory_format=torch.channels_last)
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=5e-5)
        if name != "dense":
            kwargs, why = overhead.method_kwargs(name)
            if kwargs is None:
                raise RuntimeError(f"{name}: {why}")
            sparsetrain.attach(model, opt, name, density=DENSITY, total_steps=TOTAL_STEPS, **kwargs)
        runs[name] = (model, opt)

    def step(model, opt, laps: Laps) -> None:
        laps.mark()
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16):
            loss = F.cross_entropy(model(x), y)
        loss.backward()
        laps.mark()
        opt.step()
        laps.mark()

    raw = {name: {"fwd_bwd": [], "opt_step": [], "step": [], "round_median_step": []} for name in runs}
    for model, opt in runs.values():  # warm-up (cudnn autotuning), untimed
        for _ in range(3):
            step(model, opt, Laps(device))
    order = list(runs)
    rng = random.Random(0)
    for r in range(sz.max_rounds):
        if r >= 3 and time.monotonic() > deadline:
            break
        rng.shuffle(order)
        for name in order:
            laps = Laps(device)
            for _ in range(sz.steps_per_round):
                step(*runs[name], laps)
            secs = laps.seconds()
            fb, st = secs[0::3], secs[1::3]
            raw[name]["fwd_bwd"] += fb
            raw[name]["opt_step"] += st
            raw[name]["step"] += [a + b for a, b in zip(fb, st, strict=True)]
            raw[name]["round_median_step"].append(statistics.median(a + b for a, b in zip(fb, st, strict=True)))
    dense = raw["dense"]
    d_step, d_opt = statistics.median(dense["step"]), statistics.median(dense["opt_step"])
    rows, ratios = [], {}
    for name, r in raw.items():
        step_med = statistics.median(r["step"])
        ratio = step_med / d_step
        amortised = statistics.mean(r["step"]) / statistics.mean(dense["step"])
        per_round = [s / d for s, d in zip(r["round_median_step"], dense["round_median_step"], strict=True)]
        mask_share = (statistics.median(r["opt_step"]) - d_opt) / step_med
        ratios[name] = {"ratio_median": ratio, "ratio_mean": amortised, "mask_share": mask_share,
                        "per_round": per_round}
        rows.append([name, str(len(r["step"])), ms(r["step"]), ms(r["fwd_bwd"]), ms(r["opt_step"]), f"{ratio:.4f}",
                     fmt_stats(per_round, 1, 4), f"{amortised:.4f}",
                     "" if name == "dense" else f"{100 * mask_share:.2f} %"])
    worst = max((v["ratio_median"] for k, v in ratios.items() if k != "dense"), default=1.0)
    lines = [f"{sz.model} {sz.model_kwargs}, batch {sz.batch}, {sz.side}x{sz.side}, bf16 autocast, channels_last, "
             f"SGD (Nesterov); density {DENSITY}, update_every {UPDATE_EVERY}; rounds of {sz.steps_per_round} "
             f"steps per variant, interleaved in shuffled order; time per step ms: median (min-max). Ratio = "
             "median step / dense median step; per-round: median (min-max) of each round's median ratio; mean "
             "ratio includes the topology-update steps that fell in the run (amortised); mask work = (median "
             "optimizer.step of the method - dense's) / the method's median step. Goals: ratio <= 1.02, mask "
             "work < 2 %.", "",
             table(["variant", "steps", "step ms", "fwd+bwd ms", "optimizer.step ms", "ratio (medians)",
                    "per-round ratio", "ratio (means)", "mask work / step"], rows)]
    return {"headline": f"worst method step ratio {worst:.3f}x (goal <= 1.02)", "lines": lines,
            "raw": {"times_s": raw, "ratios": ratios}}


# ---------------------------------------------------------------------------- (3) topology update time
def update_time(sz: Sizes, deadline: float) -> dict:
    """One topology update of rigl and granet on the model, next to rigl-torch's ``_rigl_step``."""
    device = pick_device()
    overhead.DEVICE = device
    scheduler, note = overhead.import_rigl_torch()

    def build():
        model = _resnet(sz, device)
        return model, torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    inputs = _batch(sz, sz.update_batch, device)
    raw, rows = {}, []
    for i, method in enumerate(("rigl", "granet")):
        if i and time.monotonic() > deadline:
            rows.append([method, "not run: time budget spent", "", "", "", ""])
            continue
        r = overhead.update_cost(sz.model, sz.update_reps, scheduler if method == "rigl" else None, build=build,
                                 inputs=inputs, method=method, their_reps=max(1, sz.update_reps // 2))
        raw[method] = r
        ours = statistics.median(r["ours"])
        theirs = statistics.median(r["theirs"]) if r["theirs"] else None
        rows.append([method, f"{r['weights'] / 1e6:.2f}M / {r['layers']}", ms(r["plain"]), ms(r["ours"]),
                     ms(r["theirs"]) if theirs else "n/a", f"{theirs / ours:.1f}x" if theirs else "n/a"])
    rigl = raw.get("rigl")
    headline = "no rigl figure"
    if rigl:
        ours = statistics.median(rigl["ours"]) * 1e3
        headline = f"rigl update {ours:.1f} ms (goal < 50 ms)"
        if rigl["theirs"]:
            headline += f", {statistics.median(rigl['theirs']) * 1e3 / ours:.1f}x faster than rigl-torch (goal >= 10x)"
    lines = [f"{sz.model} {sz.model_kwargs}, density {DENSITY}, uniform with a dense first layer; ours = "
             "optimizer.step() at an update step minus at an ordinary step (benchmarks/overhead.py "
             f"`update_cost`); theirs: {note}, `RigLScheduler._rigl_step()`. ms: median (min-max).", "",
             table(["method", "weights / layers", "ordinary step ms", "ours: update ms", "rigl-torch: update ms",
                    "rigl-torch / ours"], rows)]
    return {"headline": headline, "lines": lines, "raw": raw}
