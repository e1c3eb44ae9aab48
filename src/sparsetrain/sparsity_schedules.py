"""Deprecated: the curves live in :mod:`sparsetrain.schedules.curves` and :class:`SparsitySchedule` in
:mod:`sparsetrain.schedules`. This module goes away in 0.3."""

from __future__ import annotations

import warnings

from sparsetrain.schedules.curves import *  # noqa: F403
from sparsetrain.schedules.curves import SPARSITY_SCHEDULES, get_sparsity_schedule  # noqa: F401
from sparsetrain.schedules.training import SparsitySchedule, plot_schedules  # noqa: F401

warnings.warn("sparsetrain.sparsity_schedules is deprecated: import from sparsetrain.schedules "
              "(curves in sparsetrain.schedules.curves).", FutureWarning, stacklevel=2)
