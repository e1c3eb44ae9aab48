"""The dataset registry: ``register_dataset``, ``list_datasets``, ``create_dataset`` and ``DataSplits``."""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset, Subset

from sparsetrain.core.registry import Registry
from sparsetrain.errors import SparsetrainError
from sparsetrain.train.data.augment import StepAugment, mix_seed

Augmentation = Callable[..., Any]
_VAL_SALT = 0x7A1  # keeps the validation permutation apart from the other seeded streams


@dataclass
class DataSplits:
    """The splits of one dataset, held in memory, plus what a model needs to know about them.

    Attributes:
        name: the registered dataset name.
        train: the training split; items are ``(x, y)`` with ``x`` a float32 tensor of
            shape ``input_shape`` and ``y`` an int64 class index.
        test: the test split, same item format.
        num_classes: the number of classes.
        input_shape: the shape of one input, e.g. ``(3, 32, 32)`` or ``(1, 40)``.
        val: a validation split shipped with the data (e.g. an image folder's ``val/``),
            else ``None``; :func:`make_loaders` can also carve one out of ``train``.
        mean: the per-channel mean subtracted from the inputs (``None`` if not normalised).
        std: the per-channel standard deviation the inputs were divided by.
        classes: class names, where the data has them.
        augmentation: the dataset's standard train-time augmentation (a callable
            ``(x_batch, generator) -> x_batch``), used by ``make_loaders(augment=True)``;
            ``None`` when the dataset has none.
        augment: set by ``create_dataset(..., augment=True)`` for training loops that
            augment batches themselves: ``augment(x_batch, step) -> x_batch``, seeded
            by the run seed and the integer ``step``; ``None`` otherwise.
        task: what the trainer optimises and reports (:mod:`sparsetrain.train.tasks`):
            ``"classification"``, or ``"language_model"`` where ``x`` holds int64 token
            ids ``[time]``, ``y`` the next tokens ``[time]`` and ``num_classes`` the vocabulary.

    Example:
        >>> import torch
        >>> from torch.utils.data import TensorDataset
        >>> ds = TensorDataset(torch.zeros(4, 1, 8), torch.zeros(4, dtype=torch.long))
        >>> s = DataSplits("toy", ds, ds, num_classes=2, input_shape=(1, 8))
        >>> len(s.train), s.val is None
        (4, True)
    """

    name: str
    train: Dataset
    test: Dataset
    num_classes: int
    input_shape: tuple[int, ...]
    val: Dataset | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    classes: list[str] | None = None
    augmentation: Augmentation | None = field(default=None, repr=False)
    augment: StepAugment | None = field(default=None, repr=False)
    task: str = "classification"

    def __repr__(self) -> str:
        sizes = f"train={len(self.train)}, test={len(self.test)}"  # type: ignore[arg-type]
        if self.val is not None:
            sizes += f", val={len(self.val)}"  # type: ignore[arg-type]
        return (f"DataSplits({self.name!r}, {sizes}, num_classes={self.num_classes}, "
                f"input_shape={self.input_shape})")


@dataclass(frozen=True)
class _Entry:
    builder: Callable[..., DataSplits]
    needs_root: bool


DATASETS: Registry[_Entry] = Registry("dataset")


def register_dataset(name: str, *, needs_root: bool = False):
    """Register a builder ``(root, **kwargs) -> DataSplits`` under ``name``.

    Args:
        name: the name passed to :func:`create_dataset` (and ``--data.name``).
        needs_root: the data is read from files, so ``root`` must be given.

    Example:
        >>> import torch
        >>> from torch.utils.data import TensorDataset
        >>> @register_dataset("doc_toy")
        ... def doc_toy(root=None, n: int = 4) -> DataSplits:
        ...     ds = TensorDataset(torch.zeros(n, 2), torch.zeros(n, dtype=torch.long))
        ...     return DataSplits("doc_toy", ds, ds, num_classes=1, input_shape=(2,))
        >>> len(create_dataset("doc_toy", n=3).train)
        3
        >>> DATASETS.unregister("doc_toy")  # keep the registry clean
    """
    def register(builder: Callable[..., DataSplits]) -> Callable[..., DataSplits]:
        DATASETS.register(name, _Entry(builder, needs_root))
        return builder
    return register


def list_datasets(pattern: str = "*") -> list[str]:
    """Registered dataset names matching a glob ``pattern`` (e.g. ``"cifar*"``).

    Example:
        >>> list_datasets("cifar*")
        ['cifar10', 'cifar100']
    """
    return DATASETS.names(pattern)


def dataset_signature(name: str) -> dict[str, inspect.Parameter]:
    """The options of a registered dataset's builder (without ``root``), for config validation.

    Example:
        >>> list(dataset_signature("mnist1d"))
        ['data_seed', 'num_samples', 'train_split']
    """
    params = inspect.signature(DATASETS.get(name).builder).parameters
    return {k: p for k, p in params.items() if k != "root"}


def split_validation(train: Dataset, val_fraction: float, seed: int) -> tuple[Subset, Subset]:
    """Hold out ``round(val_fraction * len(train))`` samples, chosen by a permutation seeded by ``seed``.

    Returns:
        ``(train_subset, val_subset)``, each keeping the original order of its samples.

    Example:
        >>> tr, va = split_validation(list(range(10)), 0.2, seed=0)
        >>> len(tr), len(va), sorted([*tr, *va]) == list(range(10))
        (8, 2, True)
    """
    n = len(train)  # type: ignore[arg-type]
    n_val = round(val_fraction * n)
    if not 0.0 < val_fraction < 1.0 or not 0 < n_val < n:
        raise SparsetrainError(f"val_fraction must be in (0, 1) and leave at least one sample on each side, "
                               f"got {val_fraction} of {n} training samples.")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(mix_seed(seed, _VAL_SALT)))
    val_idx, train_idx = perm[:n_val].sort().values, perm[n_val:].sort().values
    return Subset(train, train_idx.tolist()), Subset(train, val_idx.tolist())


def create_dataset(name: str, root: str | os.PathLike[str] | None = None, *, seed: int = 0,
                   val_fraction: float = 0.0, augment: bool = False, **kwargs: Any) -> DataSplits:
    """Build the splits of a registered dataset.

    Args:
        name: a name from :func:`list_datasets`.
        root: the data directory, for the datasets read from files (``cifar10``,
            ``cifar100``, ``mnist``, ``fashion_mnist``, ``imagefolder``); ignored by the
            generated ones (``mnist1d``, ``digits``, ``synthetic``).
        seed: the run seed; it seeds only the validation split and ``splits.augment``
            (the data itself is fixed by the builder's own ``data_seed`` / ``split_seed``,
            so that runs with different seeds see the same train and test sets).
        val_fraction: if > 0, hold out this fraction of ``train`` as ``splits.val``
            (:func:`split_validation`). :func:`make_loaders` can do this instead.
        augment: set ``splits.augment`` to the dataset's standard augmentation as a
            ``(x_batch, step) -> x_batch`` callable, for loops that augment on the device.
            :func:`make_loaders` can apply it in the loader instead.
        **kwargs: the builder's own options (e.g. ``image_size``); see :func:`dataset_signature`.

    Raises:
        SparsetrainError: unknown name (the message lists the choices), unknown keyword,
            missing ``root``, or missing / malformed files (the message says which files,
            where it looked, and where to get them).

    Example:
        >>> s = create_dataset("synthetic", input_shape=(1, 4), num_train=8, num_test=2)
        >>> s.input_shape, len(s.train), len(s.test)
        ((1, 4), 8, 2)
    """
    entry = DATASETS.get(name)
    params = list(dataset_signature(name))
    unknown = [k for k in kwargs if k not in params]
    if unknown:
        raise SparsetrainError(f"dataset {name!r} has no option {', '.join(map(repr, unknown))}. "
                               f"Its options are: {', '.join(params) or '(none)'}.")
    if entry.needs_root:
        if root is None or str(root) == "":
            raise SparsetrainError(
                f"dataset {name!r} is read from files: pass the data directory with --data.root DIR "
                f"(or root=DIR in Python). sparsetrain never downloads; datasets that need no files: "
                f"{', '.join(n for n, e in DATASETS.items() if not e.needs_root)}.")
        root = Path(root).expanduser()
    splits = entry.builder(root=root, **kwargs)
    if val_fraction:
        if splits.val is not None:
            raise SparsetrainError(f"dataset {name!r} has its own validation split: leave val_fraction at 0 "
                                   f"to use it.")
        splits.train, splits.val = split_validation(splits.train, val_fraction, seed)
    if augment:
        if splits.augmentation is None:
            raise SparsetrainError(f"dataset {name!r} has no standard augmentation: set augment to false "
                                   f"(--data.augment false).")
        splits.augment = StepAugment(splits.augmentation, seed)
    return splits
