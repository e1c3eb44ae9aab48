"""The engine: ``Sparsifier`` binds a method to ``(model, optimizer)`` through the
optimizer's own step hooks (docs/concepts.md, "Guarantees").

Per optimizer step (docs/algorithms.md, "Conventions of the Masking family", "per-iteration order", with masks kept
exact at every step):

1. pre-hook: observers read the dense gradients (e.g. SNFS's EMA); if an update
   is due after this step and needs gradients, the dense gradients are
   snapshotted (after DDP all-reduce and GradScaler unscale, contract 4);
   then gradients are masked, so momentum / Adam state stays zero where the
   mask is off (contract 3).
2. the user's optimizer step.
3. post-hook: weights are re-masked with one fused ``torch._foreach_mul_``
   (skipped for SGD / Adam / AdamW, whose update keeps a zero weight with zero
   gradient and zero state exactly zero), the step is counted, and any due
   update runs *after* the optimizer step (rigl-TF / Masking-family order);
   new weights start at 0 with zero state. When several updates are due at one
   step (GraNet's pruning, then its regeneration), weights and state are zeroed
   between them, so a weight one update removed and the next regrows restarts at 0.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from sparsetrain import distributed, sharding
from sparsetrain.context import SparseContext
from sparsetrain.core.kernels import count_true
from sparsetrain.core.layout import out_first
from sparsetrain.core.selection import select, unwrap
from sparsetrain.errors import SparsetrainError
from sparsetrain.methods.registry import Method, create_method
from sparsetrain.metrics.report import DensityReport, density_report
from sparsetrain.ops.base import Op, Update

STATE_FORMAT = "sparsetrain.sparsifier/1"

#: optimizers whose update of a weight with zero gradient, zero value and zero
#: state is exactly zero (weight decay included), so masked gradients alone keep
#: inactive weights at 0.0 and the post-step re-mask can be skipped. Any other
#: optimizer (or a step with a closure, which recomputes gradients after the
#: pre-hook) gets the re-mask of weights and state after every step.
ZERO_PRESERVING = (torch.optim.SGD, torch.optim.Adam, torch.optim.AdamW)


class Sparsifier:
    """Keeps a model sparse while it trains. Create it with :func:`sparsetrain.attach`.

    Attributes:
        model: the user's model (a plain ``nn.Module``; contract 1).
        optimizer: the user's optimizer, whose step hooks drive the method.
        method: the bound :class:`~sparsetrain.methods.registry.Method`.
        history: one dict per topology update (step, dropped, grown, ...).
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer | None, method: Method, *,
                 total_steps: int, seed: int = 0, include=None, exclude=(), embeddings: bool = False,
                 hooks: bool = True, example_input: Any = None, data: Any = None,
                 loss_fn: Any = None, shrink: bool = False, shrink_every: int | None = None,
                 shrink_strict: bool = True) -> None:
        if isinstance(total_steps, bool) or not isinstance(total_steps, int) or total_steps < 1:
            raise SparsetrainError(
                f"total_steps must be a positive int (the number of optimizer steps in training, "
                f"e.g. epochs * len(train_loader)), got {total_steps!r}.")
        if optimizer is not None and getattr(optimizer, "_sparsetrain_attached", False):
            raise SparsetrainError("this optimizer already has a sparsifier attached; call "
                                   ".detach() on the old one first.")
        self.model, self.optimizer, self.method = model, optimizer, method
        sharding.check_wrappers(model)
        self.selection = select(model, include, exclude, embeddings)
        params = {n: s.param for n, s in self.selection.items()}
        #: FSDP2: weights, gradients, state and masks are DTensors; the hot path works on local shards
        self._sharded = sharding.check_sharded(params)
        self._slots = sharding.parameter_slots(unwrap(model), list(params))  # to see fully_shard after attach
        generator = torch.Generator().manual_seed(int(seed))
        self.ctx = SparseContext(params=params, masks={}, optimizer=optimizer,
                                 total_steps=total_steps, generator=generator, model=unwrap(model),
                                 example_input=example_input, data=data, loss_fn=loss_fn,
                                 out_axes={n: s.out_axis for n, s in self.selection.items() if s.out_axis})
        self.history: list[dict[str, Any]] = []
        self._due: list = []
        self._handles: list = []
        self._hooks = hooks
        self._fmask_src: dict = {}
        self._fmask_list: list = []
        self._coupled_params: list = []
        self._coupled_masks: list = []
        #: ever-active weights in channels a shrink removed (they still count in itop_rate)
        self.fired_removed = 0
        #: width-spec entries of the modules a shrink narrowed (``{"module": {type, attrs, tensors}}``)
        self.widths: dict[str, Any] = {}
        self._shrinker = None
        with sharding.full_view(self.ctx) as view:
            event = method.init(view)
        self._apply_topology()
        self.fired = {n: m.clone() for n, m in self.ctx.masks.items()}
        self.history.append({"step": 0, **event, "density": self.density()})
        if shrink:
            from sparsetrain.deploy.shrink import Shrinker
            self._shrinker = Shrinker(every=shrink_every, strict=shrink_strict)
            self._shrinker.check(self)
        if optimizer is not None:
            optimizer._sparsetrain_attached = True  # type: ignore[attr-defined]
            if hooks:
                self._handles = [optimizer.register_step_pre_hook(self._pre_step),
                                 optimizer.register_step_post_hook(self._post_step)]

    # ------------------------------------------------------------------ views
    @property
    def masks(self) -> dict[str, Tensor]:
        """``{parameter name: bool mask}``, True = active."""
        return self.ctx.masks

    @property
    def step_count(self) -> int:
        """Optimizer steps taken under this sparsifier."""
        return self.ctx.step

    def density(self) -> float:
        """Overall density over the sparsified parameters (active / total)."""
        return sum(self._counts().values()) / self.ctx.total_numel()

    def report(self) -> DensityReport:
        """Per-layer table: module type, shape, numel, active, density (``print`` it)."""
        return density_report(self.ctx.params, self.ctx.masks, self._counts(), self.ctx.removed,
                              types={n: s.module_type for n, s in self.selection.items()})

    def _counts(self) -> dict[str, int]:
        """Active weights per layer (FSDP2: as counted at the last update)."""
        return self._active if self._sharded else {n: count_true(m) for n, m in self.ctx.masks.items()}

    def itop_rate(self) -> float:
        """Fraction of weights ever active (ITOP's R_s, docs/algorithms.md, "ITOP rate")."""
        fired = sum(sharding.count(m) for m in self.fired.values()) + self.fired_removed
        return fired / self.ctx.total_numel()

    def __repr__(self) -> str:
        return (f"Sparsifier(method={self.method.name!r}, step={self.ctx.step}/{self.ctx.total_steps}, "
                f"density={self.density():.4f}, layers={len(self.ctx.params)})")

    # ------------------------------------------------------------------ stepping
    def step(self) -> None:
        """Take one optimizer step with sparsity handling (use instead of ``optimizer.step()``)."""
        if self.optimizer is None:
            raise SparsetrainError("this sparsifier has no optimizer to step.")
        if self._hooks:
            self.optimizer.step()
        else:
            self._pre_step(self.optimizer, (self.optimizer,), {})
            self.optimizer.step()
            self._post_step(self.optimizer, (self.optimizer,), {})

    @torch.no_grad()
    def _pre_step(self, optimizer, args, kwargs) -> None:
        ctx = self.ctx
        sharding.check_not_resharded(self._slots)
        grads = {n: p.grad for n, p in ctx.params.items() if p.grad is not None}
        for observe in self.method.observers:
            observe(ctx, grads)
        self._due = self.method.due(ctx.step + 1, ctx.total_steps) if self.method.updates else []
        if self._due and any(u.op.needs_grad for u in self._due):
            ctx.grads = {n: g.detach().clone() for n, g in grads.items()}
        values = [sharding.local(g) for g in grads.values()] if self._sharded else list(grads.values())
        if len(grads) == len(self._fmask_list):  # every parameter has a gradient: the cached list
            torch._foreach_mul_(values, self._fmask_list)
        elif grads:
            torch._foreach_mul_(values, [self._fmask[n] for n in grads])
        for p, m in zip(self._coupled_params, self._coupled_masks, strict=True):
            if p.grad is not None:
                sharding.local(p.grad).mul_(m)

    @torch.no_grad()
    def _post_step(self, optimizer, args, kwargs) -> None:
        # torch calls step hooks with args = (optimizer, *step_args): a closure is args[1] or a kwarg
        closure = kwargs.get("closure", args[1] if len(args) > 1 else None)
        if type(optimizer) not in ZERO_PRESERVING or closure is not None:
            self._mask_weights()
            self._mask_optimizer_state()
        self.ctx.step += 1
        if self._due:
            self._run(self._due)
        self._due = []
        self.ctx.grads = {}
        if self._shrinker is not None and self._shrinker.due(self):
            self._shrink(record_nothing=False)

    def shrink(self) -> dict[str, Any]:
        """Narrow the model now: remove every channel the method froze (``attach(..., shrink=True)``).

        Runs by itself on the shrink cadence (where it records only shrinks
        that removed something); call it to shrink at another point (e.g.
        before saving). Returns the history entry (channels removed, parameters
        and widths after it). docs/guides/faster.md, "Shrink while training".
        """
        return self._shrink(record_nothing=True)

    def _shrink(self, record_nothing: bool) -> dict[str, Any]:
        from sparsetrain.deploy.shrink import Shrinker, shrink
        if self._shrinker is None:
            self._shrinker = Shrinker()
            self._shrinker.check(self)
        event = {"step": self.ctx.step, **shrink(self)}
        if event["shrunk"] or record_nothing:
            self.history.append(event)
        return event

    def width_spec(self) -> dict[str, Any]:
        """The width spec of the narrowed modules (:func:`sparsetrain.deploy.widths.rebuild` reads it)."""
        return {"format": "sparsetrain-width-spec", "version": 1, "model": type(self.ctx.model).__name__,
                "removed": {}, "widths": dict(self.widths)}

    @torch.no_grad()
    def update(self, op: Op, grads: dict[str, Tensor] | None = None) -> dict[str, Any]:
        """Run the topology update ``op`` now, outside the optimizer step hooks.

        For loops that decide themselves when the topology changes (rigl-torch's
        ``if pruner(): optimizer.step()``, :class:`sparsetrain.RigLScheduler`).
        ``grads`` are the dense gradients gradient-based criteria read (for
        example accumulated over several batches); masks, weights, optimizer
        state, the ever-active masks and :attr:`history` follow as after any
        update. Returns the update's history entry.

        Example:
            >>> import torch, sparsetrain
            >>> from sparsetrain import ops
            >>> net = torch.nn.Linear(10, 4)
            >>> sp = sparsetrain.attach(net, torch.optim.SGD(net.parameters(), lr=0.1), "static", density=0.5,
            ...                         total_steps=10)
            >>> sp.update(ops.prune_to(lambda t, T: 0.25))["density"]
            0.25
        """
        self.ctx.grads = dict(grads or {})
        try:
            self._run([Update(lambda step, total: True, op)])
        finally:
            self.ctx.grads = {}
        return self.history[-1]

    def _run(self, updates) -> None:
        event: dict[str, Any] = {}
        with sharding.full_view(self.ctx) as view:
            for i, update in enumerate(updates):
                if i:  # the original applies masks after each update: what one removed, the next regrows from 0
                    view.zero_inactive()
                event.update(update.op(view))
        self._apply_topology()
        for n, m in self.ctx.masks.items():
            self.fired[n] |= m
        self.history.append({"step": self.ctx.step, **event, "density": self.density()})

    @torch.no_grad()
    def _apply_topology(self) -> None:
        """Make masks exact and identical on all ranks, then zero weights and optimizer state."""
        ctx = self.ctx
        for n, p in ctx.params.items():
            m = ctx.masks[n].to(device=p.device, dtype=torch.bool)
            # a full mask for a sharded weight (a state saved without FSDP2): keep this rank's slice
            ctx.masks[n] = sharding.shard_like(m, p) if self._sharded and not sharding.is_sharded(m) else m
        distributed.broadcast_masks(ctx.masks)
        if self._sharded:  # counted over all ranks here, where every rank takes part, so rank 0 may ask alone
            self._active = {n: sharding.count(m) for n, m in ctx.masks.items()}
        # float masks are converted again only for masks that changed (ops replace a mask
        # when they change it; the version counter catches in-place edits)
        old, fmask = self._fmask_src, {}
        for n, p in ctx.params.items():
            m = ctx.masks[n]
            src = old.get(n)
            if src is not None and src[0] is m and src[1] == m._version and src[2].dtype == p.dtype \
                    and src[2].device == p.device and src[2]._version == src[3]:
                fmask[n] = src[2]
            else:
                fmask[n] = sharding.local(m).to(p.dtype)
        self._fmask_src = {n: (ctx.masks[n], ctx.masks[n]._version, f, f._version) for n, f in fmask.items()}
        self._fmask = fmask
        self._param_list = list(ctx.params.values())
        self._fmask_list = [self._fmask[n] for n in ctx.params]
        # coupled 1-D parameters follow the output units that still have an active weight (under
        # FSDP2 a weight and its bias are both cut along dim 0 at the same rows: local rows match)
        self._coupled_params = [p for p, _ in ctx.coupled.values()]
        self._coupled_masks = [_units_alive(ctx.masks[src], ctx.out_axis(src), p).to(p.dtype)
                               for p, src in ctx.coupled.values()]
        self._mask_weights()
        self._mask_optimizer_state()

    def _mask_weights(self) -> None:
        # FSDP2 may re-point a parameter's local shard (at its first forward): look it up every time
        weights = [sharding.local(p) for p in self._param_list] if self._sharded else self._param_list
        torch._foreach_mul_(weights, self._fmask_list)
        for p, m in zip(self._coupled_params, self._coupled_masks, strict=True):
            sharding.local(p).mul_(m)

    def _mask_optimizer_state(self) -> None:
        if self.optimizer is None:
            return
        states, masks = [], []
        pairs = [(p, self._fmask[n]) for n, p in self.ctx.params.items()]
        pairs += list(zip(self._coupled_params, self._coupled_masks, strict=True))
        for p, fmask in pairs:
            for value in self.optimizer.state.get(p, {}).values():
                if isinstance(value, Tensor) and value.shape == p.shape:
                    states.append(sharding.local(value))
                    masks.append(fmask if value.dtype == p.dtype else fmask.to(value.dtype))
        if states:
            torch._foreach_mul_(states, masks)

    @torch.no_grad()
    def apply_masks(self) -> None:
        """Re-zero inactive weights and optimizer state (e.g. after loading weights)."""
        self._apply_topology()

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly; tensors and primitives only (contract 5)."""
        return {
            "format": STATE_FORMAT,
            "method": self.method.name,
            "config": dict(self.method.config),
            "step": self.ctx.step,
            "total_steps": self.ctx.total_steps,
            "shapes": {n: list(p.shape) for n, p in self.ctx.params.items()},
            "masks": {n: m.detach().cpu().clone() for n, m in self.ctx.masks.items()},
            "fired": {n: m.detach().cpu().clone() for n, m in self.fired.items()},
            "generator": self.ctx.generator.get_state(),
            "method_state": _to_cpu(self.ctx.state),
            "removed": dict(self.ctx.removed),
            "fired_removed": self.fired_removed,
            "width_spec": self.width_spec(),
        }

    def load_state_dict(self, state: dict[str, Any], fix: str = "attach with the same arguments to resume") -> None:
        """Restore :meth:`state_dict` output; refuses a state from another model or method.

        Args:
            state: what :meth:`state_dict` returned.
            fix: what the user should do when the method's arguments differ (the
                trainer names its config file instead of ``attach``).
        """
        if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
            raise SparsetrainError("not a sparsetrain Sparsifier state_dict (missing format "
                                   f"{STATE_FORMAT!r}); pass the dict saved from Sparsifier.state_dict().")
        ours = {n: list(p.shape) for n, p in self.ctx.params.items()}
        if state["shapes"] != ours:
            missing = sorted(set(ours) - set(state["shapes"]))
            extra = sorted(set(state["shapes"]) - set(ours))
            wrong = sorted(n for n in set(ours) & set(state["shapes"]) if ours[n] != state["shapes"][n])
            shrunk = bool(state.get("width_spec", {}).get("widths")) and wrong
            hint = (" It was saved by a run that shrank while training: narrow the model first with "
                    "sparsetrain.deploy.widths.apply_widths(model, state['width_spec'])." if shrunk else "")
            raise SparsetrainError(
                "this sparsifier state_dict comes from a different model: "
                f"missing {missing[:5]}, unexpected {extra[:5]}, different shapes {wrong[:5]}. "
                "Load it into the same architecture with the same include/exclude selection." + hint)
        if state["method"] != self.method.name:
            raise SparsetrainError(f"this state_dict was saved by method {state['method']!r}, "
                                   f"but this sparsifier runs {self.method.name!r}.")
        changed = sorted(k for k in set(state["config"]) | set(self.method.config)
                         if state["config"].get(k) != self.method.config.get(k))
        if changed:
            diff = ", ".join(f"{k}: saved {state['config'].get(k)!r}, now {self.method.config.get(k)!r}"
                             for k in changed)
            raise SparsetrainError(f"this state_dict was saved with other {self.method.name} arguments ({diff}); "
                                   f"{fix}.")
        _check_orientation(state["masks"], self.ctx)
        self.ctx.step = int(state["step"])
        self.ctx.total_steps = int(state["total_steps"])
        self.ctx.masks = {n: m.clone() for n, m in state["masks"].items()}
        self.ctx.removed = dict(state.get("removed", {}))
        self.fired_removed = int(state.get("fired_removed", 0))
        self.widths = dict(state.get("width_spec", {}).get("widths", {}))
        self.ctx.generator.set_state(state["generator"])
        device = next(iter(self.ctx.params.values())).device
        self.ctx.state = sharding.shard_state(_to_device(state["method_state"], device), self.ctx.params)
        self._apply_topology()
        self.fired = {n: _like(state["fired"][n], self.ctx.masks[n]) for n in self.ctx.masks}

    def detach(self) -> nn.Module:
        """Remove the hooks; the model stays a plain module with its zeros."""
        for handle in self._handles:
            handle.remove()
        self._handles = []
        if self.optimizer is not None:
            self.optimizer._sparsetrain_attached = False  # type: ignore[attr-defined]
        return self.model


def _check_orientation(masks: dict[str, Tensor], ctx: SparseContext) -> None:
    """Refuse masks not shaped like their weight (a Conv1D mask saved as ``[out, in]`` is transposed)."""
    for n, m in masks.items():
        shape = tuple(ctx.params[n].shape)
        if tuple(m.shape) == shape:
            continue
        hint = (" It is the transposed shape: a Hugging Face Conv1D weight is [in, out]; pass mask.T."
                if tuple(m.shape) == shape[::-1] else "")
        raise SparsetrainError(f"the saved mask of {n!r} has shape {tuple(m.shape)}, its weight {shape}.{hint}")


def _rows_alive(mask: Tensor) -> Tensor:
    """Per output unit (dim 0): whether any of its weights is active."""
    return mask.reshape(mask.shape[0], -1).any(1)


def _units_alive(mask: Tensor, axis: int, coupled: Tensor) -> Tensor:
    """This rank's part of "output unit has an active weight", laid out like the coupled 1-D ``coupled``.

    FSDP2 cuts a weight along dim 0: for the usual layout a shard holds whole output units at the
    rows its bias shard holds; a weight whose out axis is another dim (a Hugging Face Conv1D) is
    gathered first (every rank calls this at the same point).
    """
    if axis and sharding.is_sharded(mask):
        return sharding.local(sharding.shard_like(_rows_alive(out_first(sharding.full(mask), axis)), coupled))
    return _rows_alive(out_first(sharding.local(mask), axis))


def _like(mask: Tensor, like: Tensor) -> Tensor:
    """A saved mask as a copy on ``like``'s device and in its layout (a full mask is cut to a shard)."""
    mask = mask.to(like.device).clone()
    return sharding.shard_like(mask, like) if sharding.is_sharded(like) and not sharding.is_sharded(mask) else mask


def _to_cpu(obj: Any) -> Any:
    if isinstance(obj, Tensor):
        return obj.detach().cpu().clone()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_to_cpu(v) for v in obj]
    return obj


def _to_device(obj: Any, device: torch.device) -> Any:
    if isinstance(obj, Tensor):
        return obj.to(device).clone()
    if isinstance(obj, dict):
        return {k: _to_device(v, device) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_to_device(v, device) for v in obj]
    return obj


def attach(model: nn.Module, optimizer: torch.optim.Optimizer | None, method: str | Method = "rigl", *,
           total_steps: int | None = None, seed: int = 0, include=None, exclude=(),
           embeddings: bool = False, hooks: bool = True, example_input: Any = None, data: Any = None,
           loss_fn: Any = None, shrink: bool = False, shrink_every: int | None = None, shrink_strict: bool = True,
           **method_kwargs: Any) -> Sparsifier:
    """Make ``model`` train sparse with ``method``; the training loop stays as it was.

    Args:
        model: any ``nn.Module`` (conv, linear, Hugging Face Conv1D and attention projection weights are
            sparsified; docs/guides/transformers.md).
        optimizer: the optimizer that trains it (any torch optimizer).
        method: a registered name (``sparsetrain.list_methods()``) or a Method.
        total_steps: number of optimizer steps in training (epochs * len(loader)).
        seed: seeds the sparsifier's own generator (masks, random growth).
        include: glob patterns over parameter names to sparsify (default: every conv / linear / Conv1D /
            attention weight); a pattern that matches none is an error.
        exclude: glob patterns over parameter names to leave dense.
        embeddings: also sparsify ``nn.Embedding`` weights (and output heads tied to them).
        hooks: run through the optimizer's step hooks (default); with False,
            call ``sparsifier.step()`` instead of ``optimizer.step()``.
        example_input: an input batch, for methods that trace the model
            (Chase's channel dependency graph).
        data: an iterable of ``(inputs, targets)`` batches, for methods that
            score weights on data at initialisation (SNIP, GraSP).
        loss_fn: ``loss_fn(outputs, targets)``, used with ``data``
            (default: cross-entropy, applied by the methods that need it).
        shrink: narrow the model in place while it trains, as the method
            removes channels for good (Chase; prune, static, rigl, set, dst
            with ``granularity="filter"``), so training gets faster;
            outputs are unchanged. Needs ``example_input``.
            docs/guides/faster.md, "Shrink while training".
        shrink_every: shrink every this many optimizer steps (default: after
            each of the method's channel-removal events).
        shrink_strict: with False, a model the dependency graph cannot trace
            trains unshrunk after a warning instead of failing at attach.
        **method_kwargs: the method's hyperparameters (``density``, ...).

    Example:
        >>> import torch, sparsetrain
        >>> net = torch.nn.Sequential(torch.nn.Linear(20, 30), torch.nn.ReLU(), torch.nn.Linear(30, 2))
        >>> opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
        >>> sp = sparsetrain.attach(net, opt, "rigl", density=0.1, total_steps=1000)
        >>> round(sp.density(), 2)
        0.1
    """
    if isinstance(optimizer, str):
        raise SparsetrainError(f"attach(model, optimizer, method, ...): the second argument is the optimizer, got the "
                               f"string {optimizer!r}. Write sparsetrain.attach(model, optimizer, {optimizer!r}, ...).")
    meta = [n for n, p in model.named_parameters() if p.is_meta]
    if meta:
        raise SparsetrainError(f"the model's parameters are on the meta device ({meta[0]}, ...): they hold no "
                               "values to sparsify. Materialise them first (model.to_empty(device=...) and "
                               "initialise, or load the weights), then attach.")
    if total_steps is None:
        raise SparsetrainError("attach() needs total_steps, the number of optimizer steps in training "
                               "(e.g. total_steps=epochs * len(train_loader)).")
    if isinstance(method, str):
        method = create_method(method, **method_kwargs)
    elif method_kwargs:
        raise SparsetrainError("method keyword arguments are only accepted with a method name; "
                               f"got a Method object and {sorted(method_kwargs)}.")
    elif not isinstance(method, Method):
        raise SparsetrainError(f"method must be a registered name or a Method, got {type(method).__name__}.")
    return Sparsifier(model, optimizer, method, total_steps=total_steps, seed=seed, include=include,
                      exclude=exclude, embeddings=embeddings, hooks=hooks, example_input=example_input,
                      data=data, loss_fn=loss_fn, shrink=shrink, shrink_every=shrink_every,
                      shrink_strict=shrink_strict)
