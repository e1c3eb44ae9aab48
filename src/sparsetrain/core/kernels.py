"""The four element-wise primitives of exact top-k selection, fast on the CPU.

Every topology update (``core.topk``) spends its time in four operations over
the flat scores: compare with a threshold, count, cut out a band of values,
and list the positions of a mask. In the CPU build of torch these go through
bool kernels that are 3-4x slower than NumPy's on the same memory (measured
on the 2-core benchmark machine over 235k entries: compare 54 vs 15 us,
count 28 vs 9 us, nonzero 180 vs 56 us). So on the CPU, when NumPy is
installed, the primitives run on zero-copy NumPy views of the tensors; on any
other device, or without NumPy, they are the plain torch calls. Both give
identical results: the operations are exact (IEEE comparisons, integer
counts, positions in order). Results of the NumPy path own NumPy memory: they
can be written in place, saved and broadcast, but not resized.

Example:
    >>> import torch
    >>> x = torch.tensor([0.5, 2.0, 1.0, 3.0])
    >>> count_greater(x, 1.0), count_greater(x, 1.0, inclusive=True)
    (2, 3)
    >>> greater_equal(x, 2.0).tolist(), between(x, 1.0, 2.0).tolist(), nonzero(x > 1.0).tolist()
    ([False, True, False, True], [2.0, 1.0], [1, 3])
"""

from __future__ import annotations

import torch
from torch import Tensor

try:  # NumPy is optional: torch works without it, and so does this module
    import numpy as np
except ImportError:  # pragma: no cover - exercised only where NumPy is missing
    np = None

#: set to False to force the torch implementations (tests compare the two)
USE_NUMPY = np is not None


def _host(t: Tensor):
    """A zero-copy NumPy view of a CPU tensor, or None where the torch path must run.

    The torch path also takes 0-dim tensors, tensors needing grad, strided or
    negated views and dtypes NumPy lacks (bfloat16), so every input behaves as
    the torch expression would.
    """
    if (not USE_NUMPY or t.device.type != "cpu" or t.dim() == 0 or t.requires_grad or not t.is_contiguous()
            or t.is_neg()):
        return None
    if t.dtype not in (torch.float32, torch.float64, torch.bool, torch.float16):
        return None
    return t.numpy()


def _scalar(value: Tensor | float, like) -> object:
    """The threshold as a NumPy scalar of the array's dtype, as torch casts a Python scalar.

    Without the cast NumPy would compare a float32 array with a float64 0.1 and
    differ from torch at 0.1f itself; out-of-range values become +-inf, as in
    torch, without NumPy's overflow warning.
    """
    if isinstance(value, Tensor):
        value = value.item()
    with np.errstate(over="ignore"):
        return like.dtype.type(value)


def _scalar_threshold(value: Tensor | float) -> bool:
    """Thresholds the fast path takes: Python numbers and one-element tensors (others broadcast in torch)."""
    return not isinstance(value, Tensor) or value.numel() == 1


def greater_equal(flat: Tensor, threshold: Tensor | float) -> Tensor:
    """Bool tensor ``flat >= threshold``."""
    a = _host(flat) if _scalar_threshold(threshold) else None
    if a is None:
        return flat >= threshold
    return torch.from_numpy(a >= _scalar(threshold, a))


def count_greater(flat: Tensor, threshold: Tensor | float, inclusive: bool = False) -> int:
    """Number of entries ``> threshold`` (``>=`` with ``inclusive``)."""
    a = _host(flat) if _scalar_threshold(threshold) else None
    if a is None:
        return int(torch.count_nonzero(flat >= threshold if inclusive else flat > threshold))
    th = _scalar(threshold, a)
    return int(np.count_nonzero(a >= th if inclusive else a > th))


def between(flat: Tensor, low: Tensor | float, high: Tensor | float) -> Tensor:
    """The entries with ``low <= x <= high``, in order."""
    a = _host(flat) if _scalar_threshold(low) and _scalar_threshold(high) else None
    if a is None:
        return flat[(flat >= low) & (flat <= high)]
    band = (a >= _scalar(low, a)) & (a <= _scalar(high, a))
    return torch.from_numpy(a[np.flatnonzero(band)])


def nonzero(mask: Tensor) -> Tensor:
    """Flat int64 positions of the True entries of a bool tensor, ascending."""
    a = _host(mask.reshape(-1))
    if a is None:
        return torch.nonzero(mask.reshape(-1)).flatten()
    return torch.from_numpy(np.flatnonzero(a))


def count_true(mask: Tensor) -> int:
    """Number of True entries of a bool tensor."""
    a = _host(mask.reshape(-1))
    if a is None:
        return int(torch.count_nonzero(mask))
    return int(np.count_nonzero(a))
