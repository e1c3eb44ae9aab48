"""Hugging Face ``Trainer`` adapter: a ``TrainerCallback`` that trains the model sparse.

Without ``transformers`` installed this module still imports (so documentation
tools and test collection work) but creating the callback raises ``ImportError``.

Example::

    from transformers import Trainer, TrainingArguments
    from sparsetrain.integrations.transformers import SparsityCallback

    args = TrainingArguments("out", max_steps=1000, save_steps=200)
    trainer = Trainer(model=model, args=args, train_dataset=data,
                      callbacks=[SparsityCallback("rigl", density=0.1, update_every=100)])
    trainer.train()
    trainer.train(resume_from_checkpoint=True)  # resumes masks and schedule too
"""

from __future__ import annotations

import glob
import os
import re
import warnings
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from sparsetrain.engine import Sparsifier
from sparsetrain.errors import SparsetrainError
from sparsetrain.integrations import attach_resuming

try:
    from transformers import TrainerCallback
except ImportError:  # pragma: no cover - depends on what is installed
    TrainerCallback = object  # type: ignore[assignment,misc]

_MISSING = ("sparsetrain.integrations.transformers needs the Hugging Face Trainer: "
            "`pip install transformers accelerate`.")

#: file written into each ``checkpoint-<step>`` folder.
STATE_FILE = "sparsetrain_state.pt"


class SparsityCallback(TrainerCallback):
    """Keeps the model sparse while ``Trainer.train`` runs.

    - ``on_train_begin``: the Trainer creates its optimizer lazily, so the
      sparsifier is attached here, to ``model`` and the (unwrapped) optimizer,
      with ``total_steps=state.max_steps``. When training resumes
      (``state.global_step > 0``) the saved state is loaded from the first of
      these folders that holds ``sparsetrain_state.pt``:
      ``args.resume_from_checkpoint`` when it is a path;
      ``{output_dir}/checkpoint-{global_step}``, the checkpoint the Trainer
      restored its step from (what ``trainer.train(resume_from_checkpoint=...)``
      with ``True`` or a path inside ``output_dir`` loads); the latest
      ``checkpoint-*`` under ``output_dir``. No such file raises an error rather
      than silently drawing new masks.
    - ``on_save``: writes ``sparsetrain_state.pt`` into
      ``{output_dir}/checkpoint-{global_step}`` (temporary file, then ``os.replace``).
    - ``on_log``: adds ``sparsity/density`` to the logs and to the last
      ``state.log_history`` entry. Reporting integrations (TensorBoard, W&B)
      listed before this callback see the logs first; the Trainer puts its
      ``report_to`` callbacks first.
    - ``on_train_end``: detaches (the model keeps its zeros); the sparsifier
      stays readable as :attr:`sparsifier`.

    Args:
        method: a registered method name (``sparsetrain.list_methods()``).
        seed: seeds the sparsifier's own generator (masks, random growth).
        include: glob patterns over parameter names to sparsify (default: every
            conv / linear / Conv1D / attention weight; ``embeddings=True`` adds
            embeddings and the output heads tied to them, such as GPT-2's ``lm_head``).
        exclude: glob patterns removed from the selection (e.g. ``["*.attn.*"]``).
        **method_kwargs: the method's hyperparameters (``density``, ``update_every``, ...).

    Example::

        callback = SparsityCallback("set", density=0.2, update_every=50)
        Trainer(model=model, args=args, train_dataset=data, callbacks=[callback]).train()
        print(callback.sparsifier.report())
    """

    def __init__(self, method: str = "rigl", seed: int = 0, include: list[str] | None = None,
                 exclude: Sequence[str] = (), **method_kwargs: Any) -> None:
        if TrainerCallback is object:
            raise ImportError(_MISSING)
        self.method, self.seed = method, int(seed)
        self.include = list(include) if include is not None else None
        self.exclude = list(exclude)
        self.method_kwargs = method_kwargs
        self.sparsifier: Sparsifier | None = None
        self.loaded_from: str | None = None

    def on_train_begin(self, args: Any, state: Any, control: Any, model: nn.Module | None = None,
                       optimizer: torch.optim.Optimizer | None = None, **kwargs: Any) -> None:
        """Attach to the model and optimizer; load the saved state when resuming."""
        if model is None or optimizer is None:
            raise SparsetrainError("SparsityCallback.on_train_begin needs the Trainer's model and optimizer.")
        if self.sparsifier is not None:
            self.sparsifier.detach()
        saved, self.loaded_from = None, None
        if state.global_step > 0:
            self.loaded_from = find_state_file(args, state.global_step)
            saved = torch.load(self.loaded_from, map_location="cpu", weights_only=True)
        self.sparsifier = attach_resuming(model, _unwrap(optimizer), self.method, total_steps=int(state.max_steps),
                                          seed=self.seed, include=self.include, exclude=self.exclude,
                                          state=saved, **self.method_kwargs)

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """Write the sparsifier state into the checkpoint folder just saved."""
        if self.sparsifier is None or not args.should_save:
            return
        folder = os.path.join(args.output_dir, f"checkpoint-{state.global_step}")
        if not os.path.isdir(folder):  # e.g. a hyperparameter search, whose runs save elsewhere
            warnings.warn(f"SparsityCallback: no checkpoint folder {folder}; the sparsifier state was not saved.",
                          stacklevel=2)
            return
        from sparsetrain.core.files import atomic_write_bytes
        state_dict = self.sparsifier.state_dict()
        atomic_write_bytes(os.path.join(folder, STATE_FILE), lambda fh: torch.save(state_dict, fh),
                           advice="Free some space; the Trainer's own files are not affected.")

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, float] | None = None,
               **kwargs: Any) -> None:
        """Add ``sparsity/density`` to ``logs`` (and to the matching ``log_history`` entry)."""
        if self.sparsifier is None or logs is None:
            return
        density = self.sparsifier.density()
        logs["sparsity/density"] = density
        if state.log_history and state.log_history[-1].get("step") == state.global_step:
            state.log_history[-1]["sparsity/density"] = density

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """Remove the optimizer hooks; the model keeps its zeros."""
        if self.sparsifier is not None:
            self.sparsifier.detach()


def find_state_file(args: Any, global_step: int) -> str:
    """Path of the ``sparsetrain_state.pt`` to resume from (order in :class:`SparsityCallback`).

    Example:
        >>> import tempfile, types
        >>> out = tempfile.mkdtemp()
        >>> for step in (10, 20):
        ...     os.makedirs(f"{out}/checkpoint-{step}")
        ...     open(f"{out}/checkpoint-{step}/{STATE_FILE}", "w").close()
        >>> args = types.SimpleNamespace(output_dir=out, resume_from_checkpoint=None)
        >>> os.path.basename(os.path.dirname(find_state_file(args, 10)))
        'checkpoint-10'
    """
    candidates = []
    explicit = getattr(args, "resume_from_checkpoint", None)
    if isinstance(explicit, str):
        candidates.append(explicit)
    candidates.append(os.path.join(args.output_dir, f"checkpoint-{global_step}"))
    found = [d for d in glob.glob(os.path.join(args.output_dir, "checkpoint-*"))
             if re.fullmatch(r"checkpoint-\d+", os.path.basename(d))]
    if found:
        candidates.append(max(found, key=lambda d: int(d.rsplit("-", 1)[1])))
    for folder in candidates:
        path = os.path.join(folder, STATE_FILE)
        if os.path.isfile(path):
            return path
    raise SparsetrainError(
        f"training resumes at step {global_step} but no {STATE_FILE} was found in {candidates}; "
        "resume from a checkpoint saved with SparsityCallback, or set "
        "TrainingArguments.resume_from_checkpoint to the checkpoint folder.")


def _unwrap(optimizer: Any) -> torch.optim.Optimizer:
    """The torch optimizer inside accelerate's ``AcceleratedOptimizer`` (whose own step hooks never fire)."""
    while isinstance(getattr(optimizer, "optimizer", None), torch.optim.Optimizer):
        optimizer = optimizer.optimizer
    return optimizer
