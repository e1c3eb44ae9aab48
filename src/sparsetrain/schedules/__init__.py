"""Schedules: curves ``(start, end, pos) -> value`` and training schedules ``(step, total) -> value``.

- :mod:`~sparsetrain.schedules.curves`: the shapes, registered by name
  (fasterai's ``agp`` = ``cubic``, ``cos`` = ``cosine``, ``lin``, ``exp``,
  ``one_cycle``, ``dsd``, ``one_shot``, ``iterative``): one cubic and one
  cosine for the whole library.
- :mod:`~sparsetrain.schedules.training`: those shapes placed in training
  (``cosine_decay``, ``gmp_density``, ``constant``, ``exponential_p``,
  :class:`SparsitySchedule`).

Example:
    >>> round(cosine_decay(0.5, 0.005)(50, 100), 4), round(gmp_density(1.0, 0.1, 0.0, 1.0, 10)(50, 100), 4)
    (0.2525, 0.2125)
"""

from __future__ import annotations

from sparsetrain.schedules.curves import CURVES, SparsityFn, get_curve
from sparsetrain.schedules.training import (
    Schedule,
    SparsitySchedule,
    constant,
    cosine_decay,
    exponential_p,
    gmp_density,
    plot_schedules,
)

__all__ = ["CURVES", "Schedule", "SparsityFn", "SparsitySchedule", "constant", "cosine_decay", "exponential_p",
           "get_curve", "gmp_density", "plot_schedules"]
