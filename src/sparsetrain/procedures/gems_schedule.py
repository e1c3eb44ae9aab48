"""Gem-Miner's thresholding schedule and LR milestones (docs/algorithms.md, "Rare Gems / Gem-Miner and edge-popup").

``hc_iter`` thresholds after 0-based epochs P, 2P, ... < E: K = floor((E - 1) / P)
rounds, each keeping d^(r/K) of the prunable weights, so the target density d
is met exactly after round K (docs/guides/rare-gems.md).

Example:
    >>> rounds(150, 5), [survivors(100, 0.25, 2, r) for r in range(3)]
    (29, [100, 50, 25])
"""

from __future__ import annotations

import math

from sparsetrain.core.topk import exact_count, floor_count
from sparsetrain.errors import SparsetrainError


def search_milestones(cfg: dict) -> list[int]:
    """The score search's multistep LR milestones in epochs: ``schedule.milestones`` (fractions) of ``epochs``.

    Example:
        >>> search_milestones({"epochs": 150, "schedule": {"milestones": [0.5, 0.75]}})
        [75, 112]
    """
    return [floor_count(m * cfg["epochs"]) for m in cfg["schedule"]["milestones"]]


def rounds(epochs: int, iter_period: int) -> int:
    """K = floor((E - 1) / P): thresholding rounds of ``hc_iter``.
    See docs/algorithms.md, "Rare Gems / Gem-Miner and edge-popup".

    Example:
        >>> rounds(150, 5), rounds(5, 2), rounds(5, 5)
        (29, 2, 0)
    """
    return (epochs - 1) // iter_period


def is_prune_epoch(epoch: int, iter_period: int) -> bool:
    """Whether thresholding runs after 0-based epoch ``epoch``: e mod P = 0 and e != 0."""
    return epoch != 0 and epoch % iter_period == 0


def round_rate(density: float, n_rounds: int) -> float:
    """q = 1 - d^(1/K): the fraction of flagged weights removed per round.

    Example:
        >>> round(round_rate(0.05, 29), 6)
        0.098145
    """
    return 1.0 - density ** (1.0 / n_rounds)


def survivors(total: int, density: float, n_rounds: int, r: int) -> int:
    """Flagged weights after round ``r`` of ``n_rounds``: ``exact_count(d^(r/K), N)``.

    Fixed on purpose: the original removes ceil(q * n_flagged) per round, which
    drifts by rounding and misses round(d N) (docs/concepts.md, "Guarantees"). Counting the
    survivors from the round index removes q of the flagged weights per round to
    within one weight and ends exactly at round(d N) after K rounds.

    Example:
        >>> [survivors(100, 0.25, 2, r) for r in range(3)]
        [100, 50, 25]
    """
    return exact_count(density ** (r / n_rounds), total)


def check_reachable(density: float, total: int) -> int:
    """The target count round(d N); a target below one weight is an error."""
    if math.floor(density * total + 0.5) < 1:
        raise SparsetrainError(f"the target keeps {density * 100:g} % of {total} prunable weights, i.e. less than "
                               "one weight: raise target_sparsity (percent remaining) or use a larger model.")
    return exact_count(density, total)


def finetune_milestones(gems: dict) -> list[int]:
    """Fine-tuning LR milestones in epochs, from the ``gems:`` section: ``finetune_milestones`` as given, else the
    original's table ([80, 120] for 150/160 epochs, [50, 80] for 100, [100, 150] for 200), else 50 % / 75 %.

    Example:
        >>> finetune_milestones({"finetune_milestones": None, "finetune_epochs": 40})
        [20, 30]
    """
    if gems["finetune_milestones"] is not None:
        return [int(m) for m in gems["finetune_milestones"]]
    e = gems["finetune_epochs"]
    table = {150: [80, 120], 160: [80, 120], 100: [50, 80], 200: [100, 150]}
    return table.get(e, [e // 2, (3 * e) // 4])


__all__ = ["check_reachable", "finetune_milestones", "is_prune_epoch", "round_rate", "rounds", "search_milestones",
           "survivors"]
