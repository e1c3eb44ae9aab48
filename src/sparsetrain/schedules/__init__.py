"""Schedules: curves ``(start, end, pos) -> value`` and training schedules ``(step, total) -> value``.

- :mod:`~sparsetrain.schedules.curves`: the shapes, registered by name
  (fasterai's ``agp`` = ``cubic``, ``cos`` = ``cosine``, ``lin``, ``exp``,
  ``one_cycle``, ``dsd``, ``one_shot``, ``iterative``): one cubic and one
  cosine for the whole library.
- :mod:`~sparsetrain.schedules.training`: those shapes placed in training
  (``cosine_decay``, ``gmp_density``, ``constant``, ``exponential_p``,
  :class:`SparsitySchedule`).
- :mod:`~sparsetrain.schedules.lr`: the learning-rate multiplier
  (:func:`lr_schedule`: cosine, multistep, onecycle, constant, warm-up) that
  every training loop uses.

Example:
    >>> round(cosine_decay(0.5, 0.005)(50, 100), 4), round(gmp_density(1.0, 0.1, 0.0, 1.0, 10)(50, 100), 4)
    (0.2525, 0.2125)
"""

from __future__ import annotations

from sparsetrain.schedules.curves import CURVES, SparsityFn, get_curve
from sparsetrain.schedules.lr import LR_SCHEDULES, lr_schedule
from sparsetrain.schedules.training import (
    Schedule,
    SparsitySchedule,
    constant,
    cosine_decay,
    exponential_p,
    gmp_density,
    plot_schedules,
)

__all__ = ["CURVES", "LR_SCHEDULES", "Schedule", "SparsityFn", "SparsitySchedule", "constant", "cosine_decay",
           "exponential_p", "get_curve", "gmp_density", "lr_schedule", "plot_schedules"]
