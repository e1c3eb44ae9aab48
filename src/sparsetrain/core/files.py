"""Files written whole or not at all: a temp file in the same folder, fsync, then rename.

A process killed at any moment (SIGINT, SIGKILL) or a full disk leaves the
previous file or the new one, never a torn one; new files get the user's umask
like any other tool's. Checkpoints, run files, plots and exports all go through
here.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

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


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write a text file atomically (summary.json, config.yaml)."""
    atomic_write_bytes(path, lambda fh: fh.write(text.encode()))
