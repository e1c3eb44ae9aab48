"""Data loaders for the trainer: seeded shuffling, optional validation split, DDP sharding, augmentation."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from sparsetrain.errors import SparsetrainError, check_count
from sparsetrain.train.data.augment import mix_seed
from sparsetrain.train.data.registry import DataSplits, split_validation

_AUG_SALT = 0xA06


class Loaders(NamedTuple):
    """What :func:`make_loaders` returns; unpacks as ``train, val, test``."""

    train: DataLoader
    val: DataLoader | None
    test: DataLoader


class EpochShuffleSampler(DistributedSampler):
    """A :class:`DistributedSampler` (seeded shuffle, ``set_epoch``) whose epoch also moves on by itself.

    Epoch ``e`` is shuffled with ``torch.Generator().manual_seed(seed + e)``, exactly as
    ``DistributedSampler``; after each pass the epoch advances by one, so a loop that
    never calls ``set_epoch`` still sees a new order every epoch, and one that calls
    ``set_epoch(e)`` (e.g. after resuming) gets the same order as an uninterrupted run.
    With ``num_replicas=1`` it shuffles the whole dataset.

    Example:
        >>> s = EpochShuffleSampler(range(6), num_replicas=1, rank=0, seed=0)
        >>> first, second = list(s), list(s)
        >>> s.set_epoch(0); list(s) == first, first == second
        (True, False)
    """

    def __iter__(self) -> Iterator[Any]:
        indices = super().__iter__()
        self.epoch += 1
        return indices


class ShardSampler(Sampler[int]):
    """In-order, unpadded shard ``rank::num_replicas`` of ``range(n)``, for evaluation under DDP.

    Unlike ``DistributedSampler`` it repeats no sample, so summing the per-rank counts
    of correct predictions (``all_reduce``) gives the exact accuracy.

    Example:
        >>> list(ShardSampler(5, num_replicas=2, rank=1))
        [1, 3]
    """

    def __init__(self, n: int, num_replicas: int, rank: int) -> None:
        self.indices = range(rank, n, num_replicas)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


class AugmentedDataLoader(DataLoader):
    """A ``DataLoader`` that applies a batch augmentation ``(x, generator) -> x`` to the inputs.

    The augmentation runs in the main process on whole batches, with a generator
    seeded from ``(aug_seed, sampler epoch)``: the same seed and epoch give the same
    augmented batches whatever ``num_workers`` is.
    """

    def __init__(self, *args: Any, augmentation: Callable[..., torch.Tensor], aug_seed: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.augmentation = augmentation
        self.aug_seed = aug_seed

    def __iter__(self) -> Iterator[Any]:  # type: ignore[override]
        epoch = getattr(self.sampler, "epoch", 0)  # read before the sampler advances it
        generator = torch.Generator().manual_seed(mix_seed(self.aug_seed, epoch))
        for x, *rest in super().__iter__():
            yield [self.augmentation(x, generator), *rest]


def _world(num_replicas: int | None, rank: int | None) -> tuple[int, int]:
    if num_replicas is not None and rank is not None:
        if not 0 <= rank < num_replicas:
            raise SparsetrainError(f"rank must be in [0, {num_replicas}), got rank={rank}.")
        return num_replicas, rank
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        raise SparsetrainError("make_loaders(distributed=True) needs an initialised process group (launch with "
                               "torchrun and call torch.distributed.init_process_group) or explicit num_replicas "
                               "and rank.")
    return (dist.get_world_size() if num_replicas is None else num_replicas,
            dist.get_rank() if rank is None else rank)


def make_loaders(splits: DataSplits, batch_size: int, *, seed: int, val_fraction: float = 0.0,
                 augment: bool | Callable[..., torch.Tensor] = False, distributed: bool = False,
                 num_workers: int = 0, eval_batch_size: int | None = None, drop_last: bool = False,
                 num_replicas: int | None = None, rank: int | None = None,
                 pin_memory: bool = False) -> Loaders:
    """Build the train, validation and test loaders of ``splits``.

    Args:
        splits: from :func:`create_dataset`.
        batch_size: training batch size per process.
        seed: seeds the shuffling (epoch ``e`` uses ``seed + e``, as ``DistributedSampler``),
            the validation split, the augmentation and the worker seeds.
        val_fraction: hold out this fraction of ``train`` as validation (GraNet and
            Chase hold out 0.1); 0 uses ``splits.val`` if the dataset has one, else no
            validation loader.
        augment: ``True`` applies the dataset's standard augmentation
            (``splits.augmentation``, e.g. crop+flip for CIFAR) to train batches only;
            a callable ``(x_batch, generator) -> x_batch`` is used instead.
        distributed: shard the data over processes: train with a seeded
            ``DistributedSampler`` (call ``train.sampler.set_epoch(epoch)`` every epoch;
            the epoch also advances by itself), validation and test with an unpadded
            in-order :class:`ShardSampler`.
        num_workers: ``DataLoader`` worker processes (0: load in the main process).
        eval_batch_size: batch size of the validation and test loaders (default: ``batch_size``).
        drop_last: drop the last incomplete training batch.
        num_replicas: world size (default: from the initialised process group).
        rank: this process's rank (default: from the initialised process group).
        pin_memory: passed to the ``DataLoader`` objects.

    Returns:
        ``Loaders(train, val, test)``; ``val`` is ``None`` without a validation split.

    Example:
        >>> from sparsetrain.train.data import create_dataset
        >>> s = create_dataset("synthetic", input_shape=(3, 8, 8), num_train=20, num_test=6)
        >>> train, val, test = make_loaders(s, 4, seed=0, val_fraction=0.25, augment=True)
        >>> len(train.dataset), len(val.dataset), len(test), next(iter(train))[0].shape
        (15, 5, 2, torch.Size([4, 3, 8, 8]))
    """
    check_count(batch_size, "batch_size")
    train_ds, val_ds = splits.train, splits.val
    if val_fraction:
        if splits.val is not None:
            raise SparsetrainError(f"dataset {splits.name!r} has its own validation split: leave val_fraction at 0 "
                                   f"to use it, or drop it from the splits.")
        train_ds, val_ds = split_validation(splits.train, val_fraction, seed)

    augmentation: Callable[..., torch.Tensor] | None = None
    if callable(augment):
        augmentation = augment
    elif augment:
        if splits.augment is not None:
            raise SparsetrainError("the splits were built with create_dataset(..., augment=True): apply "
                                   "splits.augment in the training loop or pass augment here, not both.")
        if splits.augmentation is None:
            raise SparsetrainError(f"dataset {splits.name!r} has no standard augmentation: pass augment=False "
                                   f"(--data.augment false) or a callable (x_batch, generator) -> x_batch.")
        augmentation = splits.augmentation

    world, rank_ = _world(num_replicas, rank) if distributed else (1, 0)
    eval_bs = eval_batch_size or batch_size
    common: dict[str, Any] = dict(num_workers=num_workers, pin_memory=pin_memory,
                                  persistent_workers=num_workers > 0)

    def generator() -> torch.Generator:  # seeds the worker processes
        return torch.Generator().manual_seed(seed)

    sampler = EpochShuffleSampler(train_ds, num_replicas=world, rank=rank_, shuffle=True, seed=seed)
    train_kw = dict(batch_size=batch_size, sampler=sampler, drop_last=drop_last, generator=generator(), **common)
    if augmentation is None:
        train = DataLoader(train_ds, **train_kw)
    else:
        train = AugmentedDataLoader(train_ds, augmentation=augmentation, aug_seed=mix_seed(seed, _AUG_SALT, rank_),
                                    **train_kw)

    def eval_loader(ds: Dataset) -> DataLoader:
        shard = ShardSampler(len(ds), world, rank_) if distributed else None  # type: ignore[arg-type]
        return DataLoader(ds, batch_size=eval_bs, shuffle=False, sampler=shard, generator=generator(), **common)

    return Loaders(train, eval_loader(val_ds) if val_ds is not None else None, eval_loader(splits.test))
