"""The data layer: readers on tiny fixture files in the real formats, generated datasets, loaders, errors."""

from __future__ import annotations

import gzip
import pickle
import random
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from sparsetrain.errors import SparsetrainError
from sparsetrain.train.data import (
    DataSplits,
    RandomCropFlip,
    ShardSampler,
    StepAugment,
    create_dataset,
    dataset_signature,
    list_datasets,
    make_loaders,
)
from sparsetrain.train.data.datasets import CIFAR10_MEAN, CIFAR10_STD, MNIST_MEAN, MNIST_STD

# ----------------------------------------------------------------------------- fixture writers


def _cifar_batch(n: int, rng: np.random.Generator, label_keys: dict[bytes, int]) -> dict[bytes, object]:
    batch: dict[bytes, object] = {b"batch_label": b"fixture", b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                                  b"filenames": [b"img%d.png" % i for i in range(n)]}
    for key, classes in label_keys.items():
        batch[key] = [int(v) for v in rng.integers(0, classes, n)]
    return batch


def _dump(path: Path, obj: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # as in the real files (written with numpy 1.x): numpy.core, not numpy 2's numpy._core
    path.write_bytes(pickle.dumps(obj, protocol=2).replace(b"numpy._core.multiarray", b"numpy.core.multiarray"))


@pytest.fixture
def cifar10_root(tmp_path: Path) -> Path:
    """``tmp/cifar-10-batches-py`` with 5 train batches of 2 images and a test batch of 3."""
    rng = np.random.default_rng(0)
    folder = tmp_path / "cifar-10-batches-py"
    for i in range(1, 6):
        _dump(folder / f"data_batch_{i}", _cifar_batch(2, rng, {b"labels": 10}))
    _dump(folder / "test_batch", _cifar_batch(3, rng, {b"labels": 10}))
    return tmp_path


@pytest.fixture
def cifar100_root(tmp_path: Path) -> Path:
    rng = np.random.default_rng(1)
    folder = tmp_path / "cifar-100-python"
    keys = {b"fine_labels": 100, b"coarse_labels": 20}
    _dump(folder / "train", _cifar_batch(4, rng, keys))
    _dump(folder / "test", _cifar_batch(2, rng, keys))
    return tmp_path


def _idx_images(images: np.ndarray) -> bytes:
    return struct.pack(">IIII", 2051, *images.shape) + images.astype(np.uint8).tobytes()


def _idx_labels(labels: np.ndarray) -> bytes:
    return struct.pack(">II", 2049, len(labels)) + labels.astype(np.uint8).tobytes()


def _write_idx(folder: Path, gz: dict[str, bool], rng: np.random.Generator) -> dict[str, np.ndarray]:
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {"train-images-idx3-ubyte": rng.integers(0, 256, (5, 28, 28)),
              "train-labels-idx1-ubyte": rng.integers(0, 10, 5),
              "t10k-images-idx3-ubyte": rng.integers(0, 256, (3, 28, 28)),
              "t10k-labels-idx1-ubyte": rng.integers(0, 10, 3)}
    for name, arr in arrays.items():
        raw = _idx_images(arr) if arr.ndim == 3 else _idx_labels(arr)
        if gz.get(name, False):
            (folder / f"{name}.gz").write_bytes(gzip.compress(raw))
        else:
            (folder / name).write_bytes(raw)
    return arrays


@pytest.fixture
def image_root(tmp_path: Path) -> Path:
    """``train/{cat,dog}/`` and ``test/{cat,dog}/`` with 2 PNGs each (cats dark, dogs bright)."""
    Image = pytest.importorskip("PIL.Image")
    for split in ("train", "test"):
        for cls, value in (("cat", 40), ("dog", 200)):
            (tmp_path / split / cls).mkdir(parents=True)
            for i in range(2):
                arr = np.full((10, 12, 3), value + 10 * i, dtype=np.uint8)
                Image.fromarray(arr).save(tmp_path / split / cls / f"{i}.png")
    return tmp_path


# ----------------------------------------------------------------------------- registry and errors


def test_all_datasets_registered():
    expected = {"mnist1d", "digits", "synthetic", "cifar10", "cifar100", "mnist", "fashion_mnist", "imagefolder"}
    assert expected <= set(list_datasets())
    assert list_datasets("cifar*") == ["cifar10", "cifar100"]


def test_unknown_dataset_lists_choices():
    with pytest.raises(SparsetrainError, match=r"unknown dataset 'cifar1O'.*Did you mean: cifar10.*Choices:.*mnist1d"):
        create_dataset("cifar1O")


def test_unknown_option_lists_options():
    with pytest.raises(SparsetrainError, match=r"dataset 'synthetic' has no option 'img_size'.*input_shape"):
        create_dataset("synthetic", img_size=3)


def test_dataset_signature():
    assert list(dataset_signature("synthetic")) == ["input_shape", "num_classes", "num_train", "num_test", "data_seed"]
    assert "root" not in dataset_signature("cifar10") and "image_size" in dataset_signature("imagefolder")
    with pytest.raises(SparsetrainError, match="unknown dataset 'mnist2d'"):
        dataset_signature("mnist2d")


@pytest.mark.parametrize("name", ["cifar10", "cifar100", "mnist", "fashion_mnist", "imagefolder"])
def test_file_dataset_without_root(name):
    with pytest.raises(SparsetrainError, match=r"--data\.root.*root=DIR.*mnist1d"):
        create_dataset(name)


def test_cifar10_missing_directory(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(SparsetrainError) as e:
        create_dataset("cifar10", root=str(missing))
    msg = str(e.value)
    assert "data_batch_1" in msg and "test_batch" in msg and str(missing) in msg
    assert "does not exist" in msg
    assert "https://www.cs.toronto.edu/~kriz/cifar.html" in msg and f"extract it into {missing}" in msg


def test_cifar_wrong_files_and_archive_hint(tmp_path):
    (tmp_path / "readme.txt").write_text("x")
    (tmp_path / "cifar-100-python.tar.gz").write_bytes(b"")
    with pytest.raises(SparsetrainError) as e:
        create_dataset("cifar100", root=tmp_path)
    msg = str(e.value)
    assert "expected the files train, test" in msg and "readme.txt" in msg
    assert "tar xzf cifar-100-python.tar.gz" in msg and "cifar-100-python" in msg


def test_cifar_bad_batch_contents(cifar10_root):
    _dump(cifar10_root / "cifar-10-batches-py" / "data_batch_3", {b"pixels": np.zeros(3, np.uint8)})
    with pytest.raises(SparsetrainError, match=r"data_batch_3 is not a CIFAR batch.*b'data'"):
        create_dataset("cifar10", root=cifar10_root)


def test_cifar_pickle_cannot_run_code(cifar10_root):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    _dump(cifar10_root / "cifar-10-batches-py" / "test_batch", Evil())
    with pytest.raises(SparsetrainError, match=r"not a valid data pickle.*refusing to load .*\bprint"):
        create_dataset("cifar10", root=cifar10_root)


# ----------------------------------------------------------------------------- CIFAR


def test_cifar10_shapes_labels_normalisation(cifar10_root):
    folder = cifar10_root / "cifar-10-batches-py"
    batch = pickle.loads((folder / "data_batch_1").read_bytes(), encoding="bytes")
    s = create_dataset("cifar10", root=cifar10_root)
    assert isinstance(s, DataSplits) and s.name == "cifar10"
    assert (len(s.train), len(s.test), s.num_classes, s.input_shape) == (10, 3, 10, (3, 32, 32))
    x, y = s.train.tensors
    assert x.dtype == torch.float32 and y.dtype == torch.int64
    assert y[:2].tolist() == batch[b"labels"]
    # row layout: 1024 red, 1024 green, 1024 blue values, each image row-major
    raw = batch[b"data"][0]
    for c in range(3):
        pixel = raw[c * 1024 + 5 * 32 + 7]
        expected = (pixel / 255.0 - CIFAR10_MEAN[c]) / CIFAR10_STD[c]
        assert x[0, c, 5, 7].item() == pytest.approx(expected, abs=1e-5)
    assert s.mean == CIFAR10_MEAN and s.std == CIFAR10_STD


def test_cifar10_root_is_extracted_folder_and_unnormalised(cifar10_root):
    s = create_dataset("cifar10", root=cifar10_root / "cifar-10-batches-py", normalize=False)
    x = s.train.tensors[0]
    assert 0.0 <= x.min() and x.max() <= 1.0 and s.mean is None
    # black padding in pixel space is 0 when the data is not normalised
    assert torch.equal(s.augmentation.fill, torch.zeros(1))


def test_cifar100_fine_and_coarse(cifar100_root):
    batch = pickle.loads((cifar100_root / "cifar-100-python" / "train").read_bytes(), encoding="bytes")
    fine = create_dataset("cifar100", root=cifar100_root)
    assert (len(fine.train), len(fine.test), fine.num_classes) == (4, 2, 100)
    assert fine.train.tensors[1].tolist() == batch[b"fine_labels"]
    coarse = create_dataset("cifar100", root=cifar100_root / "cifar-100-python", label_mode="coarse")
    assert coarse.num_classes == 20 and coarse.train.tensors[1].tolist() == batch[b"coarse_labels"]
    with pytest.raises(SparsetrainError, match="unknown cifar100 label_mode 'superclass'"):
        create_dataset("cifar100", root=cifar100_root, label_mode="superclass")


# ----------------------------------------------------------------------------- MNIST idx


def test_mnist_plain_and_gzip(tmp_path):
    arrays = _write_idx(tmp_path, {"train-images-idx3-ubyte": True, "t10k-labels-idx1-ubyte": True},
                        np.random.default_rng(2))
    s = create_dataset("mnist", root=tmp_path)
    assert (len(s.train), len(s.test), s.input_shape, s.num_classes) == (5, 3, (1, 28, 28), 10)
    x, y = s.train.tensors
    assert y.tolist() == arrays["train-labels-idx1-ubyte"].tolist()
    assert s.test.tensors[1].tolist() == arrays["t10k-labels-idx1-ubyte"].tolist()
    expected = (arrays["train-images-idx3-ubyte"][1, 3, 4] / 255.0 - MNIST_MEAN[0]) / MNIST_STD[0]
    assert x[1, 0, 3, 4].item() == pytest.approx(expected, abs=1e-5)
    assert s.augmentation is None


def test_fashion_mnist_torchvision_layout(tmp_path):
    all_gz = dict.fromkeys(["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                            "t10k-labels-idx1-ubyte"], True)
    arrays = _write_idx(tmp_path / "FashionMNIST" / "raw", all_gz, np.random.default_rng(3))
    s = create_dataset("fashion_mnist", root=tmp_path, normalize=False)
    assert s.train.tensors[0].shape == (5, 1, 28, 28)
    assert torch.equal(s.train.tensors[0][2, 0] * 255, torch.tensor(arrays["train-images-idx3-ubyte"][2]).float())


def test_mnist_missing_files(tmp_path):
    (tmp_path / "train-images-idx3-ubyte").write_bytes(_idx_images(np.zeros((1, 28, 28))))
    with pytest.raises(SparsetrainError) as e:
        create_dataset("mnist", root=tmp_path)
    msg = str(e.value)
    assert "t10k-labels-idx1-ubyte" in msg and "plain or .gz" in msg and str(tmp_path / "MNIST" / "raw") in msg
    assert "train-images-idx3-ubyte" in msg and "https://" in msg


def test_mnist_bad_magic_and_truncated(tmp_path):
    _write_idx(tmp_path, {}, np.random.default_rng(4))
    path = tmp_path / "train-labels-idx1-ubyte"
    path.write_bytes(struct.pack(">II", 2051, 5) + bytes(5))
    with pytest.raises(SparsetrainError, match=r"magic number 2051, expected 2051 \(images\) or 2049"):
        create_dataset("mnist", root=tmp_path)
    path.write_bytes(struct.pack(">II", 1234, 5) + bytes(5))
    with pytest.raises(SparsetrainError, match=r"train-labels-idx1-ubyte is not an idx ubyte file: magic number 1234"):
        create_dataset("mnist", root=tmp_path)
    path.write_bytes(_idx_labels(np.zeros(5))[:-2])
    with pytest.raises(SparsetrainError, match=r"truncated or corrupt"):
        create_dataset("mnist", root=tmp_path)


# ----------------------------------------------------------------------------- image folders


def test_imagefolder(image_root):
    s = create_dataset("imagefolder", root=str(image_root), image_size=8)
    assert (len(s.train), len(s.test), s.num_classes, s.input_shape) == (4, 4, 2, (3, 8, 8))
    assert s.classes == ["cat", "dog"] and s.train.tensors[1].tolist() == [0, 0, 1, 1]
    x = s.train.tensors[0]
    assert x.mean(dim=(0, 2, 3)).abs().max() < 1e-5  # standardised with the train statistics
    assert x[0].mean() < 0 < x[3].mean()  # dark cats, bright dogs
    raw = create_dataset("imagefolder", root=image_root, image_size=(6, 4), grayscale=True, normalize=False)
    assert raw.input_shape == (1, 6, 4)
    assert raw.train.tensors[0][0].unique().tolist() == [pytest.approx(40 / 255)]


def test_imagefolder_val_names(image_root):
    (image_root / "test").rename(image_root / "val")
    s = create_dataset("imagefolder", root=image_root, image_size=4)
    assert len(s.test) == 4 and s.val is None


def test_imagefolder_test_and_val(image_root):
    import shutil

    shutil.copytree(image_root / "test", image_root / "val")
    s = create_dataset("imagefolder", root=image_root, image_size=4)
    assert len(s.test) == len(s.val) == 4
    with pytest.raises(SparsetrainError, match="has its own validation split"):
        create_dataset("imagefolder", root=image_root, val_fraction=0.5)


def test_imagefolder_errors(image_root, monkeypatch):
    with pytest.raises(SparsetrainError, match=r"expected .*train/<class>/<image>\.png\|jpg.*it does not exist"):
        create_dataset("imagefolder", root=image_root / "missing")
    (image_root / "test" / "bird").mkdir()
    with pytest.raises(SparsetrainError, match="classes that the train split lacks: bird"):
        create_dataset("imagefolder", root=image_root)
    monkeypatch.setitem(__import__("sys").modules, "PIL", None)
    with pytest.raises(SparsetrainError, match="needs Pillow: pip install pillow"):
        create_dataset("imagefolder", root=image_root)


# ----------------------------------------------------------------------------- generated datasets


def test_mnist1d_standard_split_and_cache():
    np.random.seed(123)
    random.seed(123)
    s = create_dataset("mnist1d")
    assert (len(s.train), len(s.test), s.input_shape, s.num_classes) == (4000, 1000, (1, 40), 10)
    x, y = s.train.tensors
    assert x.shape == (4000, 1, 40) and x.dtype == torch.float32 and set(y.tolist()) == set(range(10))
    assert np.random.randint(1 << 30) == np.random.RandomState(123).randint(1 << 30)  # global RNGs untouched
    assert random.random() == random.Random(123).random()
    again = create_dataset("mnist1d")  # from the in-process cache
    assert torch.equal(again.test.tensors[0], s.test.tensors[0])


def test_mnist1d_sizes_configurable():
    s = create_dataset("mnist1d", num_samples=200, train_split=0.75, data_seed=1)
    assert (len(s.train), len(s.test)) == (150, 50)
    with pytest.raises(SparsetrainError, match="train_split"):
        create_dataset("mnist1d", train_split=1.5)


def test_digits_split():
    s = create_dataset("digits")
    assert (len(s.train) + len(s.test), s.input_shape, s.num_classes) == (1797, (1, 8, 8), 10)
    x, y = s.test.tensors
    assert 0.0 <= x.min() and x.max() == 1.0
    counts = torch.bincount(y, minlength=10)
    assert counts.min() >= 34 and counts.max() <= 38  # about 20% of each class (174..183 images)
    same = create_dataset("digits")
    other = create_dataset("digits", split_seed=1)
    assert torch.equal(same.test.tensors[0], x) and not torch.equal(other.test.tensors[0], x)


def test_synthetic():
    s = create_dataset("synthetic", input_shape=(2, 5), num_classes=3, num_train=7, num_test=4, data_seed=3)
    assert s.input_shape == (2, 5) and s.train.tensors[0].shape == (7, 2, 5) and len(s.test) == 4
    assert 0 <= s.train.tensors[1].min() and s.train.tensors[1].max() < 3 and s.augmentation is None
    again = create_dataset("synthetic", input_shape=[2, 5], num_classes=3, num_train=7, num_test=4, data_seed=3)
    assert torch.equal(again.train.tensors[0], s.train.tensors[0])
    with pytest.raises(SparsetrainError, match="positive"):
        create_dataset("synthetic", num_train=0)


# ----------------------------------------------------------------------------- augmentation


def test_random_crop_flip_semantics():
    x = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).reshape(2, 3, 4, 4)
    flip = RandomCropFlip(padding=0, flip=True)(x, torch.Generator().manual_seed(0))
    for i in range(2):
        assert torch.equal(flip[i], x[i]) or torch.equal(flip[i], x[i].flip(-1))
    crop = RandomCropFlip(padding=1, flip=False, fill=[-1.0, -2.0, -3.0])
    outs = torch.cat([crop(x, torch.Generator().manual_seed(s)) for s in range(20)])
    assert outs.shape == (40, 3, 4, 4)
    # every value is either from the image or the channel's fill value, never mixed across channels
    for c, fill in enumerate([-1.0, -2.0, -3.0]):
        vals = set(outs[:, c].unique().tolist()) - {fill}
        assert vals <= set(x[:, c].unique().tolist())
    assert (outs == -1.0).any()  # some shift brought padding in
    padded = torch.nn.functional.pad(x, (1, 1, 1, 1))
    for c, fill in enumerate([-1.0, -2.0, -3.0]):
        padded[:, c][padded[:, c] == 0] = fill
    padded[0, 0, 1, 1] = 0.0  # the image's own zero pixel
    for k, out in enumerate(outs):  # each output is one crop of its padded image
        crops = [padded[k % 2, :, dy:dy + 4, dx:dx + 4] for dy in range(3) for dx in range(3)]
        assert any(torch.equal(out, crop) for crop in crops)
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        crop(torch.zeros(3, 4, 4))


def _batches(loader) -> list[torch.Tensor]:
    return [torch.cat([x.flatten(1), y[:, None].float()], 1) for x, y in loader]


def test_augmentation_train_only_and_deterministic(cifar10_root):
    s = create_dataset("cifar10", root=cifar10_root)
    train, val, test = make_loaders(s, 4, seed=0, val_fraction=0.2, augment=True)
    assert type(test) is DataLoader and type(val) is DataLoader  # no augmentation outside train
    x_test = torch.cat([x for x, _ in test])
    assert torch.equal(x_test, s.test.tensors[0])
    first = _batches(train)
    second = _batches(train)  # the sampler epoch advanced: new order and new crops
    assert first[0].shape == (4, 3 * 32 * 32 + 1)
    again, _, _ = make_loaders(s, 4, seed=0, val_fraction=0.2, augment=True)
    assert all(torch.equal(a, b) for a, b in zip(first, _batches(again), strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(first, second, strict=True))
    train.sampler.set_epoch(0)  # resuming at epoch 0 replays it exactly
    assert all(torch.equal(a, b) for a, b in zip(first, _batches(train), strict=True))
    plain, _, _ = make_loaders(s, 4, seed=0, val_fraction=0.2)
    assert not all(torch.equal(a, b) for a, b in zip(first, _batches(plain), strict=True))


def test_augmentation_independent_of_workers():
    s = create_dataset("synthetic", input_shape=(3, 8, 8), num_train=12, num_test=2)
    a, _, _ = make_loaders(s, 4, seed=5, augment=True)
    b, _, _ = make_loaders(s, 4, seed=5, augment=True, num_workers=1)
    assert all(torch.equal(p, q) for p, q in zip(_batches(a), _batches(b), strict=True))


def test_augment_needs_a_standard_augmentation():
    s = create_dataset("synthetic", input_shape=(1, 40), num_train=8, num_test=2)
    with pytest.raises(SparsetrainError, match="'synthetic' has no standard augmentation"):
        make_loaders(s, 4, seed=0, augment=True)
    train, _, _ = make_loaders(s, 4, seed=0, augment=lambda x, g: x + 1)
    assert torch.equal(torch.cat([x for x, _ in train]).sort(0).values, (s.train.tensors[0] + 1).sort(0).values)


# ----------------------------------------------------------------------------- loaders


def _toy(n: int = 20) -> DataSplits:
    ds = TensorDataset(torch.arange(n, dtype=torch.float32)[:, None], torch.arange(n))
    test = TensorDataset(torch.arange(7, dtype=torch.float32)[:, None], torch.arange(7))
    return DataSplits("toy", ds, test, num_classes=n, input_shape=(1,))


def _labels(loader) -> list[int]:
    return [int(v) for _, y in loader for v in y]


def test_shuffle_deterministic_per_seed_and_epoch():
    s = _toy()
    a, _, test = make_loaders(s, 6, seed=1)
    b, _, _ = make_loaders(s, 6, seed=1)
    c, _, _ = make_loaders(s, 6, seed=2)
    ea, eb, ec = _labels(a), _labels(b), _labels(c)
    assert sorted(ea) == list(range(20)) and ea == eb and ea != ec and ea != list(range(20))
    assert _labels(a) != ea  # the next epoch reshuffles
    assert len(a) == 4 and _labels(test) == list(range(7))
    dropped, _, _ = make_loaders(s, 6, seed=1, drop_last=True, eval_batch_size=5)
    assert len(dropped) == 3


def test_val_split_sizes_and_determinism():
    s = _toy()
    train, val, _ = make_loaders(s, 4, seed=3, val_fraction=0.1)
    assert len(train.dataset) == 18 and len(val.dataset) == 2
    val_ids = _labels(val)
    assert val_ids == sorted(val_ids) and not set(val_ids) & set(_labels(train))
    assert sorted(val_ids + _labels(train)) == list(range(20))
    _, same, _ = make_loaders(s, 4, seed=3, val_fraction=0.1)
    _, other, _ = make_loaders(s, 4, seed=4, val_fraction=0.1)
    assert _labels(same) == val_ids and _labels(other) != val_ids
    assert make_loaders(s, 4, seed=3).val is None
    for bad in (1.0, 0.01, -0.2):
        with pytest.raises(SparsetrainError, match="val_fraction"):
            make_loaders(s, 4, seed=0, val_fraction=bad)


def test_own_val_split_used():
    s = _toy()
    s.val = TensorDataset(torch.zeros(3, 1), torch.zeros(3, dtype=torch.long))
    assert len(make_loaders(s, 2, seed=0).val.dataset) == 3
    with pytest.raises(SparsetrainError, match="has its own validation split"):
        make_loaders(s, 2, seed=0, val_fraction=0.1)


def test_distributed_sharding():
    s = _toy(21)
    shards, tests, vals = [], [], []
    for rank in range(2):
        train, val, test = make_loaders(s, 4, seed=7, distributed=True, num_replicas=2, rank=rank, val_fraction=0.2)
        assert isinstance(train.sampler, DistributedSampler)
        assert isinstance(test.sampler, ShardSampler)
        train.sampler.set_epoch(3)
        shards.append(_labels(train))
        tests.append(_labels(test))
        vals.append(_labels(val))
    assert len(shards[0]) == len(shards[1]) == 9  # 17 train samples, padded to 18
    assert set(shards[0]) | set(shards[1]) == set(_labels(make_loaders(s, 4, seed=7, val_fraction=0.2).train))
    assert len(set(shards[0]) & set(shards[1])) <= 1  # only the padding repeats
    # evaluation shards are unpadded: every test and val sample exactly once
    assert sorted(tests[0] + tests[1]) == list(range(7)) and (tests[0], tests[1]) == ([0, 2, 4, 6], [1, 3, 5])
    _, val, _ = make_loaders(s, 4, seed=7, val_fraction=0.2)
    assert sorted(vals[0] + vals[1]) == _labels(val) and len(_labels(val)) == 4
    # the epoch-3 order of the single-process loader equals the merged DDP order
    single, _, _ = make_loaders(s, 4, seed=7, distributed=True, num_replicas=1, rank=0, val_fraction=0.2)
    single.sampler.set_epoch(3)
    order = _labels(single)
    assert shards[0] == order[0::2][:9] and shards[1] == (order[1::2] + order[:1])[:9]
    with pytest.raises(SparsetrainError, match="initialised process group"):
        make_loaders(s, 4, seed=0, distributed=True)
    with pytest.raises(SparsetrainError, match="rank must be in"):
        make_loaders(s, 4, seed=0, distributed=True, num_replicas=2, rank=2)


# ----------------------------------------------------------------------------- splits made by create_dataset


def test_create_dataset_val_fraction_and_step_augment():
    s = create_dataset("synthetic", input_shape=(3, 8, 8), num_train=20, num_test=4, seed=1, val_fraction=0.1,
                       augment=True)
    assert len(s.train) == 18 and len(s.val) == 2 and isinstance(s.augment, StepAugment)
    same = create_dataset("synthetic", input_shape=(3, 8, 8), num_train=20, num_test=4, seed=1, val_fraction=0.1)
    assert same.val.indices == s.val.indices and same.augment is None
    other = create_dataset("synthetic", input_shape=(3, 8, 8), num_train=20, num_test=4, seed=2, val_fraction=0.1)
    assert other.val.indices != s.val.indices
    x = torch.stack([s.train[i][0] for i in range(4)])
    assert torch.equal(s.augment(x, 3), s.augment(x, 3)) and not torch.equal(s.augment(x, 3), s.augment(x, 4))
    with pytest.raises(SparsetrainError, match="not both"):
        make_loaders(s, 4, seed=0, augment=True)
    with pytest.raises(SparsetrainError, match="'digits' has no standard augmentation"):
        create_dataset("digits", augment=True)
