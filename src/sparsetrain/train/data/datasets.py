"""The built-in datasets; each builder is registered under its name.

Generated locally (no files): ``mnist1d``, ``digits``, ``synthetic``.
Read from their standard files under ``root``: ``cifar10``, ``cifar100``, ``mnist``,
``fashion_mnist``, ``imagefolder``. Everything is held in memory as float32 inputs
and int64 labels in :class:`torch.utils.data.TensorDataset` objects.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import TensorDataset

from sparsetrain.errors import SparsetrainError, unknown_choice
from sparsetrain.train.data import readers
from sparsetrain.train.data.augment import RandomCropFlip
from sparsetrain.train.data.registry import DataSplits, register_dataset

CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN, CIFAR100_STD = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)
MNIST_MEAN, MNIST_STD = (0.1307,), (0.3081,)
FASHION_MEAN, FASHION_STD = (0.2860,), (0.3530,)


def _normalise(images: np.ndarray, mean: Sequence[float] | None, std: Sequence[float] | None) -> torch.Tensor:
    """uint8 ``(N, C, H, W)`` -> float32 in [0, 1], then ``(x - mean) / std`` per channel if given."""
    x = torch.from_numpy(np.ascontiguousarray(images)).to(torch.float32).div_(255.0)
    if mean is not None and std is not None:
        m = torch.tensor(mean, dtype=torch.float32).reshape(1, -1, 1, 1)
        s = torch.tensor(std, dtype=torch.float32).reshape(1, -1, 1, 1)
        x.sub_(m).div_(s)
    return x


def _labels(y: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.asarray(y, dtype=np.int64))


def _crop_flip(mean: Sequence[float] | None, std: Sequence[float] | None, padding: int = 4) -> RandomCropFlip:
    """The standard crop+flip, padding with black pixels (``-mean/std`` once normalised)."""
    fill = [-m / s for m, s in zip(mean, std, strict=True)] if mean is not None and std is not None else 0.0
    return RandomCropFlip(padding=padding, flip=True, fill=fill)


def _image_splits(name: str, train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray],
                  num_classes: int, mean: Sequence[float] | None, std: Sequence[float] | None,
                  augmentation: RandomCropFlip | None, classes: list[str] | None = None,
                  val: tuple[np.ndarray, np.ndarray] | None = None) -> DataSplits:
    def ds(pair: tuple[np.ndarray, np.ndarray]) -> TensorDataset:
        return TensorDataset(_normalise(pair[0], mean, std), _labels(pair[1]))

    tr = ds(train)
    return DataSplits(name, tr, ds(test), num_classes=num_classes, input_shape=tuple(tr.tensors[0].shape[1:]),
                      val=ds(val) if val is not None else None, mean=tuple(mean) if mean else None,
                      std=tuple(std) if std else None, classes=classes, augmentation=augmentation)


# ----------------------------------------------------------------------------- generated

_MNIST1D_CACHE: dict[tuple[int, int, float], dict[str, np.ndarray]] = {}


def _make_mnist1d(seed: int, num_samples: int, train_split: float) -> dict[str, np.ndarray]:
    key = (seed, num_samples, train_split)
    if key not in _MNIST1D_CACHE:
        try:
            from mnist1d.data import get_dataset_args, make_dataset
        except ImportError:
            raise SparsetrainError("the mnist1d dataset needs the mnist1d package: "
                                   "pip install 'sparsetrain[train]' (or pip install mnist1d)") from None
        args = get_dataset_args()
        args.seed, args.num_samples, args.train_split = seed, num_samples, train_split
        # make_dataset seeds numpy's and Python's global generators: put them back afterwards
        np_state, py_state = np.random.get_state(), random.getstate()
        try:
            d = make_dataset(args)  # never get_dataset(): it downloads
        finally:
            np.random.set_state(np_state)
            random.setstate(py_state)
        _MNIST1D_CACHE[key] = {k: d[k] for k in ("x", "y", "x_test", "y_test")}
    return _MNIST1D_CACHE[key]


@register_dataset("mnist1d")
def mnist1d(root: object = None, data_seed: int = 42, num_samples: int = 5000, train_split: float = 0.8) -> DataSplits:
    """MNIST-1D (Greydanus 2020), generated locally by the ``mnist1d`` package (about 3 s, cached per process).

    Inputs are float32 ``(N, 1, 40)`` (standardised by the generator), 10 classes.
    The defaults give the standard 4000 train / 1000 test split; ``data_seed`` is the
    generator's seed (``args.seed``, 42 by default). ``num_samples`` is rounded down
    to a multiple of 10.

    Example:
        >>> from sparsetrain.train.data import create_dataset
        >>> s = create_dataset("mnist1d")  # doctest: +SKIP
        >>> len(s.train), len(s.test), s.input_shape  # doctest: +SKIP
        (4000, 1000, (1, 40))
    """
    if num_samples < 20 or not 0.0 < train_split < 1.0:
        raise SparsetrainError(f"mnist1d needs num_samples >= 20 and 0 < train_split < 1, got "
                               f"num_samples={num_samples}, train_split={train_split}.")
    d = _make_mnist1d(int(data_seed), int(num_samples), float(train_split))

    def ds(x: np.ndarray, y: np.ndarray) -> TensorDataset:
        return TensorDataset(torch.tensor(x, dtype=torch.float32).unsqueeze(1), _labels(y))

    return DataSplits("mnist1d", ds(d["x"], d["y"]), ds(d["x_test"], d["y_test"]), num_classes=10,
                      input_shape=(1, d["x"].shape[-1]))


@register_dataset("digits")
def digits(root: object = None, split_seed: int = 0, test_fraction: float = 0.2) -> DataSplits:
    """scikit-learn's bundled 8x8 handwritten digits (1797 images, 10 classes), no download.

    Inputs are float32 ``(N, 1, 8, 8)`` scaled from 0..16 to [0, 1]. The train/test split
    is stratified and seeded: within each class, a ``torch.randperm`` seeded by ``split_seed``
    puts ``round(test_fraction * n_class)`` images in test and the rest in train
    (1438 / 359 with the defaults), each split then kept in the original order.

    Example:
        >>> from sparsetrain.train.data import create_dataset
        >>> s = create_dataset("digits")
        >>> len(s.train), len(s.test), s.input_shape
        (1438, 359, (1, 8, 8))
    """
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise SparsetrainError("the digits dataset needs scikit-learn: "
                               "pip install 'sparsetrain[train]' (or pip install scikit-learn)") from None
    if not 0.0 < test_fraction < 1.0:
        raise SparsetrainError(f"digits: test_fraction must be in (0, 1), got {test_fraction}.")
    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = _labels(d.target)
    g = torch.Generator().manual_seed(int(split_seed))
    test_mask = torch.zeros(len(y), dtype=torch.bool)
    for c in range(10):
        idx = (y == c).nonzero().flatten()
        n_test = round(test_fraction * len(idx))
        test_mask[idx[torch.randperm(len(idx), generator=g)[:n_test]]] = True
    return DataSplits("digits", TensorDataset(x[~test_mask], y[~test_mask]), TensorDataset(x[test_mask], y[test_mask]),
                      num_classes=10, input_shape=(1, 8, 8))


@register_dataset("synthetic")
def synthetic(root: object = None, input_shape: Sequence[int] = (3, 32, 32), num_classes: int = 10,
              num_train: int = 1024, num_test: int = 256, data_seed: int = 0) -> DataSplits:
    """Random inputs (standard normal) and uniform random labels, for speed benchmarks only.

    Inputs of 3D shape ``(C, H, W)`` get the crop+flip augmentation (padding ``H // 8``).

    Example:
        >>> from sparsetrain.train.data import create_dataset
        >>> s = create_dataset("synthetic", input_shape=(3, 16, 16), num_classes=5, num_train=10, num_test=4)
        >>> s.train[0][0].shape, s.num_classes, len(s.test)
        (torch.Size([3, 16, 16]), 5, 4)
    """
    shape = tuple(int(d) for d in input_shape)
    if not shape or min(shape) < 1 or num_classes < 1 or num_train < 1 or num_test < 1:
        raise SparsetrainError(f"synthetic needs positive input_shape, num_classes, num_train and num_test, got "
                               f"input_shape={shape}, num_classes={num_classes}, num_train={num_train}, "
                               f"num_test={num_test}.")
    g = torch.Generator().manual_seed(int(data_seed))

    def ds(n: int) -> TensorDataset:
        return TensorDataset(torch.randn((n, *shape), generator=g),
                             torch.randint(0, num_classes, (n,), generator=g))

    aug = RandomCropFlip(padding=max(1, shape[1] // 8)) if len(shape) == 3 else None
    return DataSplits("synthetic", ds(num_train), ds(num_test), num_classes=num_classes, input_shape=shape,
                      augmentation=aug)


# ----------------------------------------------------------------------------- read from files


@register_dataset("cifar10", needs_root=True)
def cifar10(root: Path, normalize: bool = True) -> DataSplits:
    """CIFAR-10 from the python-version batches (``cifar-10-batches-py/data_batch_1..5``, ``test_batch``).

    ``root`` is the extracted ``cifar-10-batches-py`` folder or its parent. Inputs are
    float32 ``(N, 3, 32, 32)`` normalised with the per-channel mean
    (0.4914, 0.4822, 0.4465) and std (0.2470, 0.2435, 0.2616) (``normalize=False``: [0, 1]).
    Augmentation: random crop with 4 pixels of black padding, random horizontal flip.
    Get the data from https://www.cs.toronto.edu/~kriz/cifar.html (cifar-10-python.tar.gz).
    """
    x_tr, y_tr, x_te, y_te = readers.read_cifar(root, 10)
    mean, std = (CIFAR10_MEAN, CIFAR10_STD) if normalize else (None, None)
    return _image_splits("cifar10", (x_tr, y_tr), (x_te, y_te), 10, mean, std, _crop_flip(mean, std))


@register_dataset("cifar100", needs_root=True)
def cifar100(root: Path, normalize: bool = True, label_mode: str = "fine") -> DataSplits:
    """CIFAR-100 from the python-version files (``cifar-100-python/train`` and ``test``).

    ``root`` is the extracted ``cifar-100-python`` folder or its parent. Labels are the
    100 ``fine_labels`` (``label_mode="coarse"``: the 20 superclasses). Inputs are float32
    ``(N, 3, 32, 32)`` normalised with mean (0.5071, 0.4865, 0.4409) and std
    (0.2673, 0.2564, 0.2762); augmentation as for ``cifar10``.
    Get the data from https://www.cs.toronto.edu/~kriz/cifar.html (cifar-100-python.tar.gz).
    """
    modes = {"fine": (b"fine_labels", 100), "coarse": (b"coarse_labels", 20)}
    if label_mode not in modes:
        raise unknown_choice("cifar100 label_mode", label_mode, modes)
    key, num_classes = modes[label_mode]
    x_tr, y_tr, x_te, y_te = readers.read_cifar(root, 100, label_key=key)
    mean, std = (CIFAR100_MEAN, CIFAR100_STD) if normalize else (None, None)
    return _image_splits("cifar100", (x_tr, y_tr), (x_te, y_te), num_classes, mean, std, _crop_flip(mean, std))


def _mnist_like(name: str, root: Path, title: str, subdirs: Sequence[str], url: str,
                mean: Sequence[float] | None, std: Sequence[float] | None) -> DataSplits:
    x_tr, y_tr, x_te, y_te = readers.read_mnist_like(root, title, subdirs, url)
    return _image_splits(name, (x_tr[:, None], y_tr), (x_te[:, None], y_te), 10, mean, std, None)


@register_dataset("mnist", needs_root=True)
def mnist(root: Path, normalize: bool = True) -> DataSplits:
    """MNIST from the four idx files (``train-images-idx3-ubyte`` ..., plain or ``.gz``).

    Looks in ``root``, ``root/MNIST/raw`` (torchvision's layout), ``root/MNIST`` and
    ``root/mnist``. Inputs are float32 ``(N, 1, 28, 28)`` normalised with mean 0.1307 and
    std 0.3081 (``normalize=False``: [0, 1]). No standard augmentation.
    """
    mean, std = (MNIST_MEAN, MNIST_STD) if normalize else (None, None)
    return _mnist_like("mnist", root, "MNIST", ["MNIST/raw", "MNIST", "mnist"], readers.MNIST_URL, mean, std)


@register_dataset("fashion_mnist", needs_root=True)
def fashion_mnist(root: Path, normalize: bool = True) -> DataSplits:
    """Fashion-MNIST from its four idx files (same names and format as MNIST, plain or ``.gz``).

    Looks in ``root``, ``root/FashionMNIST/raw`` (torchvision's layout), ``root/FashionMNIST``,
    ``root/fashion_mnist`` and ``root/fashion``. Inputs are float32 ``(N, 1, 28, 28)``
    normalised with mean 0.2860 and std 0.3530. No standard augmentation.
    """
    mean, std = (FASHION_MEAN, FASHION_STD) if normalize else (None, None)
    return _mnist_like("fashion_mnist", root, "Fashion-MNIST",
                       ["FashionMNIST/raw", "FashionMNIST", "fashion_mnist", "fashion"], readers.FASHION_URL,
                       mean, std)


@register_dataset("imagefolder", needs_root=True)
def imagefolder(root: Path, image_size: int | Sequence[int] = 32, grayscale: bool = False,
                normalize: bool = True) -> DataSplits:
    """Images in class folders: ``root/train/<class>/*.png|jpg`` and ``root/test/<class>/...``.

    The test split may be called ``val`` instead; if both ``test`` and ``val`` exist,
    ``val`` becomes ``DataSplits.val``. Class indices follow the sorted class folder names
    of ``train``. Images are resized (bilinear) to ``image_size`` (an int or ``(H, W)``)
    and converted to RGB (``grayscale=True``: one channel). With ``normalize=True`` the
    inputs are standardised with the per-channel mean and std of the train split.
    Augmentation: random crop with ``H // 8`` pixels of black padding and horizontal flip.
    Needs Pillow.
    """
    size = (int(image_size), int(image_size)) if isinstance(image_size, int) else tuple(int(s) for s in image_size)
    if len(size) != 2 or min(size) < 1:
        raise SparsetrainError(f"imagefolder: image_size must be an int or (height, width), got {image_size!r}.")
    train_dir = root / "train"
    test_dir = root / "test" if (root / "test").is_dir() else root / "val"
    if not train_dir.is_dir() or not test_dir.is_dir():
        raise SparsetrainError(
            f"image folder not found: expected {train_dir}/<class>/<image>.png|jpg and {root / 'test'}/<class>/... "
            f"(or {root / 'val'}/<class>/...); {root}: {readers._listing(root)}. Put one folder per class "
            f"under train/ and test/.")
    mode = "L" if grayscale else "RGB"
    x_tr, y_tr, classes = readers.read_image_split(train_dir, None, size, mode)
    x_te, y_te, _ = readers.read_image_split(test_dir, classes, size, mode)
    val = None
    if test_dir.name == "test" and (root / "val").is_dir():
        x_va, y_va, _ = readers.read_image_split(root / "val", classes, size, mode)
        val = (x_va, y_va)
    mean = std = None
    if normalize:
        pixels = torch.from_numpy(x_tr).to(torch.float64).div_(255.0).transpose(0, 1).reshape(x_tr.shape[1], -1)
        mean = tuple(pixels.mean(1).tolist())
        std = tuple(max(s, 1e-6) for s in pixels.std(1, correction=0).tolist())
    return _image_splits("imagefolder", (x_tr, y_tr), (x_te, y_te), len(classes), mean, std,
                         _crop_flip(mean, std, padding=max(1, size[0] // 8)), classes=classes, val=val)
