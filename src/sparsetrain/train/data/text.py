"""A character-level language-modelling corpus that needs no download: the Python standard library.

``pystdlib`` reads the ``.py`` files of the running interpreter's own standard
library (``sysconfig.get_paths()["stdlib"]``, without ``site-packages``). Each
file goes to train, validation or test by a CRC-32 of its relative path (so the
split is the same on every machine and in every process, and no file is in two
splits); files are read in that hash order until each split holds its number
of characters. Characters map to a fixed vocabulary (tab, newline and printable
ASCII; anything else is one "unknown" id), so the vocabulary does not depend on
the text. An item is a window of ``context`` ids and the same window shifted by
one: ``(x, y)`` with ``y[t] = x[t + 1]``. The corpus depends on the Python
version (the summary records it). docs/guides/transformers.md, "The GPT recipe".

Example:
    >>> from sparsetrain.train.data import create_dataset
    >>> s = create_dataset("pystdlib", context=32, train_chars=20_000, val_chars=4_000, test_chars=4_000)
    >>> x, y = s.train[0]
    >>> tuple(x.shape), s.task, s.num_classes, bool((x[1:] == y[:-1]).all())
    ((32,), 'language_model', 98, True)
"""

from __future__ import annotations

import functools
import sysconfig
import zlib
from pathlib import Path

import torch
from torch.utils.data import TensorDataset

from sparsetrain.errors import SparsetrainError
from sparsetrain.train.data.registry import DataSplits, register_dataset

#: tab, newline, then printable ASCII 32..126; id VOCAB_SIZE - 1 is "unknown"
CHARS = "\t\n" + "".join(chr(c) for c in range(32, 127))
VOCAB_SIZE = len(CHARS) + 1
_IDS = {c: i for i, c in enumerate(CHARS)}
_SKIP = {"site-packages", "dist-packages", "__pycache__"}
#: of every 20 hash buckets, one goes to validation and one to test
_BUCKETS, _VAL, _TEST = 20, 0, 1


def encode(text: str) -> torch.Tensor:
    """Character ids (int64) of ``text`` in :data:`CHARS`; other characters get the unknown id.

    Example:
        >>> encode("a\\n\\u00e9").tolist()
        [67, 1, 97]
    """
    unknown = VOCAB_SIZE - 1
    return torch.tensor([_IDS.get(c, unknown) for c in text], dtype=torch.int64)


def decode(ids: torch.Tensor) -> str:
    """Text of character ids (the unknown id prints as ``?``)."""
    return "".join(CHARS[i] if i < len(CHARS) else "?" for i in ids.tolist())


@functools.cache
def stdlib_files(root: Path | None = None) -> tuple[tuple[str, Path], ...]:
    """``(relative path, path)`` of the standard library's ``.py`` files, in hash order (CRC-32, then path).

    Listed once per process (walking the library takes seconds).
    """
    root = Path(root or sysconfig.get_paths()["stdlib"])
    files = [(p.relative_to(root).as_posix(), p) for p in root.rglob("*.py")
             if not _SKIP & set(p.relative_to(root).parts)]
    return tuple(sorted(files, key=lambda f: (zlib.crc32(f[0].encode()), f[0])))


def split_of(relpath: str) -> str:
    """The split (train, val or test) a source file belongs to, fixed by a hash of its relative path."""
    bucket = zlib.crc32(relpath.encode()) % _BUCKETS
    return "val" if bucket == _VAL else "test" if bucket == _TEST else "train"


def _windows(ids: torch.Tensor, context: int) -> TensorDataset:
    n = (ids.numel() - 1) // context
    if n < 1:
        raise SparsetrainError(f"pystdlib: a split of {ids.numel()} characters holds no window of {context + 1}; "
                               "raise its *_chars or lower context.")
    x = ids[: n * context].view(n, context)
    y = ids[1: n * context + 1].view(n, context)
    return TensorDataset(x.clone(), y.clone())


@register_dataset("pystdlib")
def pystdlib(root: object = None, context: int = 64, train_chars: int = 1_000_000, val_chars: int = 100_000,
             test_chars: int = 100_000) -> DataSplits:
    """The standard library's sources as a character-level LM task (see the module docstring).

    ``root`` is ignored: the text is read from the running interpreter's installation.
    """
    if context < 1 or min(train_chars, val_chars, test_chars) < 1:
        raise SparsetrainError(f"pystdlib needs positive context and *_chars, got context={context}, "
                               f"train_chars={train_chars}, val_chars={val_chars}, test_chars={test_chars}.")
    want = {"train": train_chars, "val": val_chars, "test": test_chars}
    texts: dict[str, list[str]] = {k: [] for k in want}
    have = dict.fromkeys(want, 0)
    for rel, path in stdlib_files():
        split = split_of(rel)
        if have[split] >= want[split]:
            if all(have[k] >= want[k] for k in want):
                break
            continue
        text = path.read_text(encoding="utf-8", errors="replace")[: want[split] - have[split]]
        texts[split].append(text)
        have[split] += len(text)
    short = [k for k in want if have[k] < want[k]]
    if short:
        raise SparsetrainError(f"pystdlib: the standard library at {sysconfig.get_paths()['stdlib']} holds only "
                               f"{have} characters per split; lower {', '.join(f'{k}_chars' for k in short)}.")
    data = {k: _windows(encode("\n".join(v)), context) for k, v in texts.items()}
    return DataSplits("pystdlib", data["train"], data["test"], num_classes=VOCAB_SIZE, input_shape=(context,),
                      val=data["val"], classes=list(CHARS) + ["<unk>"], task="language_model")
