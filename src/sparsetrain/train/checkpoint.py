"""Atomic checkpoints: write to a temporary file in the same folder, fsync, then rename.

A run killed at any moment (SIGINT, SIGKILL) leaves either the previous
checkpoint or the new one, never a half-written file.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from sparsetrain.errors import SparsetrainError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


#: the mode a plain ``open(path, "w")`` would give (mkstemp's temp files are 0600)
FILE_MODE = 0o666 & ~_umask()


def atomic_write_bytes(path: str | Path, write,
                       advice: str = "Free some space or choose another folder, then --resume.") -> None:
    """Call ``write(file_object)`` on a temp file next to ``path``, then rename it over ``path``.

    The file gets the user's umask like any other tool's; a disk that is full or
    read-only gives one line naming the file and ending in ``advice``, and the
    previous ``path`` stays intact.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise SparsetrainError(f"cannot write {path}: {exc.strerror or exc}. Choose a writable folder.") from None
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        kept = f"the previous {path.name} is intact" if path.exists() else f"no {path.name} was written"
        raise SparsetrainError(f"cannot write {path}: {exc.strerror or exc}; {kept}. {advice}") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write a text file atomically (summary.json, config.yaml)."""
    atomic_write_bytes(path, lambda fh: fh.write(text.encode()))
