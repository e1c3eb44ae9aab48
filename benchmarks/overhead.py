"""Engine overhead (issue 2): what sparse training costs on top of dense training.

    python benchmarks/overhead.py            # full run, about 5-10 minutes on 2 CPU cores
    python benchmarks/overhead.py --quick    # smoke run, under a minute

(a) Training-step time of every registered method divided by the dense step
    time, amortised over topology updates (update_every=100, windows of 200
    optimizer steps that contain 2 updates), for the CIFAR ResNet-20 at batch
    128, the MLP 784-300-100-10 at batch 256 and the GPT recipe's model (2
    layers, width 128, 64 characters) at batch 32. Targets: <= 1.02, <= 1.05
    and <= 1.03 (issue 13; ``--models gpt --methods rigl,granet`` for just that).

    The engine adds no forward or backward hooks (contract 1): everything it
    does runs inside ``optimizer.step()`` (pre-hook, post-hook, updates). So a
    step is split into forward + backward (t_fb, identical for dense and
    sparse, measured on the dense model between rounds) and
    ``optimizer.step()``, timed at every step of a 200-step window with the
    batch's dense gradient copied in before each step outside the timer. A
    dense and a sparse copy of the model step alternately (step-level
    interleaving cancels drift); methods run in shuffled order each round.
    The window time is the sum over its steps of the per-step median over
    rounds (and of the per-step minimum: "best", the least disturbed figure on
    a shared machine), and the step ratio is ``(t_fb + sparse) / (t_fb +
    dense)`` per step, amortised over the window. On a 2-core machine a
    ResNet-20 step at batch 128 takes 0.25-3 s, so 200 real steps per method
    and round do not fit the time budget; for the MLP the end-to-end
    measurement (zero_grad + forward + backward + step timed together,
    interleaved the same way) is printed as a cross-check.

(b) The time of one RigL topology update (drop + grow) on ResNet-20 and the
    CIFAR ResNet-18 (11M weights): ours is what the engine adds to an
    ``optimizer.step()`` at an update step (gradient snapshot, drop, grow,
    re-masking of weights and optimizer state) = step time at an update step
    minus step time at an ordinary step; rigl-torch's is its
    ``RigLScheduler._rigl_step()``, same density 0.1, uniform with a dense first
    layer, linear layers sparse (``ignore_linear_layers=False``). Target: ours
    >= 5x faster. rigl-torch imports torchvision only for two isinstance checks
    whose branches do the same thing; when torchvision is missing (it does not
    work with the CPU build of torch here) a stub module stands in for it.
"""

from __future__ import annotations

import argparse
import inspect
import random
import statistics
import sys
import time
import types
from collections.abc import Callable
from pathlib import Path

import torch

import sparsetrain
from sparsetrain.methods import method_signature
from sparsetrain.train.models import create_model
from sparsetrain.train.tasks import Task

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import Tee, demote, machine_info, table, write_section  # noqa: E402
from common import fmt_stats as fmt  # noqa: E402

TOTAL_STEPS = 1000  # every method's schedule has updates at steps 100 and 200 of 1000
UPDATE_EVERY = 100
WINDOW = 200
SEED = 0

# (model, batch, input shape, target ratio)
OVERHEAD_MODELS = [("resnet20", 128, (3, 32, 32), 1.02), ("mlp", 256, (1, 28, 28), 1.05), ("gpt", 32, (64,), 1.03)]
#: models fed token ids (vocabulary size): the GPT recipe's defaults, 64 characters of 98 ids
TOKEN_MODELS = {"gpt": 98}
UPDATE_MODELS = ["resnet20", "resnet18"]

# rounds: (minimum, maximum); after the minimum, rounds stop once the part's budget (seconds) is spent
FULL = {"rounds": {"resnet20": (3, 7), "mlp": (3, 9), "gpt": (3, 7)},
        "fb_reps": {"resnet20": 2, "mlp": 10, "gpt": 4}, "e2e_rounds": (3, 5),
        "budget": {"resnet20": 150, "mlp": 60, "gpt": 150, "e2e": 120}, "update_reps": {"resnet20": 15, "resnet18": 5}}
QUICK = {"rounds": {"resnet20": (1, 1), "mlp": (1, 1), "gpt": (1, 1)}, "fb_reps": {"resnet20": 1, "mlp": 3, "gpt": 1},
         "e2e_rounds": (0, 0), "budget": {"resnet20": 0, "mlp": 0, "gpt": 0, "e2e": 0},
         "update_reps": {"resnet20": 2, "resnet18": 1}}


# ---------------------------------------------------------------------------- helpers
DEVICE = torch.device("cpu")  # set by main(--device)


def sync() -> None:
    """Wait for queued GPU work so a timer measures it (no-op on CPU)."""
    if DEVICE.type == "cuda":
        torch.cuda.synchronize(DEVICE)


def method_kwargs(name: str) -> tuple[dict | None, str]:
    """``update_every=100`` where the builder takes it; None and a reason if it needs more."""
    params = method_signature(name).parameters
    kwargs = {"update_every": UPDATE_EVERY} if "update_every" in params else {}
    missing = [p for p, v in params.items() if v.default is inspect.Parameter.empty and p not in kwargs
               and v.kind not in (v.VAR_KEYWORD, v.VAR_POSITIONAL)]
    if missing:
        return None, f"needs {', '.join(missing)}"
    return kwargs, ""


def make(model_name: str):
    torch.manual_seed(SEED)
    model = create_model(model_name).to(DEVICE)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=5e-4)
    return model, opt


def batch(size: int, shape: tuple[int, ...], vocab: int | None = None):
    """Random inputs and 10-class labels, or (``vocab``) token ids and their next tokens."""
    g = torch.Generator().manual_seed(SEED)
    if vocab is not None:
        ids = torch.randint(0, vocab, (size, shape[0] + 1), generator=g).to(DEVICE)
        return ids[:, :-1], ids[:, 1:]
    return (torch.randn(size, *shape, generator=g).to(DEVICE),
            torch.randint(0, 10, (size,), generator=g).to(DEVICE))


def attach(model, opt, method: str, kwargs: dict, example: tuple):
    """``sparsetrain.attach`` with one batch as data / example input (for methods that score on data)."""
    return sparsetrain.attach(model, opt, method, total_steps=TOTAL_STEPS, data=[example],
                              example_input=example[0], **kwargs)


def fwd_bwd(model, opt, x, y) -> None:
    opt.zero_grad()
    Task.loss(model(x), y).backward()  # cross-entropy over the last dim: classes or next tokens


# ---------------------------------------------------------------------------- (a) step overhead
def _set_grads(model, grads: list[torch.Tensor]) -> list[torch.Tensor]:
    params = list(model.parameters())
    for p, g in zip(params, grads, strict=True):
        p.grad = g.clone()
    return [p.grad for p in params]


def paired_window(model_name: str, method: str, kwargs: dict, grads: list[torch.Tensor] | None,
                  data=None, example=None) -> tuple[list[float], list[float], int]:
    """Per-step seconds of a dense and a sparse run stepped alternately (step-level interleaving).

    With ``grads`` only ``optimizer.step()`` is timed, the dense gradient copied
    in before each step outside the timer; with ``data = (x, y)`` each whole
    step (zero_grad, forward, backward, optimizer.step()) is timed.
    """
    dense, dopt = make(model_name)
    sparse, sopt = make(model_name)
    sp = attach(sparse, sopt, method, kwargs, example if example is not None else data)
    runs = [(dense, dopt, []), (sparse, sopt, [])]
    if grads is not None:
        pgrads = [_set_grads(model, grads) for model, _, _ in runs]
    else:
        for model, opt, _ in runs:
            fwd_bwd(model, opt, *data)  # warm-up, no step
    for i in range(WINDOW):
        for j in ((0, 1) if i % 2 == 0 else (1, 0)):
            model, opt, times = runs[j]
            if grads is not None:
                torch._foreach_copy_(pgrads[j], grads)  # this batch's dense gradient (outside the timer)
                sync()
                t0 = time.perf_counter()
                opt.step()
            else:
                sync()
                t0 = time.perf_counter()
                fwd_bwd(model, opt, *data)
                opt.step()
            sync()
            times.append(time.perf_counter() - t0)
    updates = len(sp.history) - 1
    sp.detach()
    return runs[0][2], runs[1][2], updates


def time_fb(model, opt, x, y, reps: int) -> list[float]:
    out = []
    for _ in range(reps):
        sync()
        t0 = time.perf_counter()
        fwd_bwd(model, opt, x, y)
        sync()
        out.append(time.perf_counter() - t0)
    return out


def overhead(model_name: str, bs: int, shape, methods: dict[str, dict], rounds: tuple[int, int], fb_reps: int,
             budget: float, end_to_end: bool = False) -> tuple[dict, list[float]]:
    """Rounds of paired windows for every method, in shuffled order; stops after ``rounds[0]`` rounds
    once ``budget`` seconds are spent, else after ``rounds[1]``. Returns per-method samples and t_fb samples."""
    x, y = batch(bs, shape, TOKEN_MODELS.get(model_name))
    base, base_opt = make(model_name)
    fwd_bwd(base, base_opt, x, y)  # warm-up, and the dense gradient every window reuses
    grads = None if end_to_end else [p.grad.detach().clone() for p in base.parameters()]
    res = {m: {"dense": [], "sparse": [], "updates": 0} for m in methods}
    fb: list[float] = []
    order = list(methods)
    rng = random.Random(SEED + end_to_end)
    t_start = time.perf_counter()
    for r in range(rounds[1]):
        if r >= rounds[0] and time.perf_counter() - t_start > budget:
            break
        if not end_to_end:
            fb += time_fb(base, base_opt, x, y, fb_reps)
        rng.shuffle(order)
        for m in order:
            d, s, updates = paired_window(model_name, m, methods[m], grads, None if grads else (x, y), (x, y))
            res[m]["dense"].append(d)
            res[m]["sparse"].append(s)
            res[m]["updates"] = updates
        if not end_to_end:
            fb += time_fb(base, base_opt, x, y, fb_reps)
    return res, fb


def summarise(r: dict, fb: list[float]) -> dict:
    """Window time from the per-step median (and minimum) over rounds, amortised per step; step ratios."""
    out = {"rounds": len(r["dense"])}
    for how, agg in (("med", statistics.median), ("best", min)):
        t_fb = agg(fb) if fb else 0.0
        d = sum(agg(col) for col in zip(*r["dense"], strict=True)) / WINDOW
        s = sum(agg(col) for col in zip(*r["sparse"], strict=True)) / WINDOW
        out[how] = {"dense": d, "sparse": s, "over": s - d, "ratio": (t_fb + s) / (t_fb + d)}
    t_fb = statistics.median(fb) if fb else 0.0
    out["per_round"] = [(t_fb + sum(s) / WINDOW) / (t_fb + sum(d) / WINDOW)
                        for d, s in zip(r["dense"], r["sparse"], strict=True)]
    return out


# ---------------------------------------------------------------------------- (b) update cost
def import_rigl_torch() -> tuple[Callable | None, str]:
    """rigl-torch's RigLScheduler, with a torchvision stub if torchvision cannot be imported."""
    note, stubs = "", {}
    try:
        import torchvision  # noqa: F401
    except Exception:  # missing, or built for another torch
        tv, models, resnet = (types.ModuleType(n) for n in ("torchvision", "torchvision.models",
                                                            "torchvision.models.resnet"))
        resnet.BasicBlock = type("BasicBlock", (torch.nn.Module,), {})
        resnet.Bottleneck = type("Bottleneck", (torch.nn.Module,), {})
        tv.models, models.resnet = models, resnet
        stubs = {"torchvision": tv, "torchvision.models": models, "torchvision.models.resnet": resnet}
        sys.modules.update(stubs)
        note = " (torchvision stubbed)"
    try:
        import rigl_torch  # noqa: F401
        from rigl_torch.RigL import RigLScheduler
    except ImportError:
        return None, "rigl_torch not installed (pip install rigl-torch==0.5.2)"
    finally:  # rigl-torch holds what it needs; a stub left behind breaks later imports (transformers)
        for name in stubs:
            sys.modules.pop(name, None)
    from importlib.metadata import version
    return RigLScheduler, f"rigl-torch {version('rigl-torch')}{note}"


def update_cost(model_name: str, reps: int, rigl_scheduler, *, build: Callable | None = None,
                inputs: tuple | None = None, method: str = "rigl", their_reps: int | None = None) -> dict:
    """Time one topology update of ``method`` (ours) and of rigl-torch's ``_rigl_step`` (theirs).

    ``build() -> (model, optimizer)`` and ``inputs = (x, y)`` replace the named
    model and its CIFAR batch (benchmarks/update_scaling.py passes MLPs of any
    size); ``their_reps`` caps rigl-torch's repetitions (it is slow on big models).
    """
    build = build or (lambda: make(model_name))
    x, y = inputs if inputs is not None else batch(8, (3, 32, 32))
    kwargs = dict(density=0.1, update_every=UPDATE_EVERY)
    params = method_signature(method).parameters
    kwargs.update({k: v for k, v in (("distribution", "uniform"), ("dense_first", True)) if k in params})
    model, opt = build()
    sp = attach(model, opt, method, kwargs, (x, y))
    fwd_bwd(model, opt, x, y)
    params = list(model.parameters())
    grads = [p.grad.detach().clone() for p in params]
    pgrads = [p.grad for p in params]
    out = {"weights": sp.ctx.total_numel(), "layers": len(sp.ctx.params), "ours": [], "plain": [], "due": [],
           "theirs": [], "changed": []}

    def ours_step(step_before: int) -> float:
        torch._foreach_copy_(pgrads, grads)
        sp.ctx.step = step_before
        n = len(sp.history)
        sync()
        t0 = time.perf_counter()
        opt.step()
        sync()
        spent = time.perf_counter() - t0
        assert len(sp.history) == n + (step_before + 1 == UPDATE_EVERY), "unexpected update count"
        return spent

    theirs = None
    if rigl_scheduler is not None:
        tmodel, topt = build()
        theirs = rigl_scheduler(tmodel, topt, dense_allocation=0.1, T_end=int(0.75 * TOTAL_STEPS),
                                delta=UPDATE_EVERY, ignore_linear_layers=False)
        theirs.step = UPDATE_EVERY - 1  # its backward hooks keep the dense gradient before an update
        fwd_bwd(tmodel, topt, x, y)
        theirs.step = UPDATE_EVERY
        out["their_layers"] = sum(s > 0 for s in theirs.S)
    ours_step(UPDATE_EVERY)  # warm-up
    for i in range(reps):
        plain = ours_step(UPDATE_EVERY)  # step 101: no update
        due = ours_step(UPDATE_EVERY - 1)  # step 100: update
        out["plain"].append(plain)
        out["due"].append(due)
        out["ours"].append(due - plain)
        out["changed"].append(sp.history[-1].get("changed", 0))
        if theirs is not None and i < (their_reps or reps):
            sync()
            t0 = time.perf_counter()
            theirs._rigl_step()
            sync()
            out["theirs"].append(time.perf_counter() - t0)
    sp.detach()
    return out


def _overhead_rows(res: dict, summ: dict, target: float, with_updates: bool) -> tuple[list[str], list[list[str]]]:
    rows = []
    for m in res:
        o = summ[m]
        med, best = o["med"], o["best"]
        verdict = "met" if med["ratio"] <= target and best["ratio"] <= target else (
            "MISSED" if med["ratio"] > target and best["ratio"] > target else "mixed")
        rows.append([m] + ([str(res[m]["updates"])] if with_updates else []) + [
            f"{med['dense'] * 1e3:.3f} / {best['dense'] * 1e3:.3f}",
            f"{med['sparse'] * 1e3:.3f} / {best['sparse'] * 1e3:.3f}",
            f"{med['over'] * 1e3:.3f} / {best['over'] * 1e3:.3f}",
            f"{med['ratio']:.4f}", fmt(o["per_round"], 1, 4), f"{best['ratio']:.4f}", verdict])
    header = ["method"] + (["updates"] if with_updates else []) + [
        "dense opt.step ms (median / best)", "sparse opt.step ms (median / best)",
        "overhead ms/step (median / best)", "ratio (medians)", "per-round ratio", "ratio (best)", "target"]
    return header, rows


# ---------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="one round of everything (under a minute)")
    parser.add_argument("--methods", default="*", help="comma-separated globs over sparsetrain.list_methods() "
                        "(default: all)")
    parser.add_argument("--skip-e2e", action="store_true", help="leave out the end-to-end MLP cross-check")
    parser.add_argument("--models", default=None, help="comma-separated subset of the models (default: "
                        f"{', '.join(m[0] for m in OVERHEAD_MODELS)} for (a), {', '.join(UPDATE_MODELS)} for (b))")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's own)")
    parser.add_argument("--results", default=None, help="Markdown file to write the report into (default: "
                        "benchmarks/RESULTS.md, section 'overhead-latest'; --quick: none)")
    args = parser.parse_args(argv)
    results = args.results or (None if args.quick else str(Path(__file__).resolve().parent / "RESULTS.md"))
    with Tee() as tee:
        run(args)
    if results:
        command = "python benchmarks/overhead.py" + "".join(f" {a}" for a in (argv if argv is not None
                                                                               else sys.argv[1:]))
        write_section("overhead-latest", "## Engine overhead of every method, latest run (issues 2 and 7)\n\n"
                      f"```\n{command}\n```\n\n" + demote(tee.text(), 2), results)
    return 0


def run(args) -> None:
    """The whole benchmark (``main`` parses the arguments and records the report)."""
    global DEVICE
    DEVICE = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = QUICK if args.quick else FULL
    start = time.perf_counter()
    torch.manual_seed(SEED)

    print("# sparsetrain engine overhead" + (" (--quick)" if args.quick else ""))
    print()
    for line in machine_info(args.device):
        print(f"- {line}")
    methods, skipped = {}, {}
    names = sorted({n for pattern in args.methods.split(",") for n in sparsetrain.list_methods(pattern.strip())})
    for name in names:
        kwargs, why = method_kwargs(name)
        if kwargs is None:
            skipped[name] = why
        else:
            methods[name] = kwargs
    for name, kwargs in list(methods.items()):  # attach once; a method that cannot run here is reported
        try:
            model, opt = make("mlp")
            attach(model, opt, name, kwargs, batch(4, (1, 28, 28))).detach()
        except Exception as err:  # noqa: BLE001
            skipped[name] = f"{type(err).__name__}: {err}"
            del methods[name]
    print(f"- methods: {', '.join(methods)}" + (f"; skipped: {skipped}" if skipped else ""))
    print(f"- kwargs: update_every={UPDATE_EVERY} where accepted, defaults otherwise; total_steps={TOTAL_STEPS}; "
          f"SGD lr 0.01, momentum 0.9, Nesterov, wd 5e-4")
    print()

    print(f"## (a) step time / dense step time, {WINDOW}-step windows, update_every={UPDATE_EVERY}")
    print()
    print("Decomposed: step = forward+backward (t_fb, the same for dense and sparse: the engine has no forward or "
          "backward hooks) + optimizer.step() (engine hooks and updates run there). Dense and sparse runs step "
          "alternately. Window time = sum over the window's steps of the per-step median (best: minimum) over "
          "rounds; ratio = (t_fb + sparse) / (t_fb + dense) per step, amortised over the window; per-round: "
          "median (min-max) of the rounds' own ratios.")
    chosen = args.models.split(",") if args.models else [m[0] for m in OVERHEAD_MODELS] + UPDATE_MODELS
    for model_name, bs, shape, target in [m for m in OVERHEAD_MODELS if m[0] in chosen]:
        res, fb = overhead(model_name, bs, shape, methods, cfg["rounds"][model_name], cfg["fb_reps"][model_name],
                           cfg["budget"][model_name])
        summ = {m: summarise(r, fb) for m, r in res.items()}
        print()
        print(f"### {model_name}, batch {bs}: t_fb = {statistics.median(fb) * 1e3:.1f} ms median, "
              f"{min(fb) * 1e3:.1f} ms best ({len(fb)} samples); {next(iter(summ.values()))['rounds']} rounds; "
              f"target ratio <= {target}")
        print()
        print(table(*_overhead_rows(res, summ, target, with_updates=True)))
        sys.stdout.flush()

    if cfg["e2e_rounds"][1] and "mlp" in chosen and not args.skip_e2e:
        model_name, bs, shape, target = OVERHEAD_MODELS[1]
        res, _ = overhead(model_name, bs, shape, methods, cfg["e2e_rounds"], 0, cfg["budget"]["e2e"],
                          end_to_end=True)
        summ = {m: summarise(r, []) for m, r in res.items()}
        print()
        print(f"### {model_name}, batch {bs}, end to end (zero_grad + forward + backward + step timed together); "
              f"{next(iter(summ.values()))['rounds']} rounds; target ratio <= {target}")
        print()
        header, rows = _overhead_rows(res, summ, target, with_updates=False)
        print(table([h.replace("opt.step ", "step ") for h in header], rows))
        sys.stdout.flush()

    print()
    print("## (b) one RigL topology update (drop + grow), density 0.1, uniform, dense first layer")
    print()
    rigl_scheduler, rigl_note = import_rigl_torch()
    print(f"- ours: optimizer.step() at an update step minus at an ordinary step; theirs: {rigl_note}, "
          "RigLScheduler._rigl_step()")
    print()
    rows = []
    for model_name in [m for m in UPDATE_MODELS if m in chosen]:
        r = update_cost(model_name, cfg["update_reps"][model_name], rigl_scheduler)
        ours_best = min(r["due"]) - min(r["plain"])
        cells = [model_name, f"{r['weights'] / 1e6:.2f}M / {r['layers']}", fmt(r["plain"], 1e3, 1),
                 fmt(r["ours"], 1e3, 1), f"{ours_best * 1e3:.1f}"]
        if r["theirs"]:
            speed_med = statistics.median(r["theirs"]) / statistics.median(r["ours"])
            speed_best = min(r["theirs"]) / ours_best
            verdict = ("met" if min(speed_med, speed_best) >= 5 else
                       "MISSED" if max(speed_med, speed_best) < 5 else "mixed")
            cells += [fmt(r["theirs"], 1e3, 1), f"{min(r['theirs']) * 1e3:.1f}", f"{speed_med:.1f}x",
                      f"{speed_best:.1f}x", verdict]
        else:
            cells += ["n/a"] * 5
        rows.append(cells)
        sys.stdout.flush()
    reps = ", ".join(f"{m} {cfg['update_reps'][m]}" for m in UPDATE_MODELS if m in chosen)
    print(f"repetitions: {reps}; median (min-max); best = minimum (ours: best update step "
          "minus best ordinary step)")
    print()
    print(table(["model", "weights / layers", "ordinary step ms", "ours: update ms", "ours: best",
                 "rigl-torch: update ms", "rigl-torch: best", "speedup (medians)", "speedup (best)",
                 "target >= 5x"], rows))
    print()
    print(f"total time {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    sys.exit(main())
