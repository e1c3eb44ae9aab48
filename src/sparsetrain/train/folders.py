"""``--overwrite`` without data loss: only a folder sparsetrain wrote is replaced, and it is moved aside.

A run folder is recognised by its marker files (``config.yaml`` plus one of
``summary.json`` / ``checkpoint.pt`` / ``metrics.jsonl``; an IMP folder by
``imp.yaml``; a Gem-Miner folder by ``config.yaml`` plus ``mask.pt`` or
``metrics.jsonl``; a comparison by ``compare.yaml``) and by holding nothing else than the kinds of files
sparsetrain writes. Anything else is refused with one line that says why.
The old folder is renamed to ``NAME.old-<UTC time>`` next to it rather than
deleted, so an ``--overwrite`` typed by mistake loses nothing; delete the
``.old-`` folders yourself when you no longer need them.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from sparsetrain.errors import SparsetrainError

#: endings of the files sparsetrain writes into a run folder (tmp: an interrupted atomic write)
RUN_FILE_SUFFIXES = {".yaml", ".jsonl", ".json", ".pt", ".png", ".safetensors", ".onnx", ".md", ".tmp", ".lock",
                     ".csv", ".txt"}
#: marker sets: a folder holding every file of one set was written by sparsetrain
MARKERS = ({"config.yaml", "summary.json"}, {"config.yaml", "checkpoint.pt"}, {"config.yaml", "metrics.jsonl"},
           {"imp.yaml"}, {"config.yaml", "mask.pt"}, {"compare.yaml"})


def is_sparsetrain_folder(path: Path) -> bool:
    """True when ``path`` holds a marker set and nothing but files (and such folders) sparsetrain writes.

    Example:
        >>> import tempfile
        >>> d = Path(tempfile.mkdtemp())
        >>> _ = (d / "config.yaml").write_text("a: 1"), (d / "summary.json").write_text("{}")
        >>> is_sparsetrain_folder(d)
        True
        >>> _ = (d / "thesis.docx").write_text("mine")
        >>> is_sparsetrain_folder(d)
        False
    """
    if not path.is_dir() or path.is_symlink():
        return False
    names = {p.name for p in path.iterdir()}
    if not any(marker <= names for marker in MARKERS):
        return False
    for entry in path.iterdir():
        if entry.is_symlink():
            return False
        if entry.is_dir():
            if not is_sparsetrain_folder(entry):  # an IMP round, a plots folder of a run, ...
                return False
        elif entry.suffix not in RUN_FILE_SUFFIXES:
            return False
    return True


def check_run_name(name: str) -> None:
    """A relative run name must name a folder strictly inside the runs root.

    Judged on the spelling (``a/../..`` is above the root even when ``a`` does
    not exist), so a name never points outside the root; an absolute name is
    the user's explicit choice and is allowed.

    Example:
        >>> check_run_name("granet-s0")
        >>> check_run_name("..")
        Traceback (most recent call last):
        ...
        sparsetrain.errors.SparsetrainError: refusing the run name '..': ...
    """
    if Path(name).is_absolute():
        return
    norm = os.path.normpath(name)
    if norm == "." or norm == ".." or norm.startswith(".." + os.sep):
        raise SparsetrainError(f"refusing the run name {name!r}: a relative run name must name a folder inside the "
                               "runs folder (run.dir), not that folder or one above it. Choose another --run.name.")


def replace_folder(path: Path, what: str = "run folder") -> Path | None:
    """Make room for a new run at ``path``: move an old sparsetrain folder aside, refuse anything else.

    Args:
        path: the folder the new run will write.
        what: how the message calls the folder.

    Returns:
        Where the old folder went (``NAME.old-<time>``), or None if there was none.

    Raises:
        SparsetrainError: ``path`` is the current folder or one above it, or
            not a folder sparsetrain wrote.
    """
    resolved = path.resolve()
    cwd = Path.cwd().resolve()
    if resolved == cwd or resolved in cwd.parents:
        raise SparsetrainError(f"refusing to overwrite {path}: it is the current folder or one above it. "
                               "Choose another run name or --out.")
    if not path.exists() or (path.is_dir() and not any(path.iterdir())):
        return None
    if not is_sparsetrain_folder(path):
        raise SparsetrainError(f"refusing to overwrite {path}: it is not a {what} sparsetrain wrote (it holds files "
                               "sparsetrain does not write, or none of its marker files). Move it away yourself or "
                               "choose another name.")
    acquire_run_lock(path)  # a run still writing there is never moved away under it
    release_run_lock(path)
    aside = path.with_name(f"{path.name}.old-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}")
    n = 1
    while aside.exists():
        n += 1
        aside = aside.with_name(f"{path.name}.old-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-{n}")
    path.rename(aside)
    print(f"--overwrite: the old {what} {path} is kept as {aside}")
    return aside


LOCK_NAME = "run.lock"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def acquire_run_lock(run_dir: Path) -> Path:
    """Take ``run_dir/run.lock`` (pid and host) or refuse: two writers must never share a run folder.

    A lock whose process is gone (on this host) is stale and taken over, as is
    one this process already holds. Released by :func:`release_run_lock`, and at exit.
    """
    import atexit
    import socket

    path, host, pid = run_dir / LOCK_NAME, socket.gethostname(), os.getpid()
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
        except FileExistsError:
            try:
                owner_pid, owner_host = path.read_text().split()[:2]
                owner = int(owner_pid)
            except (OSError, ValueError):
                owner, owner_host = -1, host  # unreadable: treat as stale
            if owner_host == host and (owner == pid or not _alive(owner)):
                path.unlink(missing_ok=True)
                continue
            raise SparsetrainError(f"{run_dir} is in use by another sparsetrain process (pid {owner} on "
                                   f"{owner_host}); wait for it to end or stop it. If it is gone, delete {path}."
                                   ) from None
        with os.fdopen(fd, "w") as fh:
            fh.write(f"{pid} {host}\n")
        atexit.register(release_run_lock, run_dir)
        return path
    raise SparsetrainError(f"could not take the lock {path}; delete it if no run uses {run_dir}.")


def release_run_lock(run_dir: Path) -> None:
    """Remove ``run_dir/run.lock`` if this process holds it."""
    path = run_dir / LOCK_NAME
    try:
        if int(path.read_text().split()[0]) == os.getpid():
            path.unlink(missing_ok=True)
    except (OSError, ValueError, IndexError):
        pass
