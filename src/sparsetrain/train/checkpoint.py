"""Atomic checkpoints: write to a temporary file in the same folder, fsync, then rename.

A run killed at any moment (SIGINT, SIGKILL) leaves either the previous
checkpoint or the new one, never a half-written file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from sparsetrain.core.files import FILE_MODE, atomic_write_bytes  # noqa: F401  (FILE_MODE: what tests compare against)
from sparsetrain.errors import SparsetrainError


def save_checkpoint(state: dict[str, Any], path: str | Path) -> None:
    """``torch.save(state)`` atomically.

    Example:
        >>> import tempfile, os
        >>> p = os.path.join(tempfile.mkdtemp(), "ckpt.pt")
        >>> save_checkpoint({"epoch": 3}, p); load_checkpoint(p)["epoch"]
        3
    """
    atomic_write_bytes(path, lambda fh: torch.save(state, fh))


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True`` (tensors and primitives only)."""
    path = Path(path)
    if not path.is_file():
        raise SparsetrainError(f"no checkpoint at {path}.")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # corrupt or foreign file: say so plainly
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SparsetrainError(
            f"the checkpoint {path} is damaged (truncated, or not written by sparsetrain?) and cannot be read "
            f"({reason[:200]}). sparsetrain writes checkpoints atomically, so something else changed this file; a "
            "copy or backup of the run folder is the only earlier state. Start the run again with --overwrite "
            "(the damaged run is kept as NAME.old-<time>).") from None
