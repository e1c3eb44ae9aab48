"""Channel groups from the dependency graph (docs/algorithms.md, "Chase"): counts on every bundled model,
residual ties, prune_skip, index maps that really carry a channel, bad input."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from sparsetrain.core.graph import channel_groups
from sparsetrain.errors import SparsetrainError
from sparsetrain.train.models import create_model

IMG = torch.randn(2, 3, 32, 32)

#: model -> (kwargs, input, internal groups, residual groups), counted from the architecture:
#: every conv / hidden linear whose outputs are read by a layer is one group; in a residual
#: stage the block outputs, the stage's input producer and the projection are one tied group
MODELS = {
    "mlp": (dict(in_features=40), torch.randn(2, 40), 2, 0),  # two hidden layers
    "cnn1d": (dict(in_channels=1), torch.randn(2, 1, 40), 4, 0),  # four convs, the last feeds the head
    "lenet5": (dict(in_channels=1), torch.randn(2, 1, 28, 28), 4, 0),  # 2 convs + 2 hidden linears
    "vgg16": ({}, IMG, 13, 0),
    "vgg19": ({}, IMG, 16, 0),
    # CIFAR ResNet-6n+2: n blocks x 3 stages, conv1 of each block internal; one tied group per stage
    "resnet20": ({}, IMG, 9, 3),
    "resnet32": ({}, IMG, 15, 3),
    "resnet56": ({}, IMG, 27, 3),
    # basic blocks: conv1 per block; stage 1 has identity shortcuts, so the stem is tied to it
    "resnet18": ({}, IMG, 8, 4),
    "resnet34": ({}, IMG, 16, 4),
    # bottlenecks: conv1 and conv2 per block (16 blocks) + the stem (stage 1 starts with a projection)
    "resnet50": ({}, IMG, 1 + 2 * 16, 4),
    # WRN-28-2 (pre-activation): stem + conv1 of each of 12 blocks; one tied group per stage
    "wrn28_2": ({}, IMG, 13, 3),
}


@pytest.mark.parametrize("name", list(MODELS))
def test_group_counts_on_bundled_models(name, one_thread):
    kwargs, x, internal, residual = MODELS[name]
    model = create_model(name, **kwargs)
    groups = channel_groups(model, x, prune_skip=True)
    assert sum(not g.residual for g in groups) == internal
    assert sum(g.residual for g in groups) == residual
    head = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)][-1]
    params = dict(model.named_parameters())
    for g in groups:
        assert all(not s.param.startswith(head + ".") for s in g.producers), "classifier outputs are never offered"
        for s in g.producers + g.consumers:
            # the index maps cover the channel dimension exactly once
            flat = sorted(i for ix in s.index for i in ix)
            assert flat == list(range(params[s.param].shape[s.dim])), s.param
        assert len(s.index) == g.size


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_imagenet_stem(name, one_thread):
    model = create_model(name, stem="imagenet")
    groups = channel_groups(model, torch.randn(1, 3, 64, 64), prune_skip=True)
    _, _, internal, residual = MODELS[name]
    assert (sum(not g.residual for g in groups), sum(g.residual for g in groups)) == (internal, residual)


def test_prune_skip_default_leaves_residual_ties_out(one_thread):
    model = create_model("resnet20")
    default = channel_groups(model, IMG)
    names = [g.name for g in default]
    assert not any(g.residual for g in default)
    assert names == [f"layer{s}.{b}.conv1" for s in (1, 2, 3) for b in range(3)]  # the seed's internal widths
    tied = [g for g in channel_groups(model, IMG, prune_skip=True) if g.residual]
    stage1 = tied[0]
    assert stage1.name == "conv" and stage1.size == 16
    assert stage1.producer_modules == ("conv", "layer1.0.conv2", "layer1.1.conv2", "layer1.2.conv2")
    assert stage1.norms == ("bn", "layer1.0.bn2", "layer1.1.bn2", "layer1.2.bn2")
    # the stage-1 stream is read by every block's conv1 and by stage 2's first conv and projection
    assert {s.param for s in stage1.consumers} == {"layer1.0.conv1.weight", "layer1.1.conv1.weight",
                                                   "layer1.2.conv1.weight", "layer2.0.conv1.weight",
                                                   "layer2.0.shortcut.0.weight"}


def test_flatten_maps_one_channel_to_many_columns():
    model = create_model("lenet5", in_channels=1)
    group = next(g for g in channel_groups(model, torch.randn(2, 1, 28, 28)) if g.name == "features.3")
    (consumer,) = group.consumers
    assert consumer.param == "classifier.0.weight" and consumer.dim == 1
    assert consumer.index[1] == tuple(range(25, 50))  # channel 1 of 16@5x5 = columns 25..49 after flatten
    assert [s.param for s in group.producers] == ["features.3.weight", "features.3.bias"]


def test_vgg_group_has_batchnorm_and_next_conv():
    model = create_model("vgg16")
    first = channel_groups(model, IMG)[0]
    assert (first.name, first.size, first.norms) == ("features.0", 64, ("features.1",))
    assert [(s.param, s.dim) for s in first.producers] == [("features.0.weight", 0), ("features.0.bias", 0)]
    assert [(s.param, s.dim) for s in first.consumers] == [("features.3.weight", 1)]
    assert first.consumers[0].positions().shape == (64, 1)


def _zero_channel(model: nn.Module, slices, channel: int, value: float | None) -> None:
    params = dict(model.named_parameters())
    with torch.no_grad():
        for s in slices:
            idx = torch.tensor(s.index[channel])
            target = params[s.param].index_select(s.dim, idx)
            params[s.param].index_copy_(s.dim, idx, torch.randn_like(target) if value is None else
                                        torch.full_like(target, value))


@pytest.mark.parametrize("name", ["resnet20", "lenet5", "cnn1d", "mlp"])
def test_a_channel_without_consumers_has_no_effect(name, one_thread):
    """Zero a channel's consumer slices: whatever its producers and norms hold, the output is the same."""
    kwargs, x, _, _ = MODELS[name]
    torch.manual_seed(0)
    model = create_model(name, **kwargs).eval()
    for group in channel_groups(model, x, prune_skip=True):
        c = group.size // 2
        _zero_channel(model, group.consumers, c, 0.0)
        before = model(x)
        _zero_channel(model, group.producers, c, None)
        modules = dict(model.named_modules())
        with torch.no_grad():
            for norm in group.norms:
                modules[norm].bias[c] += 3.0
        torch.testing.assert_close(model(x), before, rtol=0, atol=1e-6)


def test_ignore_and_tracing_leaves_the_model_as_it_was():
    model = create_model("cnn1d", in_channels=1).train()
    stats = model.features[1].running_mean.clone()
    groups = channel_groups(model, torch.randn(8, 1, 40), ignore=["features.0"])
    assert [g.name for g in groups] == ["features.3", "features.6", "features.9"]
    assert model.training and all(m.training for m in model.modules())
    assert torch.equal(model.features[1].running_mean, stats)  # traced in eval mode


def test_grouped_conv_and_mixing_norm_are_not_offered():
    depthwise = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3, groups=8), nn.ReLU(),
                              nn.Conv2d(8, 4, 1), nn.Flatten(), nn.LazyLinear(2))
    layernorm = nn.Sequential(nn.Linear(6, 8), nn.LayerNorm(8), nn.ReLU(), nn.Linear(8, 2))
    x = torch.randn(2, 3, 8, 8)
    depthwise(x)
    assert [g.name for g in channel_groups(depthwise, x)] == ["4"]
    assert channel_groups(layernorm, torch.randn(2, 6)) == []


def test_bad_input_names_the_failing_layer():
    class Broken(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)
            self.head = nn.Linear(5, 2)

        def forward(self, x):
            return self.head(self.conv(x).flatten(1))

    with pytest.raises(SparsetrainError, match="layer 'head'"):
        channel_groups(Broken(), torch.randn(2, 3, 8, 8))
    with pytest.raises(SparsetrainError, match="example_input"):
        channel_groups(Broken(), None)
