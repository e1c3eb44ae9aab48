"""Side by side with the peers: rigl-torch and torch.nn.utils.prune against our rigl, RigLScheduler and gmp.

    python benchmarks/peers.py             # MNIST-1D, 90 % sparsity, 3 seeds (a few minutes)
    python benchmarks/peers.py --quick     # smoke run: tiny data, 1 seed, 2 epochs

One process trains every variant in lockstep on the same batches (same data,
seed, model, optimizer, LR schedule and budget as ``benchmarks/accuracy.py``:
MNIST-1D, 1D CNN of width 24, 30 epochs at batch 128, SGD 0.1 Nesterov, wd
5e-4, cosine LR). At every step the variants run in a shuffled order, so load
drift on a shared machine hits them alike. Variants:

- ``dense``: the reference.
- RigL at density 0.1, uniform with the first layer dense, linear layers
  sparse, an update every 20 steps until 75 % of training, drop fraction 0.3:
  ``rigl-torch`` (its own ``RigLScheduler``, 0.5.2, torchvision stubbed as in
  overhead.py), ``ours: RigLScheduler`` (``sparsetrain.RigLScheduler``, the
  drop-in: same arguments, same ``if pruner(): optimizer.step()`` loop) and
  ``ours: rigl`` (``sparsetrain.attach(..., "rigl")``, the update after the
  optimizer step).
- gradual magnitude pruning to density 0.1 from dense on our ``gmp`` cadence
  and cubic schedule (an event every 20 steps until 68.75 % of training):
  ``torch prune global`` (``prune.global_unstructured`` with L1) against our
  ``gmp`` (global), and ``torch prune local`` (``prune.l1_unstructured`` per
  layer, each layer to our ``gmp_uniform``'s per-layer target) against
  ``gmp_uniform``. The torch variants prune at exactly the steps and to
  exactly the counts our schedule gives (the increment over the weights still
  unpruned, as ``torch.nn.utils.prune`` counts amounts).

Measured per variant: final test accuracy (mean ± std over seeds), final
density over the conv / linear weights (counted nonzeros), the step time
(zero_grad + forward + backward + sparsity work + optimizer step; median over
all steps and seeds, with min and max of the per-seed medians) and its ratio to
dense, the time of one topology update (schedulers: the ``pruner()`` call that
updates; torch prune: the pruning call; ``attach``: the engine's update inside
``optimizer.step()``, timed by wrapping ``Sparsifier._run``), and the bytes of
``torch.save`` of what resuming needs (the model's ``state_dict`` plus the
sparsifier's or scheduler's; torch prune keeps ``weight_orig`` and
``weight_mask`` in the model's), also for ResNet-20 and ResNet-18 right after
set-up, where pickling overheads no longer dominate.

rigl-torch sparsifies the weight of every module but ``BatchNorm2d``, so on
this 1D CNN it also prunes the ``BatchNorm1d`` scales to 10 %: the variant
``rigl-torch`` is what its users get; ``rigl-torch, BatchNorm1d excluded``
patches its exclusion list for the set-up only, to compare the algorithms.
"""

from __future__ import annotations

import argparse
import io
import random
import statistics
import sys
import time
import types
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from common import HERE, fmt_stats, machine_info, mean_std, pyplot, table, write_section
from torch import nn
from torch.nn.utils import prune

import sparsetrain

DENSITY = 0.1
UPDATE_EVERY = 20
RIGL_END = 0.75
FULL = {"epochs": 30, "seeds": 3, "num_samples": 5000}
QUICK = {"epochs": 2, "seeds": 1, "num_samples": 600}
#: (ours, theirs) pairs of the summary table
PAIRS = [("ours: rigl", "rigl-torch"), ("ours: RigLScheduler", "rigl-torch"),
         ("ours: rigl", "rigl-torch, BatchNorm1d excluded"),
         ("ours: RigLScheduler", "rigl-torch, BatchNorm1d excluded"),
         ("ours: gmp", "torch prune global"), ("ours: gmp_uniform", "torch prune local")]


def import_rigl_torch():
    """rigl-torch's RigLScheduler (torchvision stubbed where it cannot be imported), or None and why."""
    sys.path.insert(0, str(HERE))
    from overhead import import_rigl_torch as load
    return load()


def sparse_weights(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The conv / linear modules whose weights every variant sparsifies."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear))]


def weight_density(model: nn.Module) -> float:
    """Nonzeros over all conv / linear weights (the effective weight, also under torch prune)."""
    ws = [m.weight for _, m in sparse_weights(model)]
    return sum(int(torch.count_nonzero(w)) for w in ws) / sum(w.numel() for w in ws)


def ckpt_bytes(obj) -> int:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.tell()


# ---------------------------------------------------------------------------- variants
class Variant:
    """One training run: ``step(x, y)`` and the timings it gathers."""

    def __init__(self, name: str, model: nn.Module, cfg: dict, total: int, spe: int) -> None:
        from sparsetrain.train.loop import build_lr_schedule, build_optimizer
        self.name, self.model, self.total = name, model, total
        self.opt = build_optimizer(cfg, model)
        self.lr = build_lr_schedule(cfg, self.opt, total, spe)
        self.steps, self.updates, self.t = [], [], 0

    def step(self, x: torch.Tensor, y: torch.Tensor) -> None:
        t0 = time.perf_counter()
        self.opt.zero_grad(set_to_none=True)
        F.cross_entropy(self.model(x), y).backward()
        updated, spent = self.sparse_step()
        elapsed = time.perf_counter() - t0
        with warnings.catch_warnings():  # rigl-torch's loop skips optimizer.step() at updates: torch warns
            warnings.simplefilter("ignore", UserWarning)
            self.lr.step()
        self.t += 1
        self.steps.append(elapsed)
        if updated:
            self.updates.append(spent if spent is not None else elapsed)

    def sparse_step(self) -> tuple[bool, float | None]:
        """Optimizer step and sparsity work; (was there a topology update, its own time if known)."""
        self.opt.step()
        return False, None

    def update_times(self) -> list[float]:
        return self.updates

    def state(self) -> dict:
        return {"model": self.model.state_dict()}


class Attached(Variant):
    """``sparsetrain.attach``: the update runs inside ``optimizer.step()``."""

    def __init__(self, name, model, cfg, total, spe, method: str, **kwargs) -> None:
        super().__init__(name, model, cfg, total, spe)
        self.sp = sparsetrain.attach(model, self.opt, method, total_steps=total, seed=cfg["seed"], **kwargs)
        self.spent = 0.0
        run = self.sp._run  # the engine's update (ops, re-masking, bookkeeping): timed in place

        def timed_run(updates) -> None:
            t0 = time.perf_counter()
            run(updates)
            self.spent = time.perf_counter() - t0
        self.sp._run = timed_run

    def sparse_step(self):
        n = len(self.sp.history)
        self.opt.step()
        return len(self.sp.history) > n, self.spent

    def state(self):
        return {"model": self.model.state_dict(), "sparsifier": self.sp.state_dict()}


class Scheduler(Variant):
    """rigl-torch's loop: ``if pruner(): optimizer.step()``; the update replaces the step."""

    def __init__(self, name, model, cfg, total, spe, cls, exclude_bn1d: bool = False) -> None:
        super().__init__(name, model, cfg, total, spe)
        util = sys.modules.get("rigl_torch.util")
        excluded = getattr(util, "EXCLUDED_TYPES", None)
        if exclude_bn1d:  # rigl-torch sparsifies every module with a weight but BatchNorm2d
            util.EXCLUDED_TYPES = (*excluded, nn.BatchNorm1d)
        try:
            self.pruner = cls(model, self.opt, dense_allocation=DENSITY, T_end=int(RIGL_END * total),
                              delta=UPDATE_EVERY, alpha=0.3, sparsity_distribution="uniform",
                              ignore_linear_layers=False)
        finally:
            if exclude_bn1d:
                util.EXCLUDED_TYPES = excluded

    def sparse_step(self):
        before = self.pruner.rigl_steps
        t0 = time.perf_counter()
        if self.pruner():
            self.opt.step()
        return self.pruner.rigl_steps > before, time.perf_counter() - t0

    def state(self):
        return {"model": self.model.state_dict(), "pruner": self.pruner.state_dict()}


class TorchPrune(Variant):
    """``torch.nn.utils.prune`` on our gmp schedule: global L1 or per-layer L1 to our per-layer targets."""

    def __init__(self, name, model, cfg, total, spe, scope: str) -> None:
        super().__init__(name, model, cfg, total, spe)
        from sparsetrain.methods import create_method
        from sparsetrain.methods.gmp import GRANET_END, classifier_rule
        from sparsetrain.schedules import gmp_density
        self.scope, self.modules = scope, sparse_weights(model)
        self.method = create_method("gmp", density=DENSITY, update_every=UPDATE_EVERY)
        self.schedule = gmp_density(1.0, DENSITY, 0.0, GRANET_END, UPDATE_EVERY)
        names = [f"{n}.weight" for n, _ in self.modules]
        shapes = {f"{n}.weight": m.weight.shape for n, m in self.modules}
        rule = classifier_rule(None, DENSITY)
        self.layer_rule = lambda d: rule(types.SimpleNamespace(names=names, shapes=shapes), d)

    def _pruned(self, m: nn.Module) -> int:
        return int((m.weight_mask == 0).sum()) if hasattr(m, "weight_mask") else 0

    def _prune_to(self, density: float) -> None:
        if self.scope == "global":
            total = sum(m.weight.numel() for _, m in self.modules)
            amount = (total - int(density * total)) - sum(self._pruned(m) for _, m in self.modules)
            if amount > 0:
                prune.global_unstructured([(m, "weight") for _, m in self.modules], prune.L1Unstructured,
                                          amount=amount)
            return
        for n, d in self.layer_rule(density).items():
            m = dict(self.modules)[n.rsplit(".", 1)[0]]
            amount = (m.weight.numel() - int(d * m.weight.numel())) - self._pruned(m)
            if amount > 0:
                prune.l1_unstructured(m, "weight", amount=amount)

    def sparse_step(self):
        self.opt.step()
        step = self.t + 1  # what the engine's cadence sees after this optimizer step
        if not self.method.due(step, self.total):
            return False, None
        t0 = time.perf_counter()
        self._prune_to(self.schedule(step, self.total))
        return True, time.perf_counter() - t0


def build_variants(cfg: dict, total: int, spe: int, num_classes: int, rigl_torch, only: str) -> list[Variant]:
    """Every variant on a fresh copy of the same initial model (seeded)."""
    from sparsetrain.train.models import create_model

    def model() -> nn.Module:
        torch.manual_seed(cfg["seed"])
        return create_model("cnn1d", num_classes=num_classes, width=24).to(cfg["device"])

    rigl_kwargs = dict(density=DENSITY, distribution="uniform", dense_first=True, update_every=UPDATE_EVERY,
                       drop_fraction=0.3, end=RIGL_END)
    gmp_kwargs = dict(density=DENSITY, update_every=UPDATE_EVERY)
    makers = {
        "dense": lambda: Variant("dense", model(), cfg, total, spe),
        "ours: rigl": lambda: Attached("ours: rigl", model(), cfg, total, spe, "rigl", **rigl_kwargs),
        "ours: RigLScheduler": lambda: Scheduler("ours: RigLScheduler", model(), cfg, total, spe,
                                                 sparsetrain.RigLScheduler),
        "rigl-torch": lambda: Scheduler("rigl-torch", model(), cfg, total, spe, rigl_torch),
        "rigl-torch, BatchNorm1d excluded": lambda: Scheduler("rigl-torch, BatchNorm1d excluded", model(), cfg,
                                                              total, spe, rigl_torch, exclude_bn1d=True),
        "ours: gmp": lambda: Attached("ours: gmp", model(), cfg, total, spe, "gmp", **gmp_kwargs),
        "torch prune global": lambda: TorchPrune("torch prune global", model(), cfg, total, spe, "global"),
        "ours: gmp_uniform": lambda: Attached("ours: gmp_uniform", model(), cfg, total, spe, "gmp_uniform",
                                              **gmp_kwargs),
        "torch prune local": lambda: TorchPrune("torch prune local", model(), cfg, total, spe, "local"),
    }
    if rigl_torch is None:
        del makers["rigl-torch"], makers["rigl-torch, BatchNorm1d excluded"]
    import fnmatch
    return [make() for name, make in makers.items() if name == "dense" or any(
        fnmatch.fnmatchcase(name, p.strip()) for p in only.split(","))]


def train_seed(seed: int, epochs: int, num_samples: int, device: str, rigl_torch, only: str) -> dict[str, dict]:
    """All variants in lockstep for one seed; per variant: accuracy, density, times, checkpoint bytes."""
    from sparsetrain.train.config import DEFAULTS
    from sparsetrain.train.data import create_dataset
    from sparsetrain.train.loop import evaluate
    cfg = {**DEFAULTS, "seed": seed, "epochs": epochs, "device": device}
    splits = create_dataset("mnist1d", num_samples=num_samples)
    xs, ys = splits.train.tensors
    bs = cfg["batch_size"]
    spe = len(xs) // bs
    total = spe * epochs
    variants = build_variants(cfg, total, spe, splits.num_classes, rigl_torch, only)
    g = torch.Generator().manual_seed(seed)
    order = random.Random(seed)
    for _ in range(epochs):
        perm = torch.randperm(len(xs), generator=g)
        for i in range(spe):
            idx = perm[i * bs:(i + 1) * bs]
            x, y = xs[idx].to(device), ys[idx].to(device)
            for v in order.sample(variants, len(variants)):
                v.model.train()
                v.step(x, y)
    loader = torch.utils.data.DataLoader(splits.test, batch_size=1000)
    out = {}
    for v in variants:
        acc, _ = evaluate(v.model, loader, torch.device(device))
        out[v.name] = {"acc": acc, "density": weight_density(v.model), "step": statistics.median(v.steps),
                       "updates": v.update_times(), "ckpt": ckpt_bytes(v.state())}
    return out


def checkpoint_sizes(model_names: list[str], rigl_torch) -> str:
    """Bytes of what resuming needs, right after set-up at density 0.1 (no training), per approach."""
    from sparsetrain.train.models import create_model
    rows = []
    for name in model_names:
        def fresh(name: str = name) -> tuple[nn.Module, torch.optim.Optimizer]:
            torch.manual_seed(0)
            model = create_model(name, **({"width": 24} if name == "cnn1d" else {}))
            return model, torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        model, _ = fresh()
        dense = ckpt_bytes({"model": model.state_dict()})
        sizes = {}
        model, opt = fresh()
        sp = sparsetrain.attach(model, opt, "rigl", density=DENSITY, total_steps=1000, distribution="uniform",
                                dense_first=True)
        sizes["ours: attach (rigl)"] = ckpt_bytes({"model": model.state_dict(), "sparsifier": sp.state_dict()})
        sp.detach()
        for label, cls in (("ours: RigLScheduler", sparsetrain.RigLScheduler), ("rigl-torch", rigl_torch)):
            if cls is None:
                continue
            model, opt = fresh()
            pruner = cls(model, opt, dense_allocation=DENSITY, T_end=750, ignore_linear_layers=False)
            sizes[label] = ckpt_bytes({"model": model.state_dict(), "pruner": pruner.state_dict()})
        model, _ = fresh()
        mods = sparse_weights(model)
        prune.global_unstructured([(m, "weight") for _, m in mods], prune.L1Unstructured, amount=1 - DENSITY)
        sizes["torch prune (weight_orig + weight_mask)"] = ckpt_bytes({"model": model.state_dict()})
        for _, m in mods:
            prune.remove(m, "weight")
        sizes["torch prune after prune.remove (cannot resume)"] = ckpt_bytes({"model": model.state_dict()})
        weights = sum(m.weight.numel() for _, m in mods)
        rows += [[name, f"{weights / 1e6:.3f}M", label, f"{b / 2**20:.3f}", f"{b / dense:.3f}"]
                 for label, b in [("dense", dense), *sizes.items()]]
    return table(["model", "conv/linear weights", "what is saved", "MiB", "x dense"], rows)


# ---------------------------------------------------------------------------- report
def merge(per_seed: list[dict[str, dict]]) -> dict[str, dict]:
    names = list(per_seed[0])
    return {n: {"acc": [s[n]["acc"] for s in per_seed], "density": statistics.mean(s[n]["density"] for s in per_seed),
                "step": [s[n]["step"] for s in per_seed], "updates": [u for s in per_seed for u in s[n]["updates"]],
                "ckpt": per_seed[0][n]["ckpt"]} for n in names}


def variant_table(res: dict[str, dict]) -> str:
    dense_step = statistics.median(res["dense"]["step"])
    dense_ckpt = res["dense"]["ckpt"]
    rows = []
    for n, r in res.items():
        rows.append([n, f"{r['density']:.4f}", mean_std(r["acc"]), fmt_stats(r["step"], 1e3, 2),
                     f"{statistics.median(r['step']) / dense_step:.3f}",
                     fmt_stats(r["updates"], 1e3, 2) if r["updates"] else "-", str(len(r["updates"])),
                     f"{r['ckpt'] / 1024:.1f}", f"{r['ckpt'] / dense_ckpt:.2f}"])
    return table(["variant", "final density", "test acc % (mean ± std)", "step ms: median (min-max over seeds)",
                  "step / dense", "update ms: median (min-max)", "updates (all seeds)", "checkpoint KiB",
                  "checkpoint / dense"], rows)


def pair_table(res: dict[str, dict]) -> str:
    rows = []
    for ours, theirs in PAIRS:
        if ours not in res or theirs not in res:
            continue
        a, b = res[ours], res[theirs]
        upd = (f"{statistics.median(b['updates']) / statistics.median(a['updates']):.1f}x"
               if a["updates"] and b["updates"] and statistics.median(a["updates"]) > 0 else "n/a")
        rows.append([f"{ours} vs {theirs}",
                     f"{100 * (statistics.mean(a['acc']) - statistics.mean(b['acc'])):+.2f}",
                     f"{statistics.median(a['step']) / statistics.median(b['step']):.3f}", upd,
                     f"{a['ckpt'] / b['ckpt']:.2f}"])
    return table(["ours vs theirs", "accuracy difference (points, ours - theirs)", "step time ratio (ours / theirs)",
                  "update speed-up (theirs / ours, medians)", "checkpoint size ratio (ours / theirs)"], rows)


def plot(res: dict[str, dict], path: Path) -> Path | None:
    plt = pyplot()
    if plt is None:
        return None
    names = list(res)
    dense_step = statistics.median(res["dense"]["step"])
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    colours = ["C0" if n.startswith("ours") else "gray" if n == "dense" else "C3" for n in names]
    axes[0].bar(names, [100 * statistics.mean(res[n]["acc"]) for n in names], color=colours,
                yerr=[100 * (statistics.stdev(res[n]["acc"]) if len(res[n]["acc"]) > 1 else 0) for n in names],
                capsize=3)
    axes[0].set(ylabel="test accuracy (%)", title="accuracy (mean ± std over seeds)")
    axes[1].bar(names, [statistics.median(res[n]["step"]) / dense_step for n in names], color=colours)
    axes[1].axhline(1.0, color="k", linestyle=":")
    axes[1].set(ylabel="step time / dense", title="training step time")
    axes[2].bar(names, [res[n]["ckpt"] / 1024 for n in names], color=colours)
    axes[2].set(ylabel="KiB", title="checkpoint size (torch.save)")
    for ax in axes:
        ax.tick_params(axis="x", labelrotation=45, labelsize=7)
        for label in ax.get_xticklabels():
            label.set_horizontalalignment("right")
    fig.suptitle(f"MNIST-1D, 1D CNN, density {DENSITY}: ours (blue) vs peers (red)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny data, 1 seed, 2 epochs")
    parser.add_argument("--seeds", type=int, default=None)
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--device", default="cpu", help="cpu, cuda, ...")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--variants", default="*", help="globs over the variant names (dense always runs)")
    parser.add_argument("--results", default=None, help="Markdown file for the section (default RESULTS.md; "
                        "--quick: none)")
    parser.add_argument("--plot", default=None, help="PNG path (default benchmarks/peers.png; --quick: none)")
    args = parser.parse_args(argv)
    cfg = QUICK if args.quick else FULL
    seeds, epochs = args.seeds or cfg["seeds"], args.epochs or cfg["epochs"]
    torch.set_num_threads(args.threads)
    rigl_torch, note = import_rigl_torch()
    print("# peers" + (" (--quick)" if args.quick else ""))
    header = machine_info(args.device) + [f"rigl-torch: {note}", f"seeds 0..{seeds - 1} (the repeats), {epochs} "
                                          f"epochs, MNIST-1D {cfg['num_samples']} samples, density {DENSITY}"]
    for line in header:
        print(f"- {line}", flush=True)
    start = time.perf_counter()
    per_seed = []
    for seed in range(seeds):
        per_seed.append(train_seed(seed, epochs, cfg["num_samples"], args.device, rigl_torch, args.variants))
        print(f"seed {seed} done ({time.perf_counter() - start:.0f} s)", flush=True)
    res = merge(per_seed)
    command = "python benchmarks/peers.py" + (" " + " ".join(argv if argv is not None else sys.argv[1:])).rstrip()
    body = "\n".join([f"```\n{command.strip()}\n```", "", *[f"- {line}" for line in header],
                      f"- {(time.perf_counter() - start) / 60:.1f} min in all", "", variant_table(res), "",
                      pair_table(res), "", "Checkpoint bytes at density 0.1 right after set-up, by model size "
                      "(model state_dict plus the sparsifier's / scheduler's state; dense = the model alone):", "",
                      checkpoint_sizes(["cnn1d", "resnet20", "resnet18"] if not args.quick else ["cnn1d"], rigl_torch),
                      ""])
    print("\n" + body)
    png = Path(args.plot) if args.plot else (None if args.quick else HERE / "peers.png")
    written = plot(res, png) if png else None
    results = args.results or (None if args.quick else str(HERE / "RESULTS.md"))
    if results:
        picture = f"\n![ours vs peers]({png.name})\n" if written else ""
        title = "## Side by side with rigl-torch and torch.nn.utils.prune (issue 7)"
        write_section("peers", f"{title}\n\n{body}{picture}", results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
