"""Thin adapters that run :func:`sparsetrain.attach` inside training frameworks.

Each adapter is a callback of its framework; the masking itself runs in the
optimizer's step hooks (see :mod:`sparsetrain.engine`), so the framework's
training loop is unchanged. The frameworks are optional dependencies: this
package imports none of them, and each submodule imports only its own.

- :mod:`sparsetrain.integrations.lightning`: ``SparsityCallback`` for
  PyTorch Lightning (``pip install lightning``; ``pytorch_lightning`` works too).
- :mod:`sparsetrain.integrations.transformers`: ``SparsityCallback`` for the
  Hugging Face ``Trainer`` (``pip install transformers accelerate``).

Both save the sparsifier's state with the framework's checkpoints and restore
it when training resumes, so a resumed run continues with the same masks,
step count, schedules and random generator (:func:`attach_resuming`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

import sparsetrain
from sparsetrain.core.selection import select_parameters
from sparsetrain.engine import Sparsifier

__all__ = ["attach_resuming"]


def attach_resuming(model: nn.Module, optimizer: torch.optim.Optimizer, method: str, *, total_steps: int,
                    seed: int = 0, include: Sequence[str] | None = None, exclude: Sequence[str] = (),
                    state: dict[str, Any] | None = None, **method_kwargs: Any) -> Sparsifier:
    """:func:`sparsetrain.attach`, then load ``state`` without losing already-restored weights.

    A fresh ``attach`` draws initial masks and zeroes the weights and optimizer
    state outside them. When a framework has already loaded a checkpoint's
    weights (and maybe optimizer state) into the model, those values are kept
    aside on the CPU, put back after attaching, and masked by the saved masks.

    Example:
        >>> net = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
        >>> opt = torch.optim.SGD(net.parameters(), lr=0.1)
        >>> sp = attach_resuming(net, opt, "static", density=0.5, total_steps=10)
        >>> state, weights = sp.state_dict(), net[0].weight.detach().clone()
        >>> _ = sp.detach()
        >>> sp2 = attach_resuming(net, opt, "static", density=0.5, total_steps=10, seed=1, state=state)
        >>> bool(torch.equal(net[0].weight, weights))
        True
    """
    kwargs = dict(total_steps=total_steps, seed=seed, include=include, exclude=exclude, **method_kwargs)
    if state is None:
        return sparsetrain.attach(model, optimizer, method, **kwargs)
    params = select_parameters(model, include, exclude, bool(method_kwargs.get("embeddings", False)))
    saved: list[tuple[Tensor, Tensor]] = []
    for p in params.values():
        values = [p.data] + [v for v in optimizer.state.get(p, {}).values()
                             if isinstance(v, Tensor) and v.shape == p.shape]
        saved.extend((v, v.detach().to("cpu", copy=True)) for v in values)
    sparsifier = sparsetrain.attach(model, optimizer, method, **kwargs)
    with torch.no_grad():
        for live, copy in saved:
            live.copy_(copy)
    sparsifier.load_state_dict(state)
    return sparsifier
