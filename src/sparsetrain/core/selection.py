"""Which parameters are sparsified (docs/architecture.md).

Default: the weight of every convolution and linear layer, first layer and
classifier included, as in sparse_learning / ITOP / GraNet / Chase; Hugging
Face's ``Conv1D`` (GPT-2's attention and MLP, weight ``[in, out]``) and
``nn.MultiheadAttention``'s bare projection weights (``in_proj_weight``, or
``q/k/v_proj_weight`` when separate) count as linear layers. Norms and biases
are never sparsified; embeddings only when asked.

A parameter shared by several modules (tied weights) is one entry, named by
its first occurrence and counted once. A parameter tied to an embedding (GPT-2's
``lm_head.weight`` is ``transformer.wte.weight``) is an embedding: it stays
dense unless ``embeddings=True`` or ``include`` names it, and then sparsetrain
warns once that the embedding and the head are one tensor.
docs/guides/transformers.md, "Selection".
"""

from __future__ import annotations

import difflib
import fnmatch
import warnings
import weakref
from collections.abc import Sequence
from dataclasses import dataclass

from torch import nn

from sparsetrain.core.layout import hf_conv1d, out_axis
from sparsetrain.errors import SparsetrainError, unknown_choice

SPARSIFIABLE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d,
                nn.ConvTranspose3d)
EMBEDDINGS = (nn.Embedding, nn.EmbeddingBag)
#: ``nn.MultiheadAttention``'s projections are bare parameters (its ``out_proj`` is a Linear)
ATTENTION_WEIGHTS = ("in_proj_weight", "q_proj_weight", "k_proj_weight", "v_proj_weight")
_TOLD_TIED: weakref.WeakSet = weakref.WeakSet()  # tied tensors the user was already warned about


@dataclass(frozen=True)
class Selected:
    """One selected parameter.

    Attributes:
        param: the parameter.
        module_type: the class name of the module(s) holding it (``"Embedding+Linear"`` when tied).
        out_axis: the dim of its output units (1 for a Hugging Face Conv1D, see :mod:`sparsetrain.core.layout`).
        names: every name it has in the model (more than one when tied), the first one is its key.
    """

    param: nn.Parameter
    module_type: str
    out_axis: int
    names: tuple[str, ...]


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


def _candidate_attrs(module: nn.Module) -> tuple[str, ...]:
    conv1d = hf_conv1d()
    if isinstance(module, SPARSIFIABLE + EMBEDDINGS) or (conv1d is not None and isinstance(module, conv1d)):
        return ("weight",)
    if isinstance(module, nn.MultiheadAttention):
        return ATTENTION_WEIGHTS
    return ()


def candidates(model: nn.Module) -> dict[str, Selected]:
    """Every weight sparsetrain can sparsify, embeddings included, one entry per tensor, in model order."""
    found: dict[int, list[tuple[str, nn.Module, str]]] = {}
    params: dict[int, nn.Parameter] = {}
    for module_name, module in unwrap(model).named_modules(remove_duplicate=False):
        for attr in _candidate_attrs(module):
            weight = getattr(module, attr, None)
            if isinstance(weight, nn.Parameter):
                name = f"{module_name}.{attr}" if module_name else attr
                found.setdefault(id(weight), []).append((name, module, attr))
                params[id(weight)] = weight
    out: dict[str, Selected] = {}
    for key, places in found.items():
        types = list(dict.fromkeys(type(m).__name__ for _, m, _ in places))
        axes = {out_axis(m, a) for _, m, a in places}
        if len(axes) > 1:
            raise SparsetrainError(
                f"the tensor {places[0][0]!r} is shared by modules that lay it out differently "
                f"({', '.join(n for n, _, _ in places)}: {', '.join(types)}); exclude it with exclude=[...].")
        names = tuple(dict.fromkeys(n for n, _, _ in places))
        out[names[0]] = Selected(params[key], "+".join(types), axes.pop(), names)
    return out


def _unmatched(pattern: str, names: list[str]) -> SparsetrainError:
    """The error for an ``include`` pattern that selects nothing: the close names, and a few others."""
    if len(names) <= 20:
        return unknown_choice("include pattern (it matches no conv, linear, Conv1D, attention or embedding weight)",
                              pattern, names)
    close = difflib.get_close_matches(pattern, names, n=3, cutoff=0.5)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    return SparsetrainError(f"unknown include pattern {pattern!r}: it matches none of the model's {len(names)} "
                            f"conv, linear, Conv1D, attention and embedding weights.{hint} They are named like "
                            f"{', '.join(names[:3])}, ..., {names[-1]} (glob patterns over "
                            "model.named_parameters() names).")


def _is_embedding(entry: Selected) -> bool:
    return any(t in {e.__name__ for e in EMBEDDINGS} for t in entry.module_type.split("+"))


def select(
    model: nn.Module,
    include: Sequence[str] | None = None,
    exclude: Sequence[str] = (),
    embeddings: bool = False,
) -> dict[str, Selected]:
    """Return ``{parameter name: Selected}`` of the weights to sparsify, in model order.

    Args:
        model: the user's model (wrappers such as DDP are looked through).
        include: glob patterns over parameter names; when given, only the
            conv / linear / Conv1D / attention / embedding weights matching one
            are selected (a tied tensor matches under any of its names). A
            pattern that matches none of them is an error.
        exclude: glob patterns removed from the selection (e.g. ``"fc.*"``).
        embeddings: also sparsify embedding weights (and the heads tied to them).

    Example:
        >>> mha = nn.MultiheadAttention(8, 2)
        >>> {n: s.module_type for n, s in select(mha).items()}
        {'in_proj_weight': 'MultiheadAttention', 'out_proj.weight': 'NonDynamicallyQuantizableLinear'}
    """
    every = candidates(model)
    if include is not None:
        include = [include] if isinstance(include, str) else list(include)
        names = [n for e in every.values() for n in e.names]
        for pattern in include:
            if not any(fnmatch.fnmatchcase(n, pattern) for n in names):
                raise _unmatched(pattern, names)
    selected: dict[str, Selected] = {}
    for name, entry in every.items():
        named = include is not None and any(_matches(n, include) for n in entry.names)
        if include is not None and not named:
            continue
        if include is None and _is_embedding(entry) and not embeddings:
            continue
        if any(_matches(n, exclude) for n in entry.names):
            continue
        selected[name] = entry
        if _is_embedding(entry) and len(entry.names) > 1 and entry.param not in _TOLD_TIED:
            _TOLD_TIED.add(entry.param)
            warnings.warn(f"{' and '.join(entry.names)} are one tensor (tied weights): sparsifying it sparsifies "
                          "the embedding and the output head together. Pass exclude=[...] to keep both dense.",
                          UserWarning, stacklevel=3)
    if not selected:
        tied = [n for n, e in every.items() if _is_embedding(e) and len(e.names) > 1]
        hint = (f" Its only other linear-like layers are tied to an embedding ({', '.join(tied)}): pass "
                "embeddings=True or include=[...] to sparsify them (embedding and head together)."
                if tied and all(_is_embedding(e) for e in every.values()) else "")
        raise SparsetrainError(
            f"the model {type(unwrap(model)).__name__} has no parameter to sparsify "
            f"(include={list(include) if include is not None else 'conv/linear weights'}, "
            f"exclude={list(exclude)}).{hint} sparsetrain sparsifies conv and linear weights (Hugging Face "
            "Conv1D and attention projections included); check the include/exclude patterns against "
            "model.named_parameters()."
        )
    return selected


def select_parameters(
    model: nn.Module,
    include: Sequence[str] | None = None,
    exclude: Sequence[str] = (),
    embeddings: bool = False,
) -> dict[str, nn.Parameter]:
    """``{parameter name: parameter}`` of :func:`select`.

    Example:
        >>> net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
        >>> list(select_parameters(net, exclude=["2.*"]))
        ['0.weight']
    """
    return {n: s.param for n, s in select(model, include, exclude, embeddings).items()}


def first_and_last(names: Sequence[str]) -> tuple[str, str]:
    """Names of the first (stem) and last (classifier) selected weights, in model order."""
    return names[0], names[-1]
