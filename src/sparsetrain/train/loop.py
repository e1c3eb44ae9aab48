"""The reference trainer: flat and readable (nanoGPT / airbench style), outside the core.

One call of :func:`train` = one run folder (see :mod:`sparsetrain.train.run`).
The only sparsity line is ``sparsetrain.attach``; everything else is a plain
PyTorch loop, with DistributedDataParallel when launched by ``torchrun``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler

import sparsetrain
from sparsetrain import distributed as tdist
from sparsetrain.errors import SparsetrainError
from sparsetrain.methods import Method, method_signature
from sparsetrain.schedules.lr import lr_schedule
from sparsetrain.train.config import EPOCH_KEYS, builder_kwargs
from sparsetrain.train.data import create_dataset
from sparsetrain.train.epoch import on_device, train_epoch
from sparsetrain.train.models import create_model, input_kwargs
from sparsetrain.train.run import RunLogger
from sparsetrain.train.tasks import Task, evaluate, get_task


class NonFiniteLoss(SparsetrainError):
    """The loss became NaN or inf; the last good checkpoint is kept."""


def seed_everything(seed: int, deterministic: bool) -> None:
    """Seed torch's global RNG and, if asked, make kernels deterministic."""
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


def build_optimizer(cfg: dict, model: nn.Module) -> torch.optim.Optimizer:
    """SGD / Adam / AdamW from ``cfg["optim"]``; weight decay on every parameter (as the seeds do)."""
    o = dict(cfg["optim"])
    name = o.pop("name").lower()
    if name == "sgd":
        return torch.optim.SGD(model.parameters(), lr=o["lr"], momentum=o["momentum"],
                               nesterov=bool(o["nesterov"]) and o["momentum"] > 0, weight_decay=o["weight_decay"])
    if name in ("adam", "adamw"):
        cls = torch.optim.Adam if name == "adam" else torch.optim.AdamW
        return cls(model.parameters(), lr=o["lr"], weight_decay=o["weight_decay"])
    raise SparsetrainError(f"unknown optimizer {name!r}. Choices: sgd, adam, adamw.")


def build_lr_schedule(cfg: dict, optimizer, total_steps: int, steps_per_epoch: int):
    """Per-step LR multiplier from ``cfg["schedule"]`` (:func:`sparsetrain.schedules.lr_schedule`):
    cosine, multistep (milestones as fractions of training), onecycle or constant, with optional
    linear warm-up epochs."""
    s = cfg["schedule"]
    factor = lr_schedule(s["name"], milestones=[int(m * total_steps) for m in s.get("milestones", [])],
                         gamma=s.get("gamma", 0.1), warmup=int(s.get("warmup_epochs", 0) * steps_per_epoch))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: factor(step, total_steps))


def calibration(loader: DataLoader, device: torch.device) -> dict[str, Any]:
    """What methods that look at the model or the data before training may read:
    an example input (Chase traces the channel graph with it) and the training
    batches with the loss (SNIP and GraSP score weights on them). Batches are
    drawn lazily, so methods that do not read them cost nothing.
    """
    def batches():
        for x, y in loader:
            yield x.to(device), y.to(device)
    dataset = loader.dataset  # items, not a loader iterator: that would draw from the global RNG
    example = torch.utils.data.default_collate([dataset[i] for i in range(min(2, len(dataset)))])[0].to(device)
    return {"example_input": example, "data": batches(), "loss_fn": Task.loss}


def method_kwargs(cfg: dict, steps_per_epoch: int) -> dict[str, Any]:
    """The method's arguments; ``steps_per_epoch`` is filled in for methods that take it (e.g. snfs),
    and ``start_epoch`` / ``end_epoch`` (GraNet's --init-prune-epoch / --final-prune-epoch) become
    the fractions ``start`` / ``end`` of the run.

    Example:
        >>> cfg = {"epochs": 160, "method": {"name": "granet", "end_epoch": 110}}
        >>> method_kwargs(cfg, 450)["end"]
        0.6875
    """
    kwargs = builder_kwargs(cfg, "method")
    for key in EPOCH_KEYS:
        if f"{key}_epoch" in kwargs:
            kwargs[key] = kwargs.pop(f"{key}_epoch") / cfg["epochs"]
    params = method_signature(cfg["method"]["name"]).parameters
    if "steps_per_epoch" in params and kwargs.get("steps_per_epoch") is None and not kwargs.get("update_every"):
        kwargs["steps_per_epoch"] = steps_per_epoch
    return kwargs


def _loaders(cfg: dict, splits, world: int, rank: int):
    if cfg["batch_size"] % world:
        raise SparsetrainError(f"batch_size {cfg['batch_size']} must divide evenly over {world} processes.")
    # The same sampler in 1 and N processes: global batch i is the same samples either way.
    sampler = DistributedSampler(splits.train, num_replicas=world, rank=rank, shuffle=True, seed=cfg["seed"],
                                 drop_last=True)
    train = DataLoader(splits.train, batch_size=cfg["batch_size"] // world, sampler=sampler, drop_last=True)
    if len(train) == 0:
        raise SparsetrainError(f"the training set ({len(splits.train)} samples) is smaller than one batch "
                               f"({cfg['batch_size']}); lower batch_size.")
    evals = {name: DataLoader(ds, batch_size=cfg["eval_batch_size"])
             for name, ds in (("val", splits.val), ("test", splits.test)) if ds is not None}
    return sampler, train, evals


def train(cfg: dict, run_dir: str | Path, resume: bool = False, method: Method | None = None) -> dict[str, Any]:
    """Train one configuration into ``run_dir``; returns the summary dict.

    Args:
        cfg: a loaded config (:func:`sparsetrain.train.config.load_config`).
        run_dir: the run folder.
        resume: continue from the folder's checkpoint.
        method: a :class:`~sparsetrain.methods.Method` built by the caller (a
            procedure's own, such as an IMP round) instead of the registered
            method ``cfg["method"]["name"]``; ``cfg["method"]`` then only
            records it, and its ``name`` and ``config`` are checked on resume.

    Example (CLI): ``sparsetrain train --method.name rigl --method.density 0.05``.
    """
    world, rank, device = tdist.setup(cfg["device"])
    if cfg["threads"]:
        torch.set_num_threads(int(cfg["threads"]))
    seed_everything(cfg["seed"], cfg["deterministic"])
    splits = create_dataset(cfg["data"]["name"], root=cfg["data"]["root"], seed=cfg["seed"],
                            val_fraction=cfg["data"]["val_fraction"], augment=cfg["data"]["augment"],
                            **builder_kwargs(cfg, "data"))
    sampler, train_loader, eval_loaders = _loaders(cfg, splits, world, rank)
    steps_per_epoch = len(train_loader)
    total_steps = cfg["epochs"] * steps_per_epoch

    task = get_task(splits.task)
    model = create_model(cfg["model"]["name"], num_classes=splits.num_classes,
                         **input_kwargs(cfg["model"]["name"], splits.input_shape, builder_kwargs(cfg, "model")),
                         **builder_kwargs(cfg, "model"))
    if resume:  # a run shrunk while it trained continues at its narrowed widths
        apply_saved_widths(model, run_dir)
    model = model.to(device)
    optimizer = build_optimizer(cfg, model)
    lr_schedule = build_lr_schedule(cfg, optimizer, total_steps, steps_per_epoch)
    sparsifier = None
    if method is None and cfg["method"]["name"] == "dense" and cfg["method"].get("shrink"):
        raise SparsetrainError("method.shrink narrows a model as a sparse method removes channels; a dense run has "
                               "nothing to shrink. Use --method.name chase (or drop --method.shrink).")
    if method is not None or cfg["method"]["name"] != "dense":
        chosen = (method, {}) if method is not None else (cfg["method"]["name"], method_kwargs(cfg, steps_per_epoch))
        sparsifier = sparsetrain.attach(model, optimizer, chosen[0], total_steps=total_steps, seed=cfg["seed"],
                                        **cfg["sparsity"], **chosen[1], **calibration(train_loader, device),
                                        **shrink_kwargs(cfg))
    net = tdist.wrap(model, device)

    data_info = {"num_classes": splits.num_classes, "input_shape": list(splits.input_shape), "task": task.name}
    log = RunLogger(run_dir, cfg, rank=rank, resume=resume, data_info=data_info)
    # iterating a DataLoader draws its base seed from the global RNG: do it before the restore, which
    # must be the last thing before the first batch (a resumed run would otherwise drift from one that never stopped)
    example = next(iter(eval_loaders["test"]))[0][:1].to(device)
    start_epoch = 0
    if resume:
        start_epoch = log.restore(model, optimizer, lr_schedule, sparsifier)
        if sparsifier is not None and sparsifier.ctx.total_steps != total_steps:
            raise SparsetrainError(f"cannot resume with a different length of training ({total_steps} steps now, "
                                   f"{sparsifier.ctx.total_steps} in the checkpoint): the method's schedules "
                                   "depend on it. Keep epochs, batch_size and the data as they were.")
    started = time.perf_counter() - log.elapsed
    for epoch in range(start_epoch, cfg["epochs"]):
        sampler.set_epoch(epoch)
        net.train()
        epoch_start = time.perf_counter()

        def batches(epoch: int = epoch):
            for seen, (x, y) in enumerate(on_device(log.progress(train_loader, epoch), device)):
                yield (x if splits.augment is None else splits.augment(x, epoch * steps_per_epoch + seen)), y

        def loss_fn(out, y, epoch: int = epoch):
            loss = task.loss(out, y, label_smoothing=cfg["label_smoothing"])
            if not torch.isfinite(loss):
                kept = (f"the last good checkpoint in {run_dir} is kept" if (Path(run_dir) / "checkpoint.pt").is_file()
                        else "no checkpoint had been written yet")
                raise NonFiniteLoss(f"loss became {loss.item()} at epoch {epoch + 1}; the run stopped and {kept}. "
                                    "Lower optim.lr or check the data.")
            return loss

        def after_step():
            nonlocal net
            if net is not model and just_shrunk(sparsifier):  # DDP's buckets hold the old widths: wrap again
                net = tdist.wrap(model, device)
            lr_schedule.step()
            log.update_events(sparsifier)

        totals = train_epoch(lambda x: net(x), loss_fn, optimizer, batches(), after_step=after_step)
        step_time = (time.perf_counter() - epoch_start) / max(1, totals.batches)
        loss_sum, correct, count = tdist.all_reduce_sum([totals.loss_sum, totals.correct, totals.labels])
        metrics = {"epoch": epoch + 1, "step": (epoch + 1) * steps_per_epoch,
                   "train_loss": loss_sum / max(1, count), "train_acc": correct / max(1, count),
                   "lr": optimizer.param_groups[0]["lr"], "time": time.perf_counter() - started,
                   "step_time": step_time, "samples_per_s": cfg["batch_size"] / step_time,
                   "parameters": sum(p.numel() for p in model.parameters())}
        for name, loader in eval_loaders.items():
            metrics.update(task.report(name, *evaluate(model, loader, device)))
        if sparsifier is not None:
            metrics.update(density=sparsifier.density(), itop_rate=sparsifier.itop_rate())
        log.end_epoch(metrics, model, optimizer, lr_schedule, sparsifier)
    summary = log.finish(model, sparsifier, example, time.perf_counter() - started)
    tdist.teardown()
    return summary


def shrink_kwargs(cfg: dict) -> dict[str, Any]:
    """``--method.shrink true`` / ``--method.shrink_every N``: narrow the model while it trains.

    Example:
        >>> shrink_kwargs({"method": {"name": "chase", "shrink": True}})
        {'shrink': True}
    """
    method = cfg["method"]
    out = {"shrink": method["shrink"]} if method.get("shrink") else {}
    if method.get("shrink_every") is not None:
        out["shrink_every"] = method["shrink_every"]
    return out


def just_shrunk(sparsifier) -> bool:
    """Whether the optimizer step that just ran narrowed the model."""
    last = sparsifier.history[-1] if sparsifier is not None else {}
    return bool(last.get("shrunk")) and last["step"] == sparsifier.step_count


def apply_saved_widths(model: nn.Module, run_dir: str | Path) -> None:
    """Narrow a freshly built model to the widths its checkpoint was saved at (a run shrunk while training)."""
    from sparsetrain.deploy.widths import apply_widths
    from sparsetrain.train.checkpoint import load_checkpoint
    path = Path(run_dir) / "checkpoint.pt"
    if not path.is_file():
        return  # restore() says what is missing
    spec = (load_checkpoint(path).get("sparsifier") or {}).get("width_spec")
    if spec and spec.get("widths"):
        apply_widths(model, spec)


__all__ = ["NonFiniteLoss", "build_lr_schedule", "build_optimizer", "evaluate", "train"]
