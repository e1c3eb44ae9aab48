"""Which axis of a weight holds its output units (the one notion of weight layout).

Every conv and linear weight in torch is ``[out, in, *kernel]``: its output
units are dim 0. Hugging Face's ``transformers.pytorch_utils.Conv1D`` (GPT-2,
GPT, CTRL) stores its weight transposed, ``[in, out]``, so its output units are
dim 1. Selection records this *out axis* once per parameter
(:class:`sparsetrain.core.selection.Selected`); everything that reads a weight
as rows of output units (fan-in, granularities, channel statistics, structured
init) moves the out axis first with :func:`out_first` and moves the result back
with :func:`from_out_first`. docs/guides/transformers.md, "Selection".

Example:
    >>> import torch
    >>> w = torch.arange(6).reshape(2, 3)  # a Conv1D weight: 2 inputs, 3 outputs
    >>> out_first(w, 1).shape, from_out_first(out_first(w, 1), 1).equal(w)
    (torch.Size([3, 2]), True)
"""

from __future__ import annotations

import math
import sys

from torch import Tensor, nn

Shape = tuple[int, ...]


def hf_conv1d() -> type | None:
    """``transformers.pytorch_utils.Conv1D`` if transformers is already imported (a model holding one imported it)."""
    if "transformers" not in sys.modules:
        return None
    try:
        from transformers.pytorch_utils import Conv1D
    except ImportError:  # pragma: no cover - a transformers without Conv1D
        return None
    return Conv1D


def out_axis(module: nn.Module, attr: str = "weight") -> int:
    """The dim of ``module.<attr>`` that indexes output units: 1 for a Hugging Face Conv1D weight, else 0.

    Example:
        >>> out_axis(nn.Linear(3, 2))
        0
    """
    conv1d = hf_conv1d()
    return 1 if conv1d is not None and isinstance(module, conv1d) and attr == "weight" else 0


def out_first(t: Tensor, axis: int) -> Tensor:
    """A view of ``t`` with its out axis first (``[out, in, *kernel]``); ``t`` itself when it already is."""
    return t.movedim(axis, 0) if axis and t.dim() > axis else t


def from_out_first(t: Tensor, axis: int) -> Tensor:
    """Undo :func:`out_first`: a tensor laid out ``[out, in, ...]`` back in the weight's own layout (contiguous)."""
    return t.movedim(0, axis).contiguous() if axis and t.dim() > axis else t


def out_first_shape(shape: Shape, axis: int) -> Shape:
    """The shape of :func:`out_first` of a tensor of ``shape``."""
    shape = tuple(shape)
    if not axis or len(shape) <= axis:
        return shape
    return (shape[axis], *shape[:axis], *shape[axis + 1:])


def fan_in(shape: Shape, axis: int = 0) -> int:
    """Weights feeding one output unit: the product of every dim but the out axis.

    Example:
        >>> fan_in((4, 2, 3, 3)), fan_in((8, 16), axis=1)
        (18, 8)
    """
    shape = tuple(shape)
    if len(shape) < 2:
        return 1
    return math.prod(shape) // shape[axis]


def num_outputs(shape: Shape, axis: int = 0) -> int:
    """Output units of a weight of ``shape`` (its size along the out axis)."""
    shape = tuple(shape)
    return shape[axis] if len(shape) > axis else 1
