"""Deprecated: ``sparsetrain.structured`` is now :mod:`sparsetrain.deploy` (its channel graph is
:mod:`sparsetrain.core.graph`). The old module paths keep working, with a warning, until 0.3."""

from __future__ import annotations

import importlib
import sys
import warnings

warnings.warn("sparsetrain.structured is deprecated: import from sparsetrain.deploy (the channel graph from "
              "sparsetrain.core.graph).", FutureWarning, stacklevel=2)

_MOVED = {"graph": "sparsetrain.core.graph", **{name: f"sparsetrain.deploy.{name}" for name in (
    "bench", "checkpoint", "compact", "inference", "onnx", "shrink", "transformer", "widths")}}
for _old, _new in _MOVED.items():
    try:
        sys.modules[f"{__name__}.{_old}"] = importlib.import_module(_new)
    except ImportError:  # an optional dependency is missing: the new path gives its own message
        pass
