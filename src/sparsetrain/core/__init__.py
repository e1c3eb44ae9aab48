"""Core pieces: deterministic top-k, exact counts and parameter selection."""

from sparsetrain.core.selection import select_parameters
from sparsetrain.core.topk import exact_count, random_mask, topk_mask

__all__ = ["exact_count", "random_mask", "select_parameters", "topk_mask"]
