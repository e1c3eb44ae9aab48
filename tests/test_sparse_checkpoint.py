"""Sparse checkpoint format (ISSUE 4 export; docs/algorithms.md, "Chase"): bit packing, size, bit-exact round trip,
errors."""

from __future__ import annotations

import io

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from sparsetrain.deploy.checkpoint import (
    load_sparse,
    load_state,
    pack_bits,
    read_metadata,
    save_sparse,
    unpack_bits,
)
from sparsetrain.errors import SparsetrainError
from sparsetrain.train.models import create_model

pytestmark = pytest.mark.usefixtures("one_thread")


def _sparsify(model: nn.Module, density: float, seed: int = 0) -> dict[str, torch.Tensor]:
    """Exact-count random masks on every conv/linear weight, applied in place."""
    gen = torch.Generator().manual_seed(seed)
    masks = {}
    for name, p in model.named_parameters():
        if p.dim() >= 2:
            keep = torch.randperm(p.numel(), generator=gen)[: round(density * p.numel())]
            mask = torch.zeros(p.numel(), dtype=torch.bool)
            mask[keep] = True
            masks[name] = mask.view_as(p)
            with torch.no_grad():
                p.mul_(masks[name])
    return masks


def test_pack_bits_hand_worked():
    bits = torch.tensor([1, 0, 0, 0, 0, 0, 0, 1, 1, 1], dtype=torch.bool)
    assert pack_bits(bits).tolist() == [0b10000001, 0b11000000]


@settings(max_examples=40, deadline=None)
@given(st.lists(st.booleans(), min_size=1, max_size=70), st.integers(1, 3))
def test_pack_unpack_round_trip(values, rows):
    mask = torch.tensor(values * rows).view(rows, len(values))
    packed = pack_bits(mask)
    assert packed.dtype == torch.uint8 and packed.numel() == (mask.numel() + 7) // 8
    assert torch.equal(unpack_bits(packed, mask.shape), mask)


def _dense_bytes(model: nn.Module) -> int:
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    return buf.tell()


@pytest.mark.parametrize("name", ["resnet20", "mlp"])
def test_ninety_percent_sparse_file_is_at_most_15_percent(tmp_path, name):
    torch.manual_seed(0)
    model = create_model(name)
    masks = _sparsify(model, 0.1)
    path = tmp_path / "m.safetensors"
    save_sparse(model, path, masks=masks)
    ratio = path.stat().st_size / _dense_bytes(model)
    assert ratio <= 0.15, ratio
    other = create_model(name)
    loaded = load_sparse(path, other)
    for (k, a), b in zip(model.state_dict().items(), other.state_dict().values(), strict=True):
        assert a.dtype == b.dtype and torch.equal(a, b), k
    assert set(loaded) == set(masks) and all(torch.equal(loaded[k], masks[k]) for k in masks)


def test_round_trip_is_bit_exact_including_negative_zero_and_active_zeros(tmp_path):
    model = nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.Linear(16, 4, bias=False)).double()
    masks = _sparsify(model, 0.25, seed=3)
    with torch.no_grad():
        w = model[0].weight
        w[masks["0.weight"]] = torch.where(torch.arange(int(masks["0.weight"].sum())) % 3 == 0, 0.0,
                                           w[masks["0.weight"]].double())  # active zeros (regrown weights)
        model[2].weight[0, 0] = -0.0  # outside the given mask is an error only for non-zeros
    model[1].running_mean.normal_()
    save_sparse(model, tmp_path / "a.safetensors", masks={"0.weight": masks["0.weight"]})
    save_sparse(model, tmp_path / "b.safetensors")  # automatic layout: non-zero bit patterns
    for f in ("a", "b"):
        state, _ = load_state(tmp_path / f"{f}.safetensors")
        for k, v in model.state_dict().items():
            assert state[k].dtype == v.dtype
            if f == "b":  # bit-exact, -0.0 included
                assert torch.equal(state[k].view(torch.int64) if v.dtype == torch.float64 else state[k],
                                   v.view(torch.int64) if v.dtype == torch.float64 else v), k
            assert torch.equal(state[k], v), k
    _, loaded = load_state(tmp_path / "a.safetensors")
    assert torch.equal(loaded["0.weight"], masks["0.weight"])  # active zeros stay active


def test_metadata_records_layout_and_extra_entries(tmp_path):
    model = nn.Linear(64, 32)
    _sparsify(model, 0.1)
    save_sparse(model, tmp_path / "m.safetensors", metadata={"width_spec": "{}"})
    meta = read_metadata(tmp_path / "m.safetensors")
    assert meta["format"] == "sparsetrain-sparse" and meta["version"] == "1" and meta["width_spec"] == "{}"
    assert '"weight": {"shape": [32, 64], "dtype": "float32"}' in meta["sparse"]


def test_wrong_model_is_refused(tmp_path):
    model = create_model("lenet5")
    save_sparse(model, tmp_path / "m.safetensors")
    with pytest.raises(SparsetrainError, match="does not fit this model.*shape mismatch"):
        load_sparse(tmp_path / "m.safetensors", create_model("lenet5", num_classes=3))
    with pytest.raises(SparsetrainError, match="missing"):
        load_sparse(tmp_path / "m.safetensors", create_model("cnn1d"))


def test_bad_inputs(tmp_path):
    model = nn.Linear(4, 4)
    with pytest.raises(SparsetrainError, match="outside its mask"):
        save_sparse(model, tmp_path / "m.safetensors", masks={"weight": torch.zeros(4, 4, dtype=torch.bool)})
    with pytest.raises(SparsetrainError, match="does not have"):
        save_sparse(model, tmp_path / "m.safetensors", masks={"nope": torch.ones(4, 4)})
    with pytest.raises(SparsetrainError, match="no sparse checkpoint"):
        load_sparse(tmp_path / "absent.safetensors", model)
    torch.save(model.state_dict(), tmp_path / "dense.pt")
    with pytest.raises(SparsetrainError, match="safetensors"):
        load_sparse(tmp_path / "dense.pt", model)
