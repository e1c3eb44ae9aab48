"""The trainer's data layer: datasets held in memory, and seeded loaders (docs/architecture.md).

Nothing is downloaded. ``mnist1d``, ``digits`` and ``synthetic`` are generated
locally; ``pystdlib`` (character-level language modelling) is read from the running
Python's own standard library; ``cifar10``, ``cifar100``, ``mnist``, ``fashion_mnist`` and ``imagefolder``
are read from their standard files under ``root``::

    from sparsetrain.train.data import create_dataset, make_loaders
    splits = create_dataset("cifar10", root="~/data")   # ~/data/cifar-10-batches-py/...
    train, val, test = make_loaders(splits, 128, seed=0, val_fraction=0.1, augment=True)

or, for a loop that shuffles and augments itself (``x = splits.augment(x, step)``)::

    splits = create_dataset("cifar10", root="~/data", seed=0, val_fraction=0.1, augment=True)

Example:
    >>> splits = create_dataset("synthetic", input_shape=(1, 40), num_train=32, num_test=8)
    >>> train, val, test = make_loaders(splits, batch_size=8, seed=0)
    >>> x, y = next(iter(train))
    >>> tuple(x.shape), y.dtype, val is None
    ((8, 1, 40), torch.int64, True)
"""

from sparsetrain.train.data import datasets, text  # noqa: F401  (registration)
from sparsetrain.train.data.augment import RandomCropFlip, StepAugment
from sparsetrain.train.data.loaders import EpochShuffleSampler, Loaders, ShardSampler, make_loaders
from sparsetrain.train.data.registry import (
    DataSplits,
    create_dataset,
    dataset_signature,
    list_datasets,
    register_dataset,
    split_validation,
)

__all__ = [
    "DataSplits", "EpochShuffleSampler", "Loaders", "RandomCropFlip", "ShardSampler", "StepAugment",
    "create_dataset", "dataset_signature", "list_datasets", "make_loaders", "register_dataset", "split_validation",
]
