"""One training epoch and one evaluation: the loop body every training loop in the library shares.

The trainer (:func:`sparsetrain.train.loop.train`), the fixed-mask fine-tuning
of the procedures (:class:`sparsetrain.procedures.finetune.MaskedTrainer`) and
Gem-Miner's score search (:func:`sparsetrain.procedures.gems.search_phase`)
all run :func:`train_epoch` and :func:`evaluate`; what differs between them
(the forward pass, the loss, what happens around an optimizer step) is
passed in.

Example:
    >>> import torch
    >>> torch.manual_seed(0) and None
    >>> net = torch.nn.Linear(3, 2)
    >>> opt = torch.optim.SGD(net.parameters(), lr=0.1)
    >>> data = [(torch.randn(4, 3), torch.tensor([0, 1, 0, 1]))] * 2
    >>> totals = train_epoch(net, Task.loss, opt, data)
    >>> totals.batches, totals.labels, 0.0 <= totals.accuracy <= 1.0
    (2, 8, True)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

from sparsetrain.train.tasks import Task, evaluate

Batch = tuple[Tensor, Tensor]


@dataclass
class EpochTotals:
    """Sums over an epoch's batches: loss times labels, top-1 hits, labels and batches."""

    loss_sum: float = 0.0
    correct: int = 0
    labels: int = 0
    batches: int = 0

    @property
    def loss(self) -> float:
        """Mean loss per label."""
        return self.loss_sum / max(1, self.labels)

    @property
    def accuracy(self) -> float:
        """Top-1 accuracy per label."""
        return self.correct / max(1, self.labels)


def on_device(batches: Iterable[Batch], device: torch.device | str) -> Iterator[Batch]:
    """``(x, y)`` batches moved to ``device``."""
    for x, y in batches:
        yield x.to(device), y.to(device)


def train_epoch(forward: Callable[[Tensor], Tensor], loss_fn: Callable[[Tensor, Tensor], Tensor],
                optimizer: torch.optim.Optimizer, batches: Iterable[Batch], *,
                before_step: Callable[[], None] | None = None,
                after_step: Callable[[], None] | None = None) -> EpochTotals:
    """Forward, loss, backward and one optimizer step per batch; returns the epoch's totals.

    Args:
        forward: the model (or any ``x -> output``, e.g. Gem-Miner's masked forward).
        loss_fn: ``(output, target) -> loss`` (raise there to stop on a bad loss).
        optimizer: stepped once per batch, gradients cleared before each backward.
        batches: ``(x, y)`` already on the model's device (:func:`on_device`).
        before_step: called before each forward (Gem-Miner projects its scores there).
        after_step: called after each optimizer step (the trainer steps its LR
            schedule and logs the sparsifier's updates there).
    """
    totals = EpochTotals()
    for x, y in batches:
        if before_step is not None:
            before_step()
        out = forward(x)
        loss = loss_fn(out, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        totals.loss_sum += loss.item() * y.numel()
        totals.correct += Task.correct(out, y)
        totals.labels += y.numel()
        totals.batches += 1
        if after_step is not None:
            after_step()
    return totals


__all__ = ["EpochTotals", "evaluate", "on_device", "train_epoch"]
