"""The state a method's pieces read and write during one topology update."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from sparsetrain.core.kernels import count_true
from sparsetrain.core.topk import random_scores


@dataclass
class SparseContext:
    """What every criterion and mask op receives.

    Attributes:
        params: ``{name: parameter}`` of the sparsified weights, in model order.
        masks: ``{name: bool tensor}``; ops replace entries, the engine then
            zeroes weights and optimizer state where a mask is off.
        optimizer: the user's optimizer (read for momentum-style criteria).
        total_steps: length of training in optimizer steps.
        generator: the sparsifier's own CPU generator (exact, rank-identical draws).
        step: optimizer steps completed so far.
        grads: dense gradient snapshot of the current batch, for updates that
            need one (taken after DDP all-reduce and GradScaler unscale).
        state: the method's persistent state (tensors and primitives only: it
            goes into ``Sparsifier.state_dict()``).
        model: the user's (unwrapped) model, for ops that look beyond the weights.
        coupled: ``{parameter name: (parameter, weight name)}``: 1-D parameters
            (a bias, the following BatchNorm's weight and bias) zeroed with the
            output units of that weight that have no active weight left
            (filter pruning). The engine masks them like the weights.
        example_input: an input batch for ops that trace the model (e.g. the
            channel dependency graph of Chase); ``None`` if the user gave none.
        data: an iterable of ``(inputs, targets)`` batches for ops that score
            weights on data before training (SNIP, GraSP); read once at init.
        loss_fn: ``loss_fn(outputs, targets) -> scalar`` used with ``data``.
        removed: ``{name: weights}`` physically removed from each parameter by
            shrinking (:mod:`sparsetrain.deploy.shrink`). They still count in
            :meth:`numel`, so densities and budgets keep referring to the
            original sizes and a shrunk run picks the same masks as a masked one.
        out_axes: ``{name: dim of its output units}`` for weights not laid out
            ``[out, in, ...]`` (a Hugging Face Conv1D is ``[in, out]``: 1); see
            :mod:`sparsetrain.core.layout`.
    """

    params: dict[str, nn.Parameter]
    masks: dict[str, Tensor]
    optimizer: torch.optim.Optimizer | None
    total_steps: int
    generator: torch.Generator
    step: int = 0
    grads: dict[str, Tensor] = field(default_factory=dict)
    state: dict[str, Any] = field(default_factory=dict)
    model: nn.Module | None = None
    coupled: dict[str, tuple[nn.Parameter, str]] = field(default_factory=dict)
    example_input: Any = None
    data: Any = None
    loss_fn: Any = None
    removed: dict[str, int] = field(default_factory=dict)
    out_axes: dict[str, int] = field(default_factory=dict)

    @property
    def names(self) -> list[str]:
        """Sparsified parameter names in model order."""
        return list(self.params)

    @property
    def shapes(self) -> dict[str, torch.Size]:
        """``{name: shape}`` of the sparsified parameters."""
        return {n: p.shape for n, p in self.params.items()}

    def out_axis(self, name: str) -> int:
        """The dim of ``name`` that indexes its output units (0 unless selection recorded another)."""
        return self.out_axes.get(name, 0)

    def numel(self, name: str) -> int:
        """Number of weights of ``name`` at its original size (shrinking does not change it)."""
        return math.prod(self.params[name].shape) + self.removed.get(name, 0)

    def active(self, name: str) -> int:
        """Number of active weights of ``name`` (counted, never summed from floats)."""
        return count_true(self.masks[name])

    def total_active(self) -> int:
        """Active weights over all sparsified parameters."""
        return sum(self.active(n) for n in self.params)

    def total_numel(self) -> int:
        """Weights over all sparsified parameters, at their original sizes."""
        return sum(self.numel(n) for n in self.params)

    def grad(self, name: str) -> Tensor:
        """Dense gradient of ``name`` for this update (clear error if none was taken)."""
        if name not in self.grads:
            raise RuntimeError(
                f"no dense gradient for {name!r} at step {self.step}: gradient-based ops must "
                "run inside an update the engine knows needs gradients (Op(needs_grad=True))."
            )
        return self.grads[name]

    def rand(self, name: str) -> Tensor:
        """Uniform random scores shaped like ``name``, from the sparsifier's generator."""
        return random_scores(self.params[name], self.generator)

    @torch.no_grad()
    def zero_inactive(self) -> None:
        """Zero every weight, and every optimizer state tensor shaped like it, where its mask is off.

        The original code's ``apply_mask``, called *inside* a topology update: a
        weight removed before this point and grown back after it restarts at 0
        with zero optimizer state (a regrown weight, docs/algorithms.md, "Regrown
        weights"). The engine calls it between the updates due at one step; a
        composition calls it between its halves with :func:`sparsetrain.ops.apply_masks`.

        Example:
            >>> p = nn.Parameter(torch.tensor([1.0, 2.0]))
            >>> ctx = SparseContext({"w": p}, {"w": torch.tensor([True, False])}, None, 1, torch.Generator())
            >>> ctx.zero_inactive()
            >>> p.tolist()
            [1.0, 0.0]
        """
        for n, p in self.params.items():
            off = ~self.masks[n].to(p.device)
            p.masked_fill_(off, 0)
            state = self.optimizer.state.get(p, {}) if self.optimizer is not None else {}
            for value in state.values():
                if isinstance(value, Tensor) and value.shape == p.shape:
                    value.masked_fill_(off, 0)

    @property
    def progress(self) -> float:
        """Fraction of training done."""
        return self.step / max(1, self.total_steps)
