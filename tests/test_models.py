"""The reference models: every one builds, gives (N, num_classes) logits, and has the right size."""

from __future__ import annotations

import pytest
import torch

from sparsetrain.errors import SparsetrainError
from sparsetrain.train.models import create_model, list_models

#: model name -> (kwargs, input shape of a batch of 2)
CASES = {
    "mlp": ({}, (2, 1, 28, 28)),
    "lenet5": ({}, (2, 1, 28, 28)),
    "cnn1d": ({}, (2, 1, 40)),
    "resnet20": ({}, (2, 3, 32, 32)),
    "resnet32": ({}, (2, 3, 32, 32)),
    "resnet56": ({}, (2, 3, 32, 32)),
    "vgg16": ({}, (2, 3, 32, 32)),
    "vgg19": ({}, (2, 3, 32, 32)),
    "resnet18": ({}, (2, 3, 32, 32)),
    "resnet34": ({"stem": "imagenet"}, (2, 3, 64, 64)),
    "resnet50": ({}, (2, 3, 32, 32)),
    "wrn28_2": ({}, (2, 3, 32, 32)),
}


def _count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_all_models_registered():
    assert set(CASES) <= set(list_models())
    assert list_models("resnet*") == ["resnet18", "resnet20", "resnet32", "resnet34", "resnet50", "resnet56"]


@pytest.mark.parametrize("name", sorted(CASES))
def test_forward_shape(name):
    torch.manual_seed(0)
    kwargs, shape = CASES[name]
    model = create_model(name, num_classes=7, **kwargs)
    out = model(torch.randn(shape))
    assert out.shape == (2, 7)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name, shape", [("resnet20", (2, 1, 32, 32)), ("vgg16", (2, 1, 32, 32)),
                                         ("wrn28_2", (2, 1, 32, 32)), ("cnn1d", (2, 2, 40)),
                                         ("lenet5", (2, 3, 28, 28)), ("mlp", (2, 3, 28, 28))])
def test_in_channels(name, shape):
    model = create_model(name, num_classes=3, in_channels=shape[1])
    assert model(torch.randn(shape)).shape == (2, 3)


def test_small_model_options():
    assert create_model("cnn1d")(torch.randn(3, 40)).shape == (3, 10)  # (N, L) input
    assert create_model("mlp", in_features=40, hidden=(16,))(torch.randn(3, 40)).shape == (3, 10)
    assert create_model("lenet5", in_channels=3, image_size=32)(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert create_model("resnet18", stem="imagenet")(torch.randn(2, 3, 64, 64)).shape == (2, 10)


def test_parameter_counts():
    assert _count(create_model("mlp")) == 784 * 300 + 300 + 300 * 100 + 100 + 100 * 10 + 10
    n20 = _count(create_model("resnet20"))
    assert 0.26e6 < n20 < 0.28e6  # He et al.: 0.27M
    assert _count(create_model("resnet32")) == pytest.approx(0.46e6, rel=0.03)
    assert _count(create_model("resnet56")) == pytest.approx(0.85e6, rel=0.03)
    n18 = _count(create_model("resnet18"))
    assert n18 == pytest.approx(11.17e6, rel=0.005)  # CIFAR ResNet-18: 11,173,962
    assert _count(create_model("resnet18", num_classes=1000, stem="imagenet")) == 11_689_512  # torchvision's
    assert _count(create_model("wrn28_2")) == pytest.approx(1.47e6, rel=0.01)


def test_unknown_model_and_argument():
    with pytest.raises(SparsetrainError, match="unknown model 'resnet21'.*Did you mean"):
        create_model("resnet21")
    with pytest.raises(SparsetrainError, match="no argument 'depth'"):
        create_model("resnet20", depth=3)
    with pytest.raises(SparsetrainError, match="unknown stem"):
        create_model("resnet18", stem="tiny")
