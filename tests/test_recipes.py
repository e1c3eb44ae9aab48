"""Every bundled recipe loads and validates; every MNIST-1D recipe trains one tiny epoch."""

from __future__ import annotations

import json
from functools import cache

import pytest
import torch
import yaml

from sparsetrain.cli import main
from sparsetrain.methods import create_method, list_methods, method_signature
from sparsetrain.train.config import builder_kwargs, load_config
from sparsetrain.train.data import dataset_signature, list_datasets
from sparsetrain.train.loop import method_kwargs
from sparsetrain.train.models import create_model, list_models
from sparsetrain.train.recipes import find_recipe, list_recipes

RECIPES = list(list_recipes())
MNIST1D_RECIPES = [n for n in RECIPES if load_config(n)["data"]["name"] == "mnist1d"]
#: a tiny epoch: 480 train samples, 9 steps of 50, an 8-wide 1D CNN, one thread
TINY = ["--epochs", "1", "--data.num_samples", "600", "--batch_size", "50", "--model.width", "8", "--threads", "1",
        "--run.plots", "false"]
#: what each dataset gives the model (the trainer derives it from the data)
DATA_SHAPES = {"cifar10": (10, (3, 32, 32)), "cifar100": (100, (3, 32, 32)), "imagefolder": (1000, (3, 224, 224)),
               "mnist1d": (10, (1, 40)), "mnist": (10, (1, 28, 28)), "fashion_mnist": (10, (1, 28, 28)),
               "digits": (10, (1, 8, 8)), "synthetic": (10, (3, 32, 32)), "pystdlib": (98, (64,))}




def _leaves(tree: dict, prefix: tuple = ()):
    for key, value in tree.items():
        if isinstance(value, dict):
            yield from _leaves(value, (*prefix, key))
        else:
            yield (*prefix, key), value


@cache
def _model_builds(name: str, kwargs_yaml: str, num_classes: int, input_shape: tuple[int, ...]) -> int:
    """Build the model as the trainer does, once per distinct configuration; returns its parameter count."""
    from sparsetrain.train.models import input_kwargs
    kwargs = yaml.safe_load(kwargs_yaml)
    model = create_model(name, num_classes=num_classes, **input_kwargs(name, input_shape, kwargs), **kwargs)
    return sum(p.numel() for p in model.parameters())


def test_there_are_bundled_recipes_with_descriptions():
    recipes = list_recipes()
    assert len(recipes) >= 10
    assert "granet_mnist1d" in recipes and MNIST1D_RECIPES
    for name, description in recipes.items():
        assert description.strip(), f"recipe {name} has no description"


@pytest.mark.parametrize("name", RECIPES)
def test_recipe_loads_and_validates(name):
    cfg = load_config(name)  # raises on an unknown key, model, method or dataset
    raw = yaml.safe_load(find_recipe(name).read_text())
    raw.pop("description")
    # nothing the recipe says is lost or changed on the way
    for path, value in _leaves(raw):
        node = cfg
        for key in path:
            node = node[key]
        assert node == value, f"{name}: {'.'.join(path)} is {node!r}, the recipe says {value!r}"
    assert cfg["model"]["name"] in list_models()
    assert cfg["method"]["name"] == "dense" or cfg["method"]["name"] in list_methods()
    assert cfg["data"]["name"] in list_datasets()
    assert set(builder_kwargs(cfg, "data")) <= set(dataset_signature(cfg["data"]["name"]))
    # the same configuration comes back from the YAML the trainer writes into the run folder
    assert yaml.safe_load(yaml.safe_dump(cfg, sort_keys=False)) == cfg


@pytest.mark.parametrize("name", RECIPES)
def test_recipe_method_and_model_build(name):
    cfg = load_config(name)
    if cfg["method"]["name"] != "dense":
        kwargs = method_kwargs(cfg, steps_per_epoch=100)  # what the trainer passes (epochs -> fractions)
        method = create_method(cfg["method"]["name"], **kwargs)  # checks the values, not only the names
        assert method.name == cfg["method"]["name"]
    num_classes, shape = DATA_SHAPES[cfg["data"]["name"]]
    model_kwargs = builder_kwargs(cfg, "model")
    assert _model_builds(cfg["model"]["name"], yaml.safe_dump(model_kwargs), num_classes, shape) > 0


@pytest.mark.parametrize("name", MNIST1D_RECIPES)
def test_mnist1d_recipe_trains_one_tiny_epoch(tmp_path, capsys, name):
    cfg = load_config(name)
    method = cfg["method"]["name"]
    extra = ["--method.update_every", "3"] if "update_every" in method_signature(method).parameters else []
    rc = main(["train", "--config", name, *TINY, *extra, "--run.dir", str(tmp_path)])
    out, err = capsys.readouterr()
    assert rc == 0, err
    run_dirs = list(tmp_path.iterdir())
    assert len(run_dirs) == 1
    run_dir = run_dirs[0]
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved["method"] == {**cfg["method"], **({"update_every": 3} if extra else {})}
    assert saved["model"] == {**cfg["model"], "width": 8}
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["method"] == method and summary["model"] == cfg["model"]["name"]
    assert summary["dataset"] == "mnist1d" and summary["epochs"] == 1
    assert 0.0 <= summary["final_test_acc"] <= 1.0
    assert 0.0 < summary["density"] <= 1.0
    if method == "static":
        assert summary["density"] == pytest.approx(cfg["method"]["density"], abs=0.01)
    state = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    assert state["epoch"] == 1 and state["method"] == method
    assert "epoch   1/1" in out
