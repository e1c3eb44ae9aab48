"""The GPT in the reference trainer: the offline stdlib corpus, the model, the LM task, recipes and compare."""

from __future__ import annotations

import json
import math

import pytest
import torch

import sparsetrain
from sparsetrain.cli import main
from sparsetrain.errors import SparsetrainError
from sparsetrain.train.config import load_config
from sparsetrain.train.data import create_dataset
from sparsetrain.train.data.text import VOCAB_SIZE, decode, encode, split_of, stdlib_files
from sparsetrain.train.models import create_model
from sparsetrain.train.recipes import list_recipes
from sparsetrain.train.tasks import Task, get_task

pytestmark = pytest.mark.usefixtures("one_thread")

SMALL = dict(context=16, train_chars=6_000, val_chars=2_000, test_chars=2_000)
GPT_RECIPES = sorted(n for n in list_recipes() if load_config(n)["model"]["name"] == "gpt")
#: a tiny epoch: 1-layer 32-wide GPT, 11 steps of 16 windows of 16 characters
TINY = ["--epochs", "1", "--data.train_chars", "3000", "--data.val_chars", "600", "--data.test_chars", "600",
        "--data.context", "16", "--model.n_layer", "1", "--model.n_head", "2", "--model.n_embd", "32",
        "--batch_size", "16", "--threads", "1", "--run.plots", "false"]


def test_corpus_is_deterministic_disjoint_and_shifted_by_one():
    a, b = create_dataset("pystdlib", **SMALL), create_dataset("pystdlib", seed=5, **SMALL)
    for split in ("train", "val", "test"):
        assert torch.equal(getattr(a, split).tensors[0], getattr(b, split).tensors[0])
    x, y = a.train.tensors
    assert x.dtype == torch.int64 and x.shape[1] == 16 and torch.equal(x[:, 1:], y[:, :-1])
    assert a.task == "language_model" and a.num_classes == VOCAB_SIZE and a.input_shape == (16,)
    splits = {split_of(rel) for rel, _ in stdlib_files()}
    assert splits == {"train", "val", "test"}  # every file goes to exactly one split, by its path
    assert len(a.train) == (6_000 - 1) // 16 and len(a.val) == (2_000 - 1) // 16
    assert not torch.equal(a.val.tensors[0][:4], a.test.tensors[0][:4])


def test_vocabulary_round_trips_ascii_and_maps_the_rest_to_unknown():
    text = "def f(x):\n\treturn x  # ok"
    assert decode(encode(text)) == text
    assert encode("é").tolist() == [VOCAB_SIZE - 1]


def test_corpus_refuses_sizes_it_cannot_fill():
    with pytest.raises(SparsetrainError, match="context"):
        create_dataset("pystdlib", context=0)
    with pytest.raises(SparsetrainError, match="lower"):
        create_dataset("pystdlib", context=8, val_chars=10**10)


def test_gpt_is_causal_and_its_tied_embedding_stays_dense():
    torch.manual_seed(0)
    net = create_model("gpt", num_classes=VOCAB_SIZE, context=16, n_layer=2, n_head=2, n_embd=32)
    x = torch.randint(0, VOCAB_SIZE, (2, 16))
    y = x.clone()
    y[:, 10] = (y[:, 10] + 1) % VOCAB_SIZE
    out_x, out_y = net(x), net(y)
    assert torch.equal(out_x[:, :10], out_y[:, :10]) and not torch.equal(out_x[:, 10:], out_y[:, 10:])
    sp = sparsetrain.attach(net, torch.optim.AdamW(net.parameters()), "rigl", density=0.1, total_steps=10)
    blocks = {f"h.{i}.{m}.weight" for i in range(2) for m in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")}
    assert set(sp.masks) == blocks
    assert int(torch.count_nonzero(net.wte.weight)) == net.wte.weight.numel()
    with pytest.raises(SparsetrainError, match="at most 16"):
        net(torch.zeros(1, 17, dtype=torch.long))


def test_swiglu_gpt_has_llama_projections():
    net = create_model("gpt", num_classes=20, context=8, n_layer=1, n_head=2, n_embd=16, mlp="swiglu")
    names = {n for n, _ in net.named_parameters()}
    assert {"h.0.mlp.gate_proj.weight", "h.0.mlp.up_proj.weight", "h.0.mlp.down_proj.weight"} <= names
    with pytest.raises(SparsetrainError, match="mlp"):
        create_model("gpt", mlp="relu2")


def test_tasks_share_one_loss_and_differ_in_what_they_report():
    out, y = torch.randn(3, 5, 7), torch.randint(0, 7, (3, 5))
    assert torch.allclose(Task.loss(out, y), torch.nn.functional.cross_entropy(out.reshape(15, 7), y.reshape(15)))
    lm, cls = get_task("language_model"), get_task("classification")
    assert lm.report("val", 0.5, 2.0) == {"val_acc": 0.5, "val_loss": 2.0, "val_ppl": math.exp(2.0)}
    assert cls.report("val", 0.5, 2.0) == {"val_acc": 0.5, "val_loss": 2.0}
    assert lm.better(1.0, 2.0) and not cls.better(1.0, 2.0)
    with pytest.raises(SparsetrainError, match="unknown task"):
        get_task("regression")


def test_there_is_a_gpt_recipe_for_every_method_the_issue_names():
    methods = {load_config(n)["method"]["name"]: load_config(n)["method"] for n in GPT_RECIPES}
    assert {"dense", "static", "set", "rigl", "granet"} <= set(methods)
    nm = [load_config(n)["method"] for n in GPT_RECIPES if load_config(n)["method"].get("granularity") == "2:4"]
    assert nm and nm[0]["density"] == 0.5


@pytest.mark.parametrize("name", GPT_RECIPES)
def test_gpt_recipe_trains_one_tiny_epoch_and_reports_perplexity(tmp_path, capsys, name):
    method = load_config(name)["method"]["name"]
    extra = ["--method.update_every", "3"] if method != "dense" and method != "static" else []
    rc = main(["train", "--config", name, *TINY, *extra, "--run.dir", str(tmp_path)])
    out, err = capsys.readouterr()
    assert rc == 0, err
    summary = json.loads(next(tmp_path.glob("*/summary.json")).read_text())
    assert summary["dataset"] == "pystdlib" and summary["model"] == "gpt"
    assert summary["final_val_ppl"] == pytest.approx(math.exp(summary["final_val_loss"]))
    assert summary["final_test_ppl"] == pytest.approx(math.exp(summary["final_test_loss"]))
    assert summary["best"]["selected_by"] == "val_loss"
    assert 1.0 < summary["final_val_ppl"] < VOCAB_SIZE * 1.5  # near or below a uniform guess after 11 steps
    assert "perplexity" in out
    if method != "dense":
        assert 0.0 < summary["density"] < 1.0


def test_compare_tables_gpt_runs_with_loss_and_perplexity(tmp_path, capsys):
    rc = main(["compare", "static_gpt_pystdlib", "nm24_gpt_pystdlib", "--seeds", "1", "--out", str(tmp_path),
               *TINY])
    capsys.readouterr()
    assert rc == 0
    table = (tmp_path / "compare.md").read_text()
    assert "test ppl" in table and "nm24_gpt_pystdlib" in table
    rows = json.loads((tmp_path / "compare.json").read_text())
    assert all(r["ppl_mean"] == pytest.approx(math.exp(r["loss_mean"]), rel=1e-9) for r in rows)
    nm = next(r for r in rows if r["label"] == "nm24_gpt_pystdlib")
    assert nm["density"] == pytest.approx(0.5)
