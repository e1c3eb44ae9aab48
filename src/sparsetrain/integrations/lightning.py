"""PyTorch Lightning adapter: a ``Callback`` that trains the ``LightningModule`` sparse.

``lightning.pytorch`` is used when installed, else the older ``pytorch_lightning``
package. Without either, this module still imports (so documentation tools and
test collection work) but creating the callback raises ``ImportError``.

Example::

    import lightning.pytorch as pl
    from sparsetrain.integrations.lightning import SparsityCallback

    trainer = pl.Trainer(max_epochs=10, callbacks=[SparsityCallback("rigl", density=0.1)])
    trainer.fit(model, datamodule)
    trainer.fit(model, datamodule, ckpt_path="last.ckpt")  # resumes masks and schedule too

LightningCLI YAML (the method's hyperparameters go in ``method_args``)::

    trainer:
      callbacks:
        - class_path: sparsetrain.integrations.lightning.SparsityCallback
          init_args: {method: rigl, method_args: {density: 0.1, update_every: 100}}
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import nn

from sparsetrain.engine import Sparsifier
from sparsetrain.errors import SparsetrainError
from sparsetrain.integrations import attach_resuming

try:
    import lightning.pytorch as pl
except ImportError:  # pragma: no cover - depends on what is installed
    try:
        import pytorch_lightning as pl  # type: ignore[no-redef]
    except ImportError:
        pl = None  # type: ignore[assignment]

_MISSING = ("sparsetrain.integrations.lightning needs PyTorch Lightning: `pip install lightning` "
            "(or `pip install pytorch-lightning`).")
_Callback: type = pl.Callback if pl is not None else object


class SparsityCallback(_Callback):
    """Keeps the ``LightningModule`` sparse during ``trainer.fit``.

    On fit start it calls :func:`sparsetrain.attach` on ``pl_module`` and the
    trainer's first optimizer with ``total_steps=trainer.estimated_stepping_batches``.
    Its state (masks, step, schedule, generator) is saved in every Lightning
    checkpoint under this callback's ``state_key`` and restored on
    ``trainer.fit(..., ckpt_path=...)``: the state Lightning hands over before
    the optimizer exists is kept until the sparsifier is attached. At the end of
    each training epoch it logs ``sparsity/density`` and, with ``log_layers``,
    ``sparsity/layer/<parameter name>``. It detaches at the end of fit (the model
    keeps its zeros); the sparsifier stays readable as :attr:`sparsifier`.

    Args:
        method: a registered method name (``sparsetrain.list_methods()``).
        seed: seeds the sparsifier's own generator (masks, random growth).
        include: glob patterns over parameter names to sparsify (default: every
            conv / linear / Conv1D / attention weight).
        exclude: glob patterns removed from the selection.
        log_layers: also log the density of every sparsified layer.
        method_args: the method's hyperparameters as one mapping (the form
            LightningCLI / jsonargparse can fill from YAML).
        **method_kwargs: the method's hyperparameters (``density``, ``update_every``, ...);
            they override ``method_args``.

    Example::

        trainer = pl.Trainer(max_epochs=5, callbacks=[SparsityCallback("set", density=0.2)])
        trainer.fit(model, train_loader)
        print(trainer.callbacks[0].sparsifier.report())
    """

    def __init__(self, method: str = "rigl", seed: int = 0, include: list[str] | None = None,
                 exclude: Sequence[str] = (), log_layers: bool = True,
                 method_args: dict[str, Any] | None = None, **method_kwargs: Any) -> None:
        if pl is None:
            raise ImportError(_MISSING)
        super().__init__()
        self.method, self.seed, self.log_layers = method, int(seed), log_layers
        self.include = list(include) if include is not None else None
        self.exclude = list(exclude)
        self.method_kwargs: dict[str, Any] = {**(method_args or {}), **method_kwargs}
        self.sparsifier: Sparsifier | None = None
        self._attached = False
        self._pending: dict[str, Any] | None = None

    # ------------------------------------------------------------------ fit
    def on_fit_start(self, trainer: Any, pl_module: nn.Module) -> None:
        """Attach to ``pl_module`` and the first optimizer; apply a buffered checkpoint state."""
        if not trainer.optimizers:
            raise SparsetrainError("SparsityCallback needs an optimizer: configure_optimizers returned none.")
        total = trainer.estimated_stepping_batches
        if total in (float("inf"), None) or int(total) < 1:
            raise SparsetrainError(f"cannot size the sparsity schedule: estimated_stepping_batches is {total!r}; "
                                   "set max_steps or max_epochs on the Trainer.")
        state, self._pending = self._pending, None
        self.sparsifier = attach_resuming(pl_module, trainer.optimizers[0], self.method, total_steps=int(total),
                                          seed=self.seed, include=self.include, exclude=self.exclude,
                                          state=state, **self.method_kwargs)
        self._attached = True

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        """Log the overall (and per-layer) density to the trainer's loggers."""
        if self.sparsifier is not None and self._attached:
            pl_module.log_dict(self.metrics(), on_step=False, on_epoch=True)

    def on_fit_end(self, trainer: Any, pl_module: nn.Module) -> None:
        """Remove the optimizer hooks; the model keeps its zeros."""
        self._detach()

    def on_exception(self, trainer: Any, pl_module: nn.Module, exception: BaseException) -> None:
        """Remove the hooks when fit fails, so the optimizer can be reused."""
        self._detach()

    def metrics(self) -> dict[str, float]:
        """``{"sparsity/density": d, "sparsity/layer/<name>": d_layer, ...}`` of the current masks."""
        if self.sparsifier is None:
            return {}
        out = {"sparsity/density": self.sparsifier.density()}
        if self.log_layers:
            out.update({f"sparsity/layer/{row['name']}": row["density"] for row in self.sparsifier.report().rows})
        return out

    def _detach(self) -> None:
        if self.sparsifier is not None and self._attached:
            self.sparsifier.detach()
        self._attached = False

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        """The sparsifier's ``state_dict`` (tensors and primitives), saved in Lightning checkpoints."""
        if self.sparsifier is not None:
            return self.sparsifier.state_dict()
        return dict(self._pending or {})

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore now if attached, else keep the state until :meth:`on_fit_start` attaches."""
        if not state_dict:
            return
        if self.sparsifier is not None and self._attached:
            self.sparsifier.load_state_dict(state_dict)
        else:
            self._pending = state_dict

