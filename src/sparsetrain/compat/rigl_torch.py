"""Drop-in ``RigLScheduler`` for rigl-torch 0.5.2 (``from rigl_torch.RigL import RigLScheduler``).

Same constructor, attributes, ``state_dict`` keys and ``if pruner(): optimizer.step()`` loop as rigl-torch
(docs/algorithms.md, "rigl-torch"), on sparsetrain's exact pieces. What differs, on purpose:

* Layers: only ``nn.Linear`` / ``nn.Conv*`` / ``nn.ConvTranspose*`` weights (``named_modules()`` order).
  rigl-torch's ``get_W`` took any module with a ``weight`` but ``BatchNorm2d``, so BatchNorm1d / LayerNorm /
  Embedding weights got sparsified (and a norm without affine weight crashed it); we fix that quirk.
* Exact masks (contract 2): ``exact_count(d, N)`` = round-half-up(d*N) active (rigl-torch kept
  ``N - int((1 - d) * N)``, at most one more); drop / grow use the deterministic ``topk_mask`` (ties: lower
  index), and the drop ranks only active weights.
* ``sparsity_distribution="erk"`` (docs/algorithms.md, "Sparse initialisation and layer densities") over the layers
``ignore_linear_layers`` leaves sparse;
  as in the RigL paper, ERK does not force the first layer dense (uniform does).
* A thin adapter over :class:`~sparsetrain.engine.Sparsifier`: masks, the zeroing of weights and of every
  optimizer state tensor shaped like a masked weight (any optimizer), the broadcast of masks, the ever-active
  masks and the update history are the engine's; the RigL step is the ``rigl`` method's drop-and-grow
  (``ops.prune_and_regrow``) run through ``Sparsifier.update``. Only rigl-torch's own parts live here: the
  constructor and attributes, the backward hooks that accumulate dense gradients, the step counting of
  ``if pruner(): optimizer.step()`` and the state_dict format.
* DDP with no extra code: the accumulated (local) gradients are averaged over ranks before ranking (growth
  sees the gradient DDP applies, contract 4) and masks are broadcast from rank 0 (bit-identical, contract 6).
* A RigL step with no accumulated gradient (scheduler built after ``backward``, a layer unused in the window)
  crashed rigl-torch; here the layer falls back to ``.grad`` (masked if the hooks saw it, so growth then
  mostly regrows just-dropped weights), and with no gradient at all keeps its mask.
* ``state_dict()`` also holds the accumulators (``dense_grads``): resuming inside the accumulation window
  equals not stopping (contract 5). rigl-torch's own state dicts load too.
"""

from __future__ import annotations

import math
import numbers
import weakref
from typing import Any

import torch
from torch import Tensor, nn

from sparsetrain import distributed, ops
from sparsetrain.core.selection import SPARSIFIABLE, unwrap
from sparsetrain.core.topk import exact_count, random_mask
from sparsetrain.distributions import layer_densities
from sparsetrain.engine import Sparsifier
from sparsetrain.errors import SparsetrainError, check_density, check_fraction, unknown_choice
from sparsetrain.methods.registry import Method
from sparsetrain.ops.prune import drop_lowest
from sparsetrain.ops.regrow import regrow

DISTRIBUTIONS = ("uniform", "erk")
_HYPERPARAMS = ("delta_T", "alpha", "T_end", "ignore_linear_layers", "static_topo", "sparsity_distribution",
                "grad_accumulation_n")
_CLAIMED: dict[int, weakref.ref] = {}  # id(weight) -> weight, for weights hooked by a live scheduler


def _is(x: Any, kind: type) -> bool:
    return isinstance(x, kind) and not isinstance(x, bool)


def _prim(x: Any) -> Any:
    """A numpy / torch scalar as a plain Python number (``torch.load(weights_only=True)`` needs those)."""
    return x.item() if hasattr(x, "item") else x


class IndexMaskHook:
    """Tensor hook of sparse layer ``layer``: returns ``grad * mask`` and, in the ``grad_accumulation_n``
    backward passes before a RigL step, adds ``grad / grad_accumulation_n`` to ``dense_grad``."""

    def __init__(self, layer: int, scheduler: RigLScheduler) -> None:
        self.layer, self.scheduler, self.dense_grad = layer, scheduler, None

    @torch.no_grad()
    def __call__(self, grad: Tensor) -> Tensor:
        s = self.scheduler
        if s.check_if_backward_hook_should_accumulate_grad():
            if self.dense_grad is None:
                self.dense_grad = torch.zeros_like(grad)
            self.dense_grad += grad / s.grad_accumulation_n
        else:
            self.dense_grad = None
        return grad * s.sparsifier.masks[s.names[self.layer]]


class RigLScheduler:
    """RigL (Evci et al. 2020) the rigl-torch way: ``if pruner(): optimizer.step()`` (docs/algorithms.md, "rigl-torch").

    Every ``delta`` steps until ``T_end`` the call replaces the optimizer step by a topology update: per
    sparse layer drop ``floor(n_active * alpha / 2 * (1 + cos(pi * step / T_end)))`` active weights of
    smallest |w| and grow as many of largest |accumulated dense grad| among the positions not kept (may
    include just-dropped ones); new weights start at 0, dropped-and-regrown ones keep their value.
    See the module docstring for what differs from rigl-torch and why.

    Args:
        model: any ``nn.Module`` (DDP / ``torch.compile`` wrappers are looked through).
        optimizer: any ``torch.optim.Optimizer`` training ``model``.
        dense_allocation: fraction of weights kept in (0, 1] (0.1 = 90 % sparse).
        T_end: step after which the topology is frozen (rigl-torch: 75 % of training iterations).
        sparsity_distribution: ``"uniform"`` (first layer dense) or ``"erk"``.
        ignore_linear_layers: keep ``nn.Linear`` layers dense.
        delta: steps between RigL updates. alpha: initial drop fraction in [0, 1].
        static_topo: never change the masks (static sparse training).
        grad_accumulation_n: backward passes averaged for growth, ``1 <= n < delta``.
        state_dict: a :meth:`state_dict` to resume from; its hyperparameters win over the arguments.

    Attributes:
        W, N, S: the layer weights (``nn.Parameter``), their sizes and sparsities (0 = dense).
        backward_masks: bool mask per layer, ``None`` for a dense layer (the engine's masks).
        sparsifier: the :class:`~sparsetrain.engine.Sparsifier` that keeps the sparse layers sparse
            (``None`` when every layer is dense); its ``history`` lists the RigL steps.
        step, rigl_steps: calls so far and RigL updates so far.
        delta_T, alpha, T_end: the hyperparameters, as in rigl-torch (so are grad_accumulation_n,
            static_topo, ignore_linear_layers, sparsity_distribution and dense_allocation).

    Example:
        >>> from torch import nn
        >>> net = nn.Sequential(nn.Conv1d(1, 8, 3), nn.Conv1d(8, 8, 3), nn.Flatten(), nn.Linear(96, 4))
        >>> opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
        >>> pruner = RigLScheduler(net, opt, dense_allocation=0.25, T_end=75, delta=10)
        >>> [None if m is None else int(m.sum()) for m in pruner.backward_masks]
        [None, 48, None]
        >>> for _ in range(20):
        ...     opt.zero_grad()
        ...     net(torch.randn(4, 1, 16)).sum().backward()
        ...     if pruner():
        ...         opt.step()
        >>> pruner.step, pruner.rigl_steps, int(pruner.backward_masks[1].sum())
        (20, 2, 48)
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, dense_allocation: float = 1,
                 T_end: int | None = None, sparsity_distribution: str = "uniform",
                 ignore_linear_layers: bool = True, delta: int = 100, alpha: float = 0.3,
                 static_topo: bool = False, grad_accumulation_n: int = 1,
                 state_dict: dict[str, Any] | None = None) -> None:
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise SparsetrainError(f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}.")
        layers = [(n, m) for n, m in unwrap(model).named_modules()
                  if isinstance(m, SPARSIFIABLE) and isinstance(m.weight, nn.Parameter)]
        if not layers:
            raise SparsetrainError(f"{type(unwrap(model)).__name__} has no nn.Linear / nn.Conv* layer to sparsify.")
        self.model, self.optimizer = model, optimizer
        self.names = [f"{n}.weight" if n else "weight" for n, _ in layers]
        self.W: list[nn.Parameter] = [m.weight for _, m in layers]
        self._linear_layers_mask = [int(isinstance(m, nn.Linear)) for _, m in layers]
        self.N = [w.numel() for w in self.W]
        self.dense_allocation = dense_allocation
        self.backward_hook_objects: list[IndexMaskHook | None] = []
        self._handles: list = []
        self.sparsifier: Sparsifier | None = None
        if state_dict is not None:
            self.load_state_dict(state_dict)
        else:
            self.sparsity_distribution, self.static_topo = sparsity_distribution, static_topo
            self.ignore_linear_layers, self.grad_accumulation_n = ignore_linear_layers, grad_accumulation_n
            self.delta_T, self.alpha, self.T_end = delta, alpha, T_end
            self._check()
            self.S = self._sparsities()
            self.step = self.rigl_steps = 0
            self.random_sparsify()

    # ------------------------------------------------------------------ set-up
    def _check(self) -> None:
        check_density(self.dense_allocation, "dense_allocation")
        if str(self.sparsity_distribution).lower() not in DISTRIBUTIONS:
            raise unknown_choice("sparsity_distribution", str(self.sparsity_distribution), DISTRIBUTIONS)
        if not _is(self.delta_T, numbers.Integral) or self.delta_T < 1:
            raise SparsetrainError(f"delta must be a positive int (steps between RigL updates), got {self.delta_T!r}.")
        if not _is(self.alpha, numbers.Real):
            raise SparsetrainError(f"alpha must be a number in [0, 1], got {self.alpha!r}.")
        check_fraction(self.alpha, "alpha (the initial drop fraction)")
        if not _is(self.grad_accumulation_n, numbers.Integral) or not 1 <= self.grad_accumulation_n < self.delta_T:
            raise SparsetrainError(f"grad_accumulation_n must be an int with 1 <= grad_accumulation_n < delta "
                                   f"(= {self.delta_T}), got {self.grad_accumulation_n!r}.")
        if not self.static_topo and not (_is(self.T_end, numbers.Real) and self.T_end > 0):
            raise SparsetrainError(f"T_end must be a positive number of steps, got {self.T_end!r}: RigL stops "
                                   "changing masks at T_end (recommended: int(0.75 * epochs * len(train_loader))).")

    def _sparsities(self) -> list[float]:
        d = self.dense_allocation
        dense = [bool(lin) and bool(self.ignore_linear_layers) for lin in self._linear_layers_mask]
        if str(self.sparsity_distribution).lower() == "erk":
            shapes = {str(i): w.shape for i, w in enumerate(self.W) if not dense[i]}
            dens = layer_densities("erk", shapes, d) if shapes else {}
            return [0 if dense[i] else 1 - dens[str(i)] for i in range(len(self.W))]
        first_dense = len(self.W) > 1  # rigl-torch: uniform keeps the first layer dense
        return [0 if (i == 0 and first_dense) or dense[i] else 1 - d for i in range(len(self.W))]

    @torch.no_grad()
    def random_sparsify(self) -> None:
        """Exact-count random masks (seeded from the global torch RNG, like rigl-torch's randperm)."""
        gen = torch.Generator().manual_seed(int(torch.randint(0, 2**62, (1,))))
        # round(.., 12): 1 - (1 - 0.1) is 0.0999..98, which would round d*N = 2.5 down
        self._bind({self.names[i]: random_mask(w.shape, exact_count(round(1 - self.S[i], 12), self.N[i]), gen,
                                               w.device)
                    for i, w in enumerate(self.W) if self.S[i] > 0})

    def _bind(self, masks: dict[str, Tensor]) -> None:
        """(Re)attach the engine to the sparse layers with ``masks`` and hook their gradients."""
        self._register_hooks()  # refuses a model another live scheduler holds, before anything changes
        if self.sparsifier is not None:
            self.sparsifier.detach()
        self.sparsifier = None
        if masks:
            def given(ctx):
                ctx.masks.update({n: m.to(ctx.params[n].device, torch.bool) for n, m in masks.items()})
            self.sparsifier = Sparsifier(self.model, self.optimizer, Method(ops.Op(given, name="masks"),
                                         name="rigl_torch"), total_steps=max(1, int(self.T_end or 1)),
                                         include=list(masks))

    @property
    def backward_masks(self) -> list[Tensor | None]:
        """Bool mask per layer (the engine's), ``None`` for a dense layer."""
        masks = self.sparsifier.masks if self.sparsifier is not None else {}
        return [masks.get(n) for n in self.names]

    def _register_hooks(self) -> None:
        self._remove_tensor_hooks()
        sparse = [i for i in range(len(self.W)) if self.S[i] > 0]
        if any(_CLAIMED.get(id(self.W[i]), lambda: None)() is self.W[i] for i in sparse):
            raise SparsetrainError("This model already has been registered to a RigLScheduler; call .remove() "
                                   "on the old scheduler first.")
        self.backward_hook_objects = [IndexMaskHook(i, self) if i in sparse else None for i in range(len(self.W))]
        for i in sparse:
            self._handles.append(self.W[i].register_hook(self.backward_hook_objects[i]))
            _CLAIMED[id(self.W[i])] = weakref.ref(self.W[i])

    def _remove_tensor_hooks(self) -> None:
        for handle in self._handles:
            handle.remove()
        for hook in self.backward_hook_objects:
            if hook is not None:
                _CLAIMED.pop(id(self.W[hook.layer]), None)
        self._handles = []

    def remove(self) -> nn.Module:
        """Remove every hook (the model keeps its zeros); returns the model."""
        self._remove_tensor_hooks()
        if self.sparsifier is not None:
            self.sparsifier.detach()
        return self.model

    # ------------------------------------------------------------------ masking (rigl-torch's names)
    def reset_momentum(self) -> None:
        """Zero weights and every optimizer state tensor shaped like a sparse weight where masks are off."""
        if self.sparsifier is not None:
            self.sparsifier.apply_masks()

    def apply_mask_to_weights(self) -> None:
        self.reset_momentum()

    @torch.no_grad()
    def apply_mask_to_gradients(self) -> None:
        for w, mask in zip(self.W, self.backward_masks, strict=True):
            if mask is not None and w.grad is not None:
                w.grad.mul_(mask)

    # ------------------------------------------------------------------ schedule
    def check_if_backward_hook_should_accumulate_grad(self) -> bool:
        """True when the next RigL step is at most ``grad_accumulation_n`` steps away (and before T_end)."""
        if self.static_topo or self.step >= self.T_end:
            return False
        return self.delta_T - (self.step % self.delta_T) <= self.grad_accumulation_n

    def cosine_annealing(self) -> float:
        """Drop fraction at the current step: ``alpha / 2 * (1 + cos(pi * step / T_end))``."""
        return self.alpha / 2 * (1 + math.cos(self.step * math.pi / self.T_end))

    def __call__(self) -> bool:
        """Count a step; return False when a RigL step replaced the optimizer step, else True."""
        self.step += 1
        if self.static_topo:
            return True
        if self.step % self.delta_T == 0 and self.step < self.T_end:
            self._rigl_step()
            self.rigl_steps += 1
            return False
        return True

    @torch.no_grad()
    def _rigl_step(self) -> None:
        """The ``rigl`` method's drop-and-grow at the call's drop fraction, on the accumulated gradients."""
        if self.sparsifier is None:
            return
        sparse = [i for i in range(len(self.W)) if self.S[i] > 0]
        hooks = self.backward_hook_objects  # no accumulated gradient: fall back to .grad (rigl-torch crashed)
        grads = {self.names[i]: self.W[i].grad if hooks[i].dense_grad is None else hooks[i].dense_grad
                 for i in sparse}
        scores = {n: torch.zeros_like(self.W[i]) if grads[n] is None else grads[n].detach().clone()
                  for i, n in zip(sparse, grads, strict=True)}
        distributed.all_reduce_mean_(list(scores.values()))  # the hooks saw local, pre-all-reduce gradients
        fraction = self.cosine_annealing()
        rigl = ops.prune_and_regrow(drop_lowest(lambda step, total: fraction, "magnitude", rounding="floor"),
                                    regrow("gradient"))
        with_grad = [n for n in grads if grads[n] is not None]  # a layer without any gradient keeps its mask
        self.sparsifier.update(ops.on_layers(lambda ctx: with_grad, rigl), grads=scores)
        self.apply_mask_to_gradients()

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """rigl-torch's keys plus ``dense_grads``; tensors and primitives only (``weights_only=True``)."""
        return {
            "dense_allocation": _prim(self.dense_allocation), "S": [float(s) for s in self.S], "N": list(self.N),
            "hyperparams": {k: _prim(getattr(self, k)) for k in _HYPERPARAMS},
            "step": self.step, "rigl_steps": self.rigl_steps,
            "backward_masks": [None if m is None else m.detach().cpu().clone() for m in self.backward_masks],
            "_linear_layers_mask": list(self._linear_layers_mask),
            "dense_grads": [None if h is None or h.dense_grad is None else h.dense_grad.detach().cpu().clone()
                            for h in self.backward_hook_objects],
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` (or rigl-torch's) output, re-apply masks and re-register hooks."""
        missing = [k for k in ("dense_allocation", "S", "N", "hyperparams", "step", "rigl_steps", "backward_masks")
                   if k not in state_dict]
        if missing:
            raise SparsetrainError(f"not a RigLScheduler state_dict: missing keys {missing}.")
        if list(state_dict["N"]) != self.N:
            raise SparsetrainError(f"this RigLScheduler state_dict is for layers of sizes {list(state_dict['N'])}, "
                                   f"but this model's conv/linear weights have sizes {self.N}.")
        masks, sparsity = list(state_dict["backward_masks"]), list(state_dict["S"])
        for i, w in enumerate(self.W):
            m, s = masks[i] if i < len(masks) else None, sparsity[i] if i < len(sparsity) else -1
            if len(masks) != len(self.W) or (s > 0) != (m is not None) or (m is not None and m.shape != w.shape):
                raise SparsetrainError(f"RigLScheduler state_dict: mask {i} ({self.names[i]}) does not fit S={s} "
                                       f"and shape {tuple(w.shape)}.")
        self.dense_allocation, self.S = state_dict["dense_allocation"], sparsity
        for k in _HYPERPARAMS:
            setattr(self, k, state_dict["hyperparams"][k])
        self.step, self.rigl_steps = int(state_dict["step"]), int(state_dict["rigl_steps"])
        self._check()
        self._bind({self.names[i]: m.to(w.device, torch.bool).clone()
                    for i, (m, w) in enumerate(zip(masks, self.W, strict=True)) if m is not None})
        dense_grads = state_dict.get("dense_grads") or [None] * len(self.W)
        for hook, g, w in zip(self.backward_hook_objects, dense_grads, self.W, strict=True):
            if hook is not None and g is not None:
                hook.dense_grad = g.to(w.device).clone()

    def __str__(self) -> str:
        act = [n if m is None else int(m.sum()) for n, m in zip(self.N, self.backward_masks, strict=True)]
        conv = [i for i, lin in enumerate(self._linear_layers_mask) if not lin]
        nz, conv_nz, conv_n = sum(act), sum(act[i] for i in conv), sum(self.N[i] for i in conv)
        pairs = list(zip(act, self.N, strict=True))
        fields = {"layers": len(self.N), "nonzero_params": "[" + ", ".join(f"{a}/{n}" for a, n in pairs) + "]",
                  "nonzero_percentages": "[" + ", ".join(f"{100 * a / n:.2f}%" for a, n in pairs) + "]",
                  "total_nonzero_params": f"{nz}/{sum(self.N)} ({100 * nz / sum(self.N):.2f}%)",
                  "total_CONV_nonzero_params": f"{conv_nz}/{conv_n} ({100 * conv_nz / max(conv_n, 1):.2f}%)",
                  "step": self.step, "num_rigl_steps": self.rigl_steps, "T_end": self.T_end, "delta": self.delta_T,
                  "alpha": self.alpha, "grad_accumulation_n": self.grad_accumulation_n, "static_topo": self.static_topo,
                  "ignoring_linear_layers": self.ignore_linear_layers,
                  "sparsity_distribution": self.sparsity_distribution}
        return "RigLScheduler(\n" + "".join(f"{k}={v},\n" for k, v in fields.items()) + ")"
