"""Physical channel removal (ISSUE 4 export; docs/algorithms.md, "Chase"): eval outputs equal the masked model's."""

from __future__ import annotations

import copy
import json
import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.nn import functional as F

import sparsetrain
from sparsetrain.core.graph import channel_groups
from sparsetrain.deploy.compact import compact
from sparsetrain.deploy.widths import rebuild
from sparsetrain.errors import SparsetrainError
from sparsetrain.train.models import create_model

pytestmark = pytest.mark.usefixtures("one_thread")

#: every bundled conv model, with a small input (the graph, not the resolution, is under test)
CONV_MODELS = {
    "cnn1d": ({}, (3, 1, 40)),
    "lenet5": ({}, (3, 1, 28, 28)),
    "resnet20": ({}, (2, 3, 16, 16)),
    "vgg16": ({}, (2, 3, 16, 16)),
    "vgg19": ({}, (2, 3, 16, 16)),
    "resnet18": ({"stem": "cifar"}, (2, 3, 16, 16)),
    "resnet50": ({"stem": "cifar"}, (2, 3, 16, 16)),
    "wrn28_2": ({}, (2, 3, 16, 16)),
}


def _randomise_bn(model: nn.Module, gen: torch.Generator) -> None:
    """Trained-looking BatchNorm: non-trivial statistics and affine terms (so empty channels are non-zero constants)."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._NormBase):
            m.running_mean.normal_(generator=gen)
            m.running_var.uniform_(0.5, 2.0, generator=gen)
            m.weight.data.normal_(generator=gen)
            m.bias.data.normal_(generator=gen)


def channel_masks(model: nn.Module, x: torch.Tensor, fraction: float, seed: int = 0,
                  unstructured: float = 0.5) -> dict[str, torch.Tensor]:
    """Masks that empty ``fraction`` of every channel group (residual groups too) plus random unstructured zeros."""
    gen = torch.Generator().manual_seed(seed)
    params = dict(model.named_parameters())
    masks = {n: (torch.rand(p.shape, generator=gen) >= unstructured) for n, p in params.items() if p.dim() >= 2}
    for g in channel_groups(model, x, prune_skip=True):
        drop = torch.randperm(g.size, generator=gen)[: int(fraction * g.size)]
        for s in g.producers:
            if s.param in masks:
                masks[s.param].movedim(s.dim, 0)[s.positions()[drop].flatten()] = False
    return masks


def _masked(model: nn.Module, masks: dict[str, torch.Tensor]) -> nn.Module:
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n in masks:
                p.mul_(masks[n])
    return model


def _assert_same_outputs(a: torch.Tensor, b: torch.Tensor) -> None:
    torch.testing.assert_close(a.detach(), b.detach(), rtol=1e-5, atol=1e-5 * float(b.detach().abs().max()))


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", list(CONV_MODELS))
def test_compact_equals_masked_model_on_every_bundled_conv_model(name):
    kwargs, shape = CONV_MODELS[name]
    gen = torch.Generator().manual_seed(1)
    model = create_model(name, **kwargs).eval()
    _randomise_bn(model, gen)
    x = torch.randn(*shape, generator=gen)
    masks = channel_masks(model, x, 0.5)
    small, spec = compact(model, x, masks=masks)
    reference = _masked(model, masks)(x)
    _assert_same_outputs(small(x), reference)
    fresh = torch.randn(*shape, generator=gen)  # not the input compaction saw
    _assert_same_outputs(small(fresh), model(fresh))
    assert _params(small) < _params(model) and spec["removed"]
    assert type(small) is type(model) and not any(m.training for m in small.modules())
    json.dumps(spec)  # JSON-able


def test_fresh_inputs_and_library_style_masks_remove_every_empty_channel():
    """With the engine's coupled masking (BN weight/bias zeroed with the filter) every empty channel is 0: all go."""
    gen = torch.Generator().manual_seed(2)
    model = create_model("resnet20").eval()
    _randomise_bn(model, gen)
    x = torch.randn(2, 3, 16, 16, generator=gen)
    masks = channel_masks(model, x, 0.5, unstructured=0.0)
    _masked(model, masks)
    for g in channel_groups(model, x, prune_skip=True):
        params = dict(model.named_parameters())
        with torch.no_grad():
            empty = [c for c in range(g.size) if all(
                not params[s.param].movedim(s.dim, 0)[s.positions()[c]].any() for s in g.producers
                if s.param.endswith("weight"))]
            for norm in g.norms:
                bn = dict(model.named_modules())[norm]
                bn.weight[empty] = 0
                bn.bias[empty] = 0
    small, spec = compact(model, x)
    expected = sum(int(0.5 * g.size) for g in channel_groups(model, x, prune_skip=True))
    assert sum(len(v) for v in spec["removed"].values()) == expected
    fresh = torch.randn(4, 3, 16, 16, generator=gen)
    _assert_same_outputs(small(fresh), model(fresh))


class _Residual(nn.Module):
    """A residual net with a flatten into a linear layer, unpadded convs and a bias-free consumer (the folds)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(2, 6, 1)
        self.bn = nn.BatchNorm2d(6)
        self.a = nn.Conv2d(6, 6, 3, padding=1, padding_mode="replicate")
        self.b = nn.Conv2d(6, 6, 1, bias=False)
        self.c = nn.Conv2d(6, 5, 3)  # no padding: a constant input shifts every output equally
        self.fc = nn.Linear(5 * 4 * 4, 3)

    def forward(self, x):
        h = F.relu(self.bn(self.stem(x)))
        h = F.relu(h + self.b(F.relu(self.a(h))))
        return self.fc(F.relu(self.c(h)).flatten(1))


@settings(max_examples=15, deadline=None)
@given(st.integers(0, 2**16), st.floats(0.1, 0.9))
def test_property_random_empty_channels_fold_exactly(seed, fraction):
    torch.manual_seed(seed)
    model = _Residual().eval()
    _randomise_bn(model, torch.Generator().manual_seed(seed))
    x = torch.randn(3, 2, 6, 6)
    _masked(model, channel_masks(model, x, fraction, seed=seed, unstructured=0.3))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a draw may leave nothing removable (then the model comes back as is)
        small, _ = compact(model, x)
    _assert_same_outputs(small(x), model(x))


def test_constant_is_folded_into_a_new_bias():
    model = _Residual().eval()
    with torch.no_grad():
        model.a.weight[2] = 0
        model.a.bias[2] = 1.5  # relu(1.5): a non-zero constant reaching the bias-free 1x1 conv b
    x = torch.randn(2, 2, 6, 6)
    small, spec = compact(model, x)
    assert small.a.out_channels == 5 and small.b.in_channels == 5 and small.b.bias is not None
    assert spec["removed"] == {"a": [2]}
    _assert_same_outputs(small(x), model(x))


def test_padded_consumer_keeps_a_nonzero_constant_unless_calibrating():
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                          nn.Conv2d(4, 2, 3, padding=1)).eval()
    with torch.no_grad():
        model[0].weight[1:3] = 0
        model[0].bias[1], model[0].bias[2] = 2.0, -2.0  # relu: 2 stays (kept), -2 becomes 0 (removed)
    x = torch.randn(2, 1, 8, 8)
    small, spec = compact(model, x)
    assert spec["removed"] == {"0": [2]}
    _assert_same_outputs(small(x), model(x))
    seed_style = copy.deepcopy(model)  # Chase's seed masks the consumer's input slice too (docs/algorithms.md, "Chase")
    with torch.no_grad():
        seed_style[3].weight[:, 1] = 0
    small, spec = compact(seed_style, x)
    assert spec["removed"] == {"0": [1, 2]}
    _assert_same_outputs(small(x), seed_style(x))
    calib = [(torch.randn(4, 1, 8, 8), torch.zeros(4)) for _ in range(2)]
    small, spec = compact(model, x, calibration=calib)
    assert spec["removed"] == {"0": [1, 2]} and small[1].num_features == 2
    feats = torch.cat([small[0](b) for b, _ in calib]).detach()
    torch.testing.assert_close(small[1].running_mean, feats.mean((0, 2, 3)), rtol=1e-4, atol=1e-5)


def test_width_spec_rebuilds_and_refuses_mismatched_weights():
    model = create_model("vgg16").eval()
    x = torch.randn(2, 3, 16, 16)
    masks = channel_masks(model, x, 0.5, unstructured=0.0)
    small, spec = compact(model, x, masks=masks)
    spec = json.loads(json.dumps(spec))
    again = rebuild(lambda: create_model("vgg16"), spec, small.state_dict()).eval()
    _assert_same_outputs(again(x), small(x))
    other = channel_masks(model, x, 0.25, seed=5, unstructured=0.0)
    _, other_spec = compact(model, x, masks=other)
    with pytest.raises(SparsetrainError, match="does not match its weights"):
        rebuild(create_model("vgg16"), other_spec, small.state_dict())
    with pytest.raises(SparsetrainError, match="has a ReLU there"):
        rebuild(create_model("lenet5"), spec, small.state_dict())
    with pytest.raises(SparsetrainError, match="does not have"):
        rebuild(create_model("resnet20"), spec, small.state_dict())
    with pytest.raises(SparsetrainError, match="not a width spec"):
        rebuild(create_model("vgg16"), {"widths": {}}, small.state_dict())


def test_nothing_removable_warns_and_returns_the_model():
    model = create_model("lenet5").eval()
    with pytest.warns(UserWarning, match="nothing to compact"):
        same, spec = compact(model, torch.randn(2, 1, 28, 28))
    assert same is model and spec["removed"] == {}


class _Functional(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(8, 4, 3, 3))

    def forward(self, x):
        return F.conv2d(x, self.w, padding=1)


def test_untraceable_layer_is_named():
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), _Functional(), nn.ReLU(), nn.Conv2d(8, 5, 1))
    with torch.no_grad():
        model[0].weight[0] = 0
        model[0].bias[0] = -1.0
    x = torch.randn(2, 3, 8, 8)
    # the empty channel 0 goes through a functional conv on a raw parameter: named, and kept
    with pytest.warns(UserWarning, match="'2.w' stay"), pytest.warns(UserWarning, match="nothing to compact"):
        small, _ = compact(model.eval(), x)
    assert small[0].out_channels == 4 and torch.equal(small(x), model(x))
    with pytest.raises(SparsetrainError, match="layer"):
        compact(create_model("lenet5"), torch.randn(2, 3, 5))  # a trace that fails names where


def test_top_level_export_and_original_untouched():
    model = create_model("cnn1d").eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(2, 1, 40)
    masks = channel_masks(model, x, 0.5)
    small, _ = sparsetrain.compact(model, x, masks=masks)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert small.features[0].out_channels < model.features[0].out_channels


@pytest.mark.parametrize("round_to", [4, 8, 16])
def test_round_to_keeps_widths_multiples_and_outputs_equal(round_to):
    """``round_to`` keeps some empty channels so each resized group's width is a multiple of N (or its full size)."""
    gen = torch.Generator().manual_seed(3)
    model = create_model("resnet50", stem="cifar").eval()
    _randomise_bn(model, gen)
    x = torch.randn(2, 3, 16, 16, generator=gen)
    masks = channel_masks(model, x, 0.6)
    exact, exact_spec = compact(model, x, masks=masks)
    small, spec = compact(model, x, masks=masks, round_to=round_to)
    _assert_same_outputs(small(x), _masked(model, masks)(x))
    groups = {g.name: g.size for g in channel_groups(model, x, prune_skip=True)}
    for name, removed in spec["removed"].items():
        left = groups[name] - len(removed)
        assert left % round_to == 0 or left == groups[name], (name, left)
        assert set(removed) <= set(exact_spec["removed"][name])  # only gives channels back, never removes more
        assert len(exact_spec["removed"][name]) - len(removed) < round_to
    assert _params(exact) <= _params(small) < _params(model)
    assert spec["round_to"] == round_to
    json.dumps(spec)


@pytest.mark.parametrize("bad", [0, -8, 2.5, True, "8"])
def test_round_to_must_be_a_positive_int(bad):
    model = create_model("lenet5").eval()
    with pytest.raises(SparsetrainError, match="round_to .--round-to. must be a positive int"):
        compact(model, torch.randn(2, 1, 28, 28), round_to=bad)
