"""Deprecated: fasterai's criteria live in :mod:`sparsetrain.criteria` (``criteria.history``) and
``remember_weights`` in :mod:`sparsetrain.ops`. This module goes away in 0.3."""

from __future__ import annotations

import warnings

from sparsetrain.criteria.history import *  # noqa: F403
from sparsetrain.criteria.history import FASTERAI_CRITERIA  # noqa: F401
from sparsetrain.ops import remember_weights  # noqa: F401

warnings.warn("sparsetrain.pruning_criteria is deprecated: import criteria from sparsetrain.criteria and "
              "remember_weights from sparsetrain.ops.", FutureWarning, stacklevel=2)
