"""What the trainer optimises and reports, named by the dataset (``DataSplits.task``).

Both tasks train with cross-entropy over the last dim of the model's output:
``[batch, classes]`` against ``[batch]`` labels (classification) or ``[batch,
time, vocab]`` against ``[batch, time]`` next tokens (language modelling), so
one loss and one accuracy (top-1, per label or per token) serve both. A task
only decides what an evaluation reports: a language model adds perplexity
``exp(mean loss)``, and its best epoch is the one with the lowest validation
loss rather than the highest accuracy.

Example:
    >>> get_task("language_model").report("val", accuracy=0.5, loss=1.0)["val_ppl"]
    2.718281828459045
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from sparsetrain.errors import unknown_choice


def _classification(split: str, accuracy: float, loss: float) -> dict[str, float]:
    return {f"{split}_acc": accuracy, f"{split}_loss": loss}


def _language_model(split: str, accuracy: float, loss: float) -> dict[str, float]:
    return {f"{split}_acc": accuracy, f"{split}_loss": loss, f"{split}_ppl": math.exp(min(loss, 700.0))}


@dataclass(frozen=True)
class Task:
    """A kind of supervised task.

    Attributes:
        name: the name datasets give in ``DataSplits.task``.
        metrics: ``(split, accuracy, mean loss) -> {metric name: value}`` for one evaluated split.
        best: the metric (without its split prefix) that picks the best epoch.
        higher_is_better: whether a larger ``best`` is better.
    """

    name: str
    metrics: Callable[[str, float, float], dict[str, float]]
    best: str
    higher_is_better: bool

    @staticmethod
    def loss(out: Tensor, target: Tensor, label_smoothing: float = 0.0, reduction: str = "mean") -> Tensor:
        """Cross-entropy over the last dim of ``out`` (every position of a sequence counts once)."""
        return F.cross_entropy(out.flatten(0, -2), target.flatten(), label_smoothing=label_smoothing,
                               reduction=reduction)

    @staticmethod
    def correct(out: Tensor, target: Tensor) -> int:
        """Top-1 hits over every label (every token of a sequence)."""
        return int((out.argmax(-1) == target).sum())

    def report(self, split: str, accuracy: float, loss: float) -> dict[str, float]:
        """The metrics of one evaluated split."""
        return self.metrics(split, accuracy, loss)

    def better(self, value: float, than: float | None) -> bool:
        """Whether ``value`` of :attr:`best` beats ``than`` (``None``: nothing yet)."""
        if than is None:
            return True
        return value > than if self.higher_is_better else value < than


TASKS: dict[str, Task] = {
    "classification": Task("classification", _classification, "acc", True),
    "language_model": Task("language_model", _language_model, "loss", False),
}


def get_task(name: str) -> Task:
    """A task by name (``DataSplits.task``)."""
    if name not in TASKS:
        raise unknown_choice("task", name, TASKS)
    return TASKS[name]


@torch.no_grad()
def evaluate(model: torch.nn.Module, loader, device: torch.device | str,
             forward: Callable[[Tensor], Tensor] | None = None) -> tuple[float, float]:
    """(accuracy, mean loss) over ``loader``, per label (per token for sequences).

    The one evaluation of the library: the trainer's epochs, the procedures'
    fine-tuning and Gem-Miner's masked forward (``forward``: what computes the
    output instead of ``model``, which is still put in eval mode).

    Example:
        >>> net = torch.nn.Linear(2, 2)
        >>> acc, loss = evaluate(net, [(torch.zeros(3, 2), torch.tensor([0, 1, 1]))], "cpu")
        >>> acc in (1 / 3, 2 / 3), loss > 0
        (True, True)
    """
    model.eval()
    forward = model if forward is None else forward
    correct = total = 0
    loss_sum = 0.0
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        out = forward(x)
        loss_sum += Task.loss(out, y, reduction="sum").item()
        correct += Task.correct(out, y)
        total += y.numel()
    return correct / max(1, total), loss_sum / max(1, total)
