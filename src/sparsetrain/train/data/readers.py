"""Readers for the standard on-disk formats (no torchvision, no download).

* CIFAR-10/100 "python version" pickle batches, loaded with a restricted unpickler
  that only builds numpy arrays, lists, dicts and bytes (a pickle can run code).
* MNIST / Fashion-MNIST idx files, plain or gzip, parsed with ``struct`` and
  ``numpy.frombuffer`` (magic numbers 2051 for images, 2049 for labels).
* Image folders ``root/<split>/<class>/*.png|jpg`` read with Pillow (optional import).

Every reader returns numpy arrays and raises :class:`SparsetrainError` naming the
expected files, the path it looked at, and where to get the data.
"""

from __future__ import annotations

import gzip
import pickle
import struct
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sparsetrain.errors import SparsetrainError

CIFAR_URL = "https://www.cs.toronto.edu/~kriz/cifar.html"
MNIST_URL = "https://ossci-datasets.s3.amazonaws.com/mnist/ (a mirror of http://yann.lecun.com/exdb/mnist/)"
FASHION_URL = "https://github.com/zalandoresearch/fashion-mnist (the files in data/fashion/)"
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")

# What a CIFAR pickle may contain: numpy arrays (and their dtypes) and, for pickles
# written by Python 3 with protocol 2, bytes rebuilt through ``_codecs.encode``.
_PICKLE_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
}


class _ArraysOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _PICKLE_ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} (only numpy arrays are allowed)")


def load_pickle(path: Path) -> Any:
    """Load a data pickle (Python 2 or 3) that may hold only numpy arrays, lists, dicts, bytes and numbers."""
    try:
        with open(path, "rb") as f:
            return _ArraysOnlyUnpickler(f, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, ImportError) as e:
        raise SparsetrainError(f"{path} is not a valid data pickle ({e}).") from None


def _listing(folder: Path) -> str:
    if not folder.is_dir():
        return "it does not exist" if not folder.exists() else "it is not a directory"
    names = sorted(p.name for p in folder.iterdir())
    if not names:
        return "it is empty"
    shown = ", ".join(names[:8]) + (f", ... ({len(names)} entries)" if len(names) > 8 else "")
    return f"it holds: {shown}"


def find_data_dir(root: Path, required: Sequence[str], subdirs: Sequence[str]) -> Path | None:
    """The first of ``root`` and ``root/<subdir>`` that holds every name in ``required``."""
    for folder in [root, *(root / s for s in subdirs)]:
        if folder.is_dir() and all((folder / r).exists() for r in required):
            return folder
    return None


# ----------------------------------------------------------------------------- CIFAR


_CIFAR = {
    10: dict(folder="cifar-10-batches-py", archive="cifar-10-python.tar.gz", label_key=b"labels",
             train=[f"data_batch_{i}" for i in range(1, 6)], test=["test_batch"], title="CIFAR-10"),
    100: dict(folder="cifar-100-python", archive="cifar-100-python.tar.gz", label_key=b"fine_labels",
              train=["train"], test=["test"], title="CIFAR-100"),
}


def _read_cifar_file(path: Path, label_key: bytes) -> tuple[np.ndarray, np.ndarray]:
    batch = load_pickle(path)
    if not isinstance(batch, dict) or b"data" not in batch or label_key not in batch:
        keys = sorted(batch) if isinstance(batch, dict) else type(batch).__name__
        raise SparsetrainError(f"{path} is not a CIFAR batch: expected the keys b'data' and {label_key!r}, "
                               f"found {keys}.")
    data = np.asarray(batch[b"data"])
    labels = np.asarray(batch[label_key], dtype=np.int64)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072 or len(labels) != len(data):
        raise SparsetrainError(f"{path}: expected b'data' as uint8 (N, 3072) with N labels, got "
                               f"{data.dtype} {data.shape} with {len(labels)} labels.")
    return data.reshape(-1, 3, 32, 32), labels


def read_cifar(root: Path, num_classes: int = 10, label_key: bytes | None = None
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Read CIFAR-10 (``num_classes=10``) or CIFAR-100 (``100``) from the python-version batches.

    ``root`` is the extracted folder (``cifar-10-batches-py`` / ``cifar-100-python``) or
    its parent. ``label_key`` overrides the label key (``b"coarse_labels"`` for the 20
    CIFAR-100 superclasses).

    Returns:
        ``(x_train, y_train, x_test, y_test)``: uint8 images ``(N, 3, 32, 32)`` and int64 labels.
    """
    spec = _CIFAR[num_classes]
    names = [*spec["train"], *spec["test"]]
    folder = find_data_dir(root, names, [spec["folder"]])
    if folder is None:
        hint = ""
        if (root / spec["archive"]).exists():
            hint = f" Found {root / spec['archive']}: extract it there (tar xzf {spec['archive']})."
        raise SparsetrainError(
            f"{spec['title']} not found: expected the files {', '.join(names)} in {root} or in "
            f"{root / spec['folder']} ({_listing(root)}).{hint} Download the {spec['title']} python version "
            f"({spec['archive']}) from {CIFAR_URL} and extract it into {root}.")
    key = label_key or spec["label_key"]
    parts = {s: [_read_cifar_file(folder / n, key) for n in spec[s]] for s in ("train", "test")}
    x_train, y_train = (np.concatenate(a) for a in zip(*parts["train"], strict=True))
    x_test, y_test = (np.concatenate(a) for a in zip(*parts["test"], strict=True))
    return x_train, y_train, x_test, y_test


# ----------------------------------------------------------------------------- idx (MNIST)

IDX_IMAGES_MAGIC = 2051
IDX_LABELS_MAGIC = 2049
MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte", "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte", "test_labels": "t10k-labels-idx1-ubyte",
}


def read_idx(path: Path) -> np.ndarray:
    """Read an idx1 (labels, magic 2049) or idx3 (images, magic 2051) ubyte file, plain or ``.gz``.

    Returns:
        uint8 array ``(N,)`` for labels or ``(N, rows, cols)`` for images.
    """
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:
        raise SparsetrainError(f"cannot read {path} ({e}).") from None
    if len(raw) < 8:
        raise SparsetrainError(f"{path} is too short to be an idx file ({len(raw)} bytes).")
    magic, n = struct.unpack(">II", raw[:8])
    if magic == IDX_LABELS_MAGIC:
        shape, offset = (n,), 8
    elif magic == IDX_IMAGES_MAGIC and len(raw) >= 16:
        rows, cols = struct.unpack(">II", raw[8:16])
        shape, offset = (n, rows, cols), 16
    else:
        raise SparsetrainError(f"{path} is not an idx ubyte file: magic number {magic}, expected "
                               f"{IDX_IMAGES_MAGIC} (images) or {IDX_LABELS_MAGIC} (labels).")
    size = int(np.prod(shape))
    if len(raw) - offset != size:
        raise SparsetrainError(f"{path}: the header says {shape} ({size} bytes of data) but the file "
                               f"holds {len(raw) - offset}; it is truncated or corrupt.")
    return np.frombuffer(raw, dtype=np.uint8, offset=offset).reshape(shape).copy()  # writable


def _idx_path(folder: Path, stem: str) -> Path | None:
    # ``train-images-idx3-ubyte`` also appears as ``train-images.idx3-ubyte`` (e.g. on Kaggle)
    for name in (stem, stem.replace("-idx", ".idx")):
        for candidate in (folder / name, folder / f"{name}.gz"):
            if candidate.is_file():
                return candidate
    return None


def read_mnist_like(root: Path, title: str, subdirs: Sequence[str], url: str
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Read the four MNIST-format idx files from ``root`` or ``root/<subdir>``.

    Returns:
        ``(x_train, y_train, x_test, y_test)``: uint8 images ``(N, 28, 28)`` and int64 labels.
    """
    for folder in [root, *(root / s for s in subdirs)]:
        paths = {k: _idx_path(folder, stem) for k, stem in MNIST_FILES.items()}
        if all(paths.values()):
            break
    else:
        looked = ", ".join(str(f) for f in [root, *(root / s for s in subdirs)])
        raise SparsetrainError(
            f"{title} not found: expected the idx files {', '.join(MNIST_FILES.values())} (plain or .gz) "
            f"in one of {looked} ({root}: {_listing(root)}). Download them from {url} into {root}.")
    arrays = {k: read_idx(p) for k, p in paths.items()}  # type: ignore[arg-type]
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise SparsetrainError(f"{title} in {folder}: the {split} images {images.shape} and labels "
                                   f"{labels.shape} do not match (are the image and label files swapped?).")
    return (arrays["train_images"], arrays["train_labels"].astype(np.int64),
            arrays["test_images"], arrays["test_labels"].astype(np.int64))


# ----------------------------------------------------------------------------- image folders


def _pil_image() -> Any:
    try:
        from PIL import Image
    except ImportError:
        raise SparsetrainError("the imagefolder dataset needs Pillow: pip install pillow") from None
    return Image


def read_image_split(folder: Path, classes: Sequence[str] | None, size: tuple[int, int], mode: str
                     ) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Read ``folder/<class>/<image>`` into uint8 ``(N, C, H, W)`` with ``size = (H, W)``.

    Args:
        folder: the split folder, one sub-folder per class.
        classes: the class names of the train split (``None``: use this folder's, sorted).
        size: ``(height, width)`` every image is resized to (bilinear).
        mode: Pillow mode, ``"RGB"`` or ``"L"``.

    Returns:
        ``(images, labels, classes)``.
    """
    image = _pil_image()
    found = sorted(p.name for p in folder.iterdir() if p.is_dir())
    if classes is None:
        classes = found
    if not classes:
        raise SparsetrainError(f"{folder} has no class folders: expected {folder}/<class>/<image>.png "
                               f"({_listing(folder)}).")
    extra = sorted(set(found) - set(classes))
    if extra:
        raise SparsetrainError(f"{folder} has classes that the train split lacks: {', '.join(extra)}.")
    index = {c: i for i, c in enumerate(classes)}
    images, labels = [], []
    for name in found:
        files = sorted(p for p in (folder / name).iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
        for path in files:
            try:
                with image.open(path) as im:
                    im = im.convert(mode).resize((size[1], size[0]), image.Resampling.BILINEAR)
                    arr = np.asarray(im, dtype=np.uint8)
            except OSError as e:
                raise SparsetrainError(f"cannot read the image {path} ({e}).") from None
            images.append(arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1))
            labels.append(index[name])
    if not images:
        raise SparsetrainError(f"{folder} holds no images ({', '.join(IMAGE_EXTENSIONS)}) in its class folders "
                               f"{', '.join(found)}.")
    return np.stack(images), np.asarray(labels, dtype=np.int64), list(classes)
