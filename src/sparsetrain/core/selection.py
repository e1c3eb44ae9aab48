"""Which parameters are sparsified (DESIGN section 2, "selection").

Default: the ``weight`` of every convolution and linear layer, first layer and
classifier included, as in sparse_learning / ITOP / GraNet / Chase
(ALGORITHMS.md section 0). Norms and biases are never sparsified; embeddings
only when asked.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence

from torch import nn

from sparsetrain.errors import SparsetrainError

SPARSIFIABLE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d,
                nn.ConvTranspose3d)


def unwrap(model: nn.Module) -> nn.Module:
    """The user's module inside a DDP / DataParallel / torch.compile wrapper."""
    for attr in ("module", "_orig_mod"):
        inner = getattr(model, attr, None)
        if isinstance(inner, nn.Module) and type(model).__name__ in (
            "DistributedDataParallel", "DataParallel", "OptimizedModule"):
            return unwrap(inner)
    return model


def _matches(name: str, patterns: Sequence[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def select_parameters(
    model: nn.Module,
    include: Sequence[str] | None = None,
    exclude: Sequence[str] = (),
    embeddings: bool = False,
) -> dict[str, nn.Parameter]:
    """Return ``{parameter name: parameter}`` of the weights to sparsify.

    Args:
        model: the user's model (wrappers such as DDP are looked through).
        include: glob patterns over parameter names; when given, any weight
            of a conv / linear (/ embedding) module that matches is selected.
        exclude: glob patterns removed from the selection (e.g. ``"fc.*"``).
        embeddings: also sparsify ``nn.Embedding`` weights.

    Example:
        >>> net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
        >>> list(select_parameters(net, exclude=["2.*"]))
        ['0.weight']
    """
    kinds = SPARSIFIABLE + ((nn.Embedding,) if embeddings else ())
    selected: dict[str, nn.Parameter] = {}
    for module_name, module in unwrap(model).named_modules():
        weight = getattr(module, "weight", None)
        if not isinstance(module, kinds) or not isinstance(weight, nn.Parameter):
            continue
        name = f"{module_name}.weight" if module_name else "weight"
        if include is not None and not _matches(name, include):
            continue
        if _matches(name, exclude):
            continue
        selected[name] = weight
    if not selected:
        raise SparsetrainError(
            f"the model {type(unwrap(model)).__name__} has no parameter to sparsify "
            f"(include={list(include) if include is not None else 'conv/linear weights'}, "
            f"exclude={list(exclude)}). sparsetrain sparsifies conv and linear weights; "
            "check the include/exclude patterns against model.named_parameters()."
        )
    return selected


def first_and_last(names: Sequence[str]) -> tuple[str, str]:
    """Names of the first (stem) and last (classifier) selected weights, in model order."""
    return names[0], names[-1]
