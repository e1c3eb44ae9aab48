"""Mask ops and their combinators (docs/architecture.md).

An :class:`Op` changes ``ctx.masks`` and returns a small event dict; the
engine then zeroes weights and optimizer state where masks are off. An
:class:`Update` is an op with a cadence.
"""

from sparsetrain.ops.base import Dropper, Grower, Op, Shrink, Update, apply_masks, chain, on_layers, when
from sparsetrain.ops.init import init_dense, init_magnitude, init_prune, init_random, pending_regrow
from sparsetrain.ops.prune import drop_below, drop_lowest, prune_to, remember_weights
from sparsetrain.ops.regrow import allocate, grow_to, prune_and_regrow, regrow

__all__ = [
    "Dropper", "Grower", "Op", "Shrink", "Update", "allocate", "apply_masks", "chain", "drop_below", "drop_lowest",
    "grow_to", "init_dense", "init_magnitude", "init_prune", "init_random", "on_layers", "pending_regrow",
    "prune_and_regrow", "prune_to", "regrow", "remember_weights", "when",
]
