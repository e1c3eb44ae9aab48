"""Weight training under a given mask, through the ordinary engine (docs/algorithms.md, "Rare Gems / Gem-Miner and
edge-popup", ``finetune``).

The procedures (Gem-Miner, and any procedure that finds a mask first) hand
their mask to :func:`given_masks`, a :class:`~sparsetrain.Method` whose init
installs it and which never updates it; ``sparsetrain.attach`` then keeps the
inactive weights exactly zero with clean optimizer state (docs/concepts.md, "Guarantees").
Rare Gems applies the mask in the forward pass (w * m), so pruned weights get no
gradient; masking gradients and weights after each step gives the same training.

Example:
    >>> import torch
    >>> net = torch.nn.Linear(4, 2)
    >>> mask = {"weight": torch.tensor([[True, False, False, False], [False, True, True, False]])}
    >>> opt = torch.optim.SGD(net.parameters(), lr=0.1)
    >>> sp = sparsetrain.attach(net, opt, given_masks(mask), total_steps=1, include=list(mask))
    >>> int((net.weight != 0).sum())
    3
"""

from __future__ import annotations

import time
from typing import Any

import torch
from torch import Tensor, nn

import sparsetrain
from sparsetrain.errors import SparsetrainError
from sparsetrain.methods import Method
from sparsetrain.ops.base import Op
from sparsetrain.procedures.gems_schedule import finetune_milestones
from sparsetrain.schedules.lr import lr_schedule
from sparsetrain.train.epoch import on_device, train_epoch
from sparsetrain.train.tasks import Task, evaluate


def given_masks(masks: dict[str, Tensor]) -> Method:
    """A fixed-mask method that starts from ``masks`` (``{param name: bool tensor}``)."""
    def run(ctx) -> dict:
        if set(ctx.params) != set(masks):
            raise SparsetrainError(f"the given masks name {sorted(masks)} but the selected parameters are "
                                   f"{sorted(ctx.params)}; pass include=list(masks) to attach().")
        for name, p in ctx.params.items():
            if masks[name].shape != p.shape:
                raise SparsetrainError(f"mask {name!r} has shape {tuple(masks[name].shape)}, the parameter "
                                       f"{tuple(p.shape)}.")
            ctx.masks[name] = masks[name].to(device=p.device, dtype=torch.bool).clone()
        return {"init": "given"}
    return Method(init=Op(run, name="given_masks"), name="given_masks")


def epoch_lr(policy: str, base: float, epoch: int, epochs: int, milestones: list[int], gamma: float) -> float:
    """The learning rate of a Rare Gems policy (``cosine_lr``, ``multistep_lr``, ``constant_lr``) for one epoch:
    ``base`` times the library's one LR schedule (:func:`sparsetrain.schedules.lr_schedule`) stepped per epoch.

    Example:
        >>> [round(epoch_lr("multistep", 0.01, e, 150, [80, 120], 0.1), 6) for e in (79, 80, 120)]
        [0.01, 0.001, 0.0001]
    """
    return base * lr_schedule(policy, milestones, gamma)(epoch, epochs)


def masked_accuracy(search, masks: dict[str, Tensor] | None, loader, device) -> float:
    """Test accuracy of the search's frozen weights under ``masks`` (None: the search forward)."""
    floats = None if masks is None else {n: m.float() for n, m in masks.items()}
    return evaluate(search.model, loader, device, forward=lambda x: search(x, floats))[0]


def layer_densities(masks: dict[str, Tensor]) -> dict[str, float]:
    """``{name: fraction active}``."""
    return {n: int(m.sum()) / m.numel() for n, m in masks.items()}


class MaskedTrainer:
    """Fine-tunes a plain model under a fixed mask with SGD and the per-epoch LR policy of the Gem-Miner config's
    ``gems.finetune_*`` keys (``schedule.gamma`` is the multistep factor, as for the score search).

    The epoch is the trainer's (:func:`sparsetrain.train.epoch.train_epoch`); the
    mask is kept by the ordinary engine (:func:`given_masks`).
    """

    def __init__(self, cfg: dict, loaders, log) -> None:
        self.cfg, self.loaders, self.log = cfg, loaders, log

    def run(self, model: nn.Module, masks: dict[str, Tensor], phase: str) -> dict[str, Any]:
        """Train ``model`` in place for ``gems.finetune_epochs``; returns the final test accuracy and time."""
        cfg, g, device = self.cfg, self.cfg["gems"], self.cfg["device"]
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.SGD(params, lr=g["finetune_lr"], momentum=g["finetune_momentum"],
                                    weight_decay=g["finetune_weight_decay"])
        epochs, milestones = g["finetune_epochs"], finetune_milestones(g)
        sparsifier = sparsetrain.attach(model, optimizer, given_masks(masks), include=list(masks),
                                        total_steps=epochs * len(self.loaders.train), seed=cfg["seed"])
        started, acc = time.perf_counter(), evaluate(model, self.loaders.test, device)[0]
        for epoch in range(epochs):
            lr = epoch_lr(g["finetune_lr_policy"], g["finetune_lr"], epoch, epochs, milestones,
                          cfg["schedule"]["gamma"])
            for group in optimizer.param_groups:
                group["lr"] = lr
            model.train()
            totals = train_epoch(model, Task.loss, optimizer, on_device(self.loaders.train, device))
            acc = evaluate(model, self.loaders.test, device)[0]
            self.log({"phase": phase, "epoch": epoch + 1, "lr": lr, "train_loss": totals.loss,
                      "test_acc": acc, "density": sparsifier.density(), "time": time.perf_counter() - started})
        sparsifier.detach()
        return {"test_acc": acc, "time_s": time.perf_counter() - started}


def __getattr__(name: str):
    """``lr_at`` and ``accuracy`` were this module's own LR policy and evaluation; one of each is shared now."""
    old = {"lr_at": ("epoch_lr", epoch_lr),
           "accuracy": ("sparsetrain.train.tasks.evaluate(model, loader, device)[0]",
                        lambda model, loader, device: evaluate(model, loader, device)[0])}
    if name not in old:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import warnings
    warnings.warn(f"sparsetrain.procedures.finetune.{name} is deprecated and goes away in 0.3; use {old[name][0]}.",
                  FutureWarning, stacklevel=2)
    return old[name][1]


__all__ = ["MaskedTrainer", "epoch_lr", "given_masks", "layer_densities", "masked_accuracy"]
