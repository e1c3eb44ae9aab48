"""Learning-rate schedules: ``(step, total) -> multiplier`` of the base learning rate.

One helper for every loop in the library: the trainer steps it per optimizer
step (through ``torch.optim.lr_scheduler.LambdaLR``), the Gem-Miner score
search and its fine-tuning per epoch (``step`` = epoch, ``total`` = epochs,
the Rare Gems policies ``cosine_lr``, ``multistep_lr`` and ``constant_lr``).
The cosine is the library's one cosine (:func:`.curves.cos`).

Example:
    >>> f = lr_schedule("multistep", milestones=[80, 120])
    >>> [round(0.01 * f(e, 150), 6) for e in (79, 80, 120)]
    [0.01, 0.001, 0.0001]
"""

from __future__ import annotations

from collections.abc import Sequence

from sparsetrain.errors import unknown_choice
from sparsetrain.schedules.curves import cos
from sparsetrain.schedules.training import Schedule

LR_SCHEDULES = ("cosine", "multistep", "onecycle", "constant")


def lr_schedule(name: str, milestones: Sequence[int] = (), gamma: float = 0.1, warmup: int = 0) -> Schedule:
    """The multiplier of the base learning rate after ``step`` of ``total`` steps.

    Args:
        name: ``cosine`` (1 -> 0), ``multistep`` (times ``gamma`` at each of
            ``milestones``), ``onecycle`` (linear up over the first quarter,
            cosine down) or ``constant``.
        milestones: the steps where ``multistep`` multiplies by ``gamma``.
        gamma: the ``multistep`` factor.
        warmup: steps of linear warm-up ((step + 1) / warmup) before the schedule;
            the schedule then runs over the remaining ``total - warmup`` steps.

    Raises:
        SparsetrainError: an unknown ``name`` (the choices are listed).

    Example:
        >>> f = lr_schedule("cosine", warmup=2)
        >>> [f(t, 6) for t in (0, 1, 2, 4)]
        [0.5, 1.0, 1.0, 0.5]
    """
    name = name.lower()
    if name not in LR_SCHEDULES:
        raise unknown_choice("LR schedule", name, LR_SCHEDULES)
    marks = [int(m) for m in milestones]

    def factor(step: int, total: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        pos = (step - warmup) / max(1, total - warmup)
        if name == "cosine":
            return cos(1.0, 0.0, pos)
        if name == "multistep":
            return gamma ** sum(step >= m for m in marks)
        if name == "onecycle":
            return min(1.0, 4 * pos) if pos < 0.25 else cos(1.0, 0.0, (pos - 0.25) / 0.75)
        return 1.0
    return factor


__all__ = ["LR_SCHEDULES", "lr_schedule"]
