"""The measuring parts of ``benchmarks/gpu_suite.py`` (issue 15): one function per part.

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
from sparsetrain.train.models import create_model, list_models


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
#: Chase's minimum width beta for ResNet-50 (the seed's setting)
CHASE_MIN_RATIO = 0.5


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


def _needs_cuda() -> torch.device:
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


# ---------------------------------------------------------------------------- (4) Chase compact inference
def chase_inference(sz: Sizes, deadline: float) -> dict:
    """Throughput of Chase's compact model vs the dense one (bf16, channels_last), per channel sparsity."""
    from sparsetrain.structured.bench import bench, channel_sparse_masks, format_table, prepare
    device = pick_device()
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    torch.backends.cudnn.benchmark = True
    example = torch.randn(2, 3, sz.side, sz.side)
    raw, lines, summary = {}, [], []
    for s_c in sz.channel_sparsities:
        if raw and time.monotonic() > deadline:
            summary.append([f"{s_c}", "not run: time budget spent", "", "", ""])
            continue
        model = create_model(sz.model, **sz.model_kwargs).eval()
        masks = channel_sparse_masks(model, example, s_c, min_ratio=CHASE_MIN_RATIO, density=DENSITY,
                                     score_norm="layer", prune_skip=True)
        models, counts, _ = prepare(model, example, masks=masks, csr=False)
        models = {n: m.to(dtype=dtype, memory_format=torch.channels_last) for n, m in models.items()}
        rows = bench(models, (3, sz.side, sz.side), batch_sizes=sz.chase_batches, device=device, reps=sz.chase_reps,
                     warmup=3, counts=counts, dtype=dtype)
        raw[str(s_c)] = rows
        for r in rows:
            if r["variant"] == "compact":
                summary.append([f"{s_c}", str(r["batch"]), f"{r['throughput']:.0f}", f"{r['speedup']:.2f}x",
                                f"{r['flop_ratio']:.2f}x"])
        lines += [f"**S_c = {s_c}**", "", format_table(rows), ""]
    at = [r for r in raw.get("0.4", []) if r["variant"] == "compact"]
    headline = ("S_c=0.4 speedup " + ", ".join(f"batch {r['batch']}: {r['speedup']:.2f}x" for r in at)
                + " (goal >= 1.7x)") if at else "no S_c=0.4 figure"
    head = [f"{sz.model} {sz.model_kwargs}, {sz.side}x{sz.side}, {dtype}, channels_last, inference_mode; one-shot "
            f"Chase channel removal (UMM, `score_norm=layer`, `prune_skip=True`, beta {CHASE_MIN_RATIO}, "
            f"unstructured density {DENSITY}) then `compact`; {sz.chase_reps} interleaved repetitions after 3 "
            "warm-ups (sparsetrain.structured.bench).", "",
            table(["S_c", "batch", "compact samples/s", "speedup vs dense", "FLOP ratio"], summary), ""]
    return {"headline": headline, "lines": head + lines, "raw": raw}


# ---------------------------------------------------------------------------- (5) 2:4 semi-structured
def _two_four_linear(n_in: int, n_out: int, device: torch.device) -> nn.Linear:
    from sparsetrain.core.granularity import nm_mask
    torch.manual_seed(0)
    linear = nn.Linear(n_in, n_out, bias=False, device=device)
    with torch.no_grad():
        linear.weight.mul_(nm_mask(linear.weight.abs(), 2, 4))
    return linear.to(dtype=torch.bfloat16).eval()


def semi_structured(sz: Sizes, deadline: float) -> dict:
    """2:4 semi-structured ``nn.Linear`` (``to_sparse_semi_structured``) vs dense at LLM shapes, bf16."""
    device = _needs_cuda()
    from torch.sparse import SparseSemiStructuredTensor

    from sparsetrain.structured.inference import SemiStructuredLinear
    raw, rows = {}, []
    backends = {"cuSPARSELt": False, "CUTLASS": True}
    for n_in, n_out in sz.llm_shapes:
        dense = _two_four_linear(n_in, n_out, device)
        for tokens in sz.llm_tokens:
            key = f"{n_in}x{n_out}@{tokens}"
            if raw and time.monotonic() > deadline:
                rows.append([f"{n_in} -> {n_out}", str(tokens), "not run: time budget spent", "", "", ""])
                continue
            x = torch.randn(tokens, n_in, device=device, dtype=torch.bfloat16)
            fns, errors = {"dense": lambda d=dense, x=x: d(x)}, {}
            for backend, force_cutlass in backends.items():
                SparseSemiStructuredTensor._FORCE_CUTLASS = force_cutlass
                try:
                    sparse = SemiStructuredLinear(dense)
                    with torch.inference_mode():
                        err = (sparse(x) - dense(x)).abs().max().item() / dense(x).abs().max().item()
                    fns[backend] = lambda s=sparse, x=x: s(x)
                    errors[backend] = err
                except Exception as exc:  # noqa: BLE001 - a backend missing here is recorded, not fatal
                    errors[backend] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:160]}"
            SparseSemiStructuredTensor._FORCE_CUTLASS = False
            with torch.inference_mode():
                times = interleaved(fns, device, sz.reps, deadline=deadline)
            raw[key] = {"times_s": times, "max_rel_error_or_failure": errors}
            d = statistics.median(times["dense"])
            cells = [f"{d / statistics.median(times[b]):.2f}x" if b in times else str(errors[b])[:60]
                     for b in backends]
            rows.append([f"{n_in} -> {n_out}", str(tokens), ms(times["dense"]), *cells,
                         ", ".join(f"{b} {e:.1e}" for b, e in errors.items() if isinstance(e, float))])
    best = [max(statistics.median(v["times_s"]["dense"]) / statistics.median(v["times_s"][b])
                for b in backends if b in v["times_s"]) for v in raw.values() if len(v["times_s"]) > 1]
    headline = (f"2:4 speedup {min(best):.2f}x-{max(best):.2f}x over the shapes, best backend (goal >= 1.3x)"
                if best else "no 2:4 figure: no backend converted a weight (see the table)")
    lines = ["`nn.Linear` without bias, bf16, weights pruned 2:4 by magnitude (`nm_mask`), converted with "
             "`torch.sparse.to_sparse_semi_structured` (sparsetrain's `SemiStructuredLinear`) under each backend; "
             f"input [tokens, in]; {sz.reps} interleaved repetitions, CUDA events; speedup = dense median / 2:4 "
             "median; max error relative to the output's largest entry.", "",
             table(["in -> out", "tokens", "dense ms", "speedup cuSPARSELt", "speedup CUTLASS", "max rel. error"],
                   rows)]
    gpt = [name for name in list_models() if name.lower().startswith("gpt")]
    if not gpt:
        lines += ["", "End to end: skipped: no GPT model in sparsetrain's model registry "
                  f"({', '.join(list_models())})."]
    elif time.monotonic() < deadline:
        lines += ["", *_gpt_end_to_end(gpt[0], device, raw)]
    else:
        lines += ["", f"End to end ({gpt[0]}): not run: time budget spent."]
    return {"headline": headline, "lines": lines, "raw": raw}


def _gpt_end_to_end(name: str, device: torch.device, raw: dict) -> list[str]:
    """The registered GPT with every 2:4-able Linear pruned 2:4, then ``sparsify_for_inference(("2:4",))``."""
    from sparsetrain.core.granularity import nm_mask
    from sparsetrain.structured.inference import sparsify_for_inference
    torch.manual_seed(0)
    model = create_model(name).to(device=device, dtype=torch.bfloat16).eval()
    vocab = next(m.num_embeddings for m in model.modules() if isinstance(m, nn.Embedding))  # the token embedding
    tokens = torch.randint(0, vocab, (8, 512), device=device)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Linear) and m.in_features % 64 == 0 and m.out_features % 64 == 0:
                m.weight.mul_(nm_mask(m.weight.abs(), 2, 4))
    fast, decisions = sparsify_for_inference(model, tokens, formats=("2:4",), min_speedup=1.0)
    with torch.inference_mode():
        times = interleaved({"dense": lambda: model(tokens), "2:4": lambda: fast(tokens)}, device, 20)
    raw[f"e2e:{name}"] = {"times_s": times, "layers_2:4": sum(d.choice == "2:4" for d in decisions.values()),
                          "layers": len(decisions)}
    speed = statistics.median(times["dense"]) / statistics.median(times["2:4"])
    return [f"End to end ({name}, batch 8 x 512 tokens, bf16): {raw[f'e2e:{name}']['layers_2:4']} of "
            f"{len(decisions)} pruned Linear layers chose 2:4 (measured per layer); forward dense "
            f"{ms(times['dense'])} ms, 2:4 {ms(times['2:4'])} ms: **{speed:.2f}x**."]


# ---------------------------------------------------------------------------- (6) CSR
def csr_mlp(sz: Sizes, deadline: float) -> dict:
    """A 98 %-sparse MLP: every Linear as CSR (``CSRLinear``) vs dense, fp32, on CUDA (CPU in a dry run)."""
    from sparsetrain.structured.bench import bench, count, format_table
    from sparsetrain.structured.inference import CSRLinear
    device = pick_device()
    torch.manual_seed(0)
    widths = sz.mlp_widths
    layers: list[nn.Module] = []
    for a, b in zip(widths[:-1], widths[1:], strict=True):
        layers += [nn.Linear(a, b), nn.ReLU()]
    dense = nn.Sequential(*layers[:-1]).eval()
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in dense:
            if isinstance(m, nn.Linear):
                m.weight.mul_(torch.rand(m.weight.shape, generator=gen) < 0.02)
    csr = nn.Sequential(*[CSRLinear(m) if isinstance(m, nn.Linear) else m for m in dense]).eval()
    one = torch.randn(1, widths[0])
    counts = {"dense": count(dense, one), "csr": count(dense, one, sparse=True)}
    rows = bench({"dense": dense, "csr": csr}, (widths[0],), batch_sizes=sz.mlp_batches, device=device,
                 reps=sz.reps, warmup=3, counts=counts)
    speed = ", ".join(f"batch {r['batch']}: {r['speedup']:.2f}x" for r in rows if r["variant"] == "csr")
    lines = [f"MLP {'-'.join(map(str, widths))}, every Linear 98 % sparse (random exact zeros), fp32, {device.type}; "
             f"CSR = `CSRLinear` (addmm with a sparse CSR weight) on every layer; {sz.reps} interleaved repetitions "
             "(sparsetrain.structured.bench). A speedup below 1 is a slowdown.", "", format_table(rows)]
    return {"headline": f"CSR vs dense {speed}", "lines": lines, "raw": rows}


PARTS: dict[str, Callable[[Sizes, float], dict]] = {
    "overhead": engine_overhead, "update": update_time, "chase": chase_inference,
    "semi_structured": semi_structured, "csr": csr_mlp,
}
