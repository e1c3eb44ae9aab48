"""Selection on real model zoos: Hugging Face Conv1D ([in, out]), nn.MultiheadAttention, tied weights.

Regression tests of issue 13: GPT-2 used to get only its tied ``lm_head`` sparsified (so its embedding
ended 90 % zero) and ``in_proj_weight`` stayed dense, silently.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn
from transformers import GPT2Config, GPT2LMHeadModel
from transformers.pytorch_utils import Conv1D

import sparsetrain
from sparsetrain.core.granularity import get_granularity, oriented
from sparsetrain.core.layout import fan_in, out_first
from sparsetrain.core.selection import select
from sparsetrain.core.topk import exact_count
from sparsetrain.distributions import layer_densities
from sparsetrain.errors import SparsetrainError

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _kit import VARIANTS_FOR_HF, ModelSpec  # noqa: E402
from test_properties import run_and_check  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


def gpt2(seed: int = 0) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    return GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=64, n_head=2, vocab_size=100, n_positions=32))


def sgd(model: nn.Module) -> torch.optim.Optimizer:
    return torch.optim.SGD(model.parameters(), lr=0.1)


def test_gpt2_sparsifies_every_conv1d_and_keeps_the_tied_embedding_dense():
    model = gpt2()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the default selection leaves the tied pair alone: no warning
        sp = sparsetrain.attach(model, sgd(model), "rigl", density=0.1, total_steps=50, update_every=5)
    conv1d = {f"{n}.weight" for n, m in model.named_modules() if isinstance(m, Conv1D)}
    assert set(sp.masks) == conv1d and len(conv1d) == 8
    assert sp.ctx.out_axes == dict.fromkeys(conv1d, 1)
    assert sum(int(m.sum()) for m in sp.masks.values()) == exact_count(0.1, sum(m.numel() for m in sp.masks.values()))
    assert int(torch.count_nonzero(model.transformer.wte.weight)) == model.transformer.wte.weight.numel()
    ids = torch.randint(0, 100, (4, 16))
    for _ in range(6):  # a RigL update at step 5 keeps each layer's count and the embedding dense
        before = {n: int(m.sum()) for n, m in sp.masks.items()}
        model(ids, labels=ids).loss.backward()
        sp.optimizer.step()
        sp.optimizer.zero_grad()
        assert {n: int(m.sum()) for n, m in sp.masks.items()} == before
    assert int(torch.count_nonzero(model.transformer.wte.weight)) == model.transformer.wte.weight.numel()
    rows = {r["name"]: r["type"] for r in sp.report().rows}
    assert set(rows.values()) == {"Conv1D"}
    assert "Conv1D" in str(sp.report())


@pytest.mark.parametrize("how", [{"embeddings": True}, {"include": ["lm_head.weight", "*.c_fc.weight"]}])
def test_tied_embedding_and_head_are_one_entry_and_the_user_is_told_once(how):
    model = gpt2()
    with pytest.warns(UserWarning, match="one tensor") as record:
        sp = sparsetrain.attach(model, sgd(model), "static", density=0.5, total_steps=10, **how)
    assert sum("one tensor" in str(w.message) for w in record) == 1
    entry = sp.selection["transformer.wte.weight"]
    assert entry.module_type == "Embedding+Linear" and entry.names == ("transformer.wte.weight", "lm_head.weight")
    assert "lm_head.weight" not in sp.masks  # counted once
    assert model.lm_head.weight is model.transformer.wte.weight
    assert torch.equal(model.transformer.wte.weight != 0, sp.masks["transformer.wte.weight"])


def test_include_pattern_that_matches_nothing_lists_close_names():
    with pytest.raises(SparsetrainError, match="mlp.c_fc.weight") as err:
        select(gpt2(), include=["transformer.h.0.mlp.cfc.weight"])
    assert "Did you mean" in str(err.value)


def test_model_whose_only_linear_is_tied_to_an_embedding_says_what_to_do():
    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb, self.head = nn.Embedding(10, 4), nn.Linear(4, 10, bias=False)
            self.head.weight = self.emb.weight

    with pytest.raises(SparsetrainError, match="embeddings=True"):
        select(Tied())
    with pytest.warns(UserWarning, match="one tensor"):
        assert list(select(Tied(), embeddings=True)) == ["emb.weight"]


def test_shared_linear_weight_is_one_entry():
    net = nn.Sequential(nn.Linear(6, 6), nn.ReLU(), nn.Linear(6, 6))
    net[2].weight = net[0].weight
    chosen = select(net)
    assert list(chosen) == ["0.weight"] and chosen["0.weight"].names == ("0.weight", "2.weight")


def test_multihead_attention_projections_are_sparsified():
    layer = nn.TransformerEncoderLayer(16, 2, 32, batch_first=True)
    sp = sparsetrain.attach(layer, sgd(layer), "rigl", density=0.2, total_steps=10)
    assert "self_attn.in_proj_weight" in sp.masks
    assert float(sp.masks["self_attn.in_proj_weight"].float().mean()) < 1.0
    assert (layer.self_attn.in_proj_weight == 0).any()
    separate = nn.MultiheadAttention(16, 2, kdim=8, vdim=12)
    assert set(select(separate)) == {"q_proj_weight", "k_proj_weight", "v_proj_weight", "out_proj.weight"}


def test_erk_on_conv1d_equals_erk_on_the_equivalent_linear():
    torch.manual_seed(0)
    hf = nn.Sequential(Conv1D(24, 10), nn.ReLU(), Conv1D(6, 24), nn.ReLU(), nn.Linear(6, 3))
    lin = nn.Sequential(nn.Linear(10, 24), nn.ReLU(), nn.Linear(24, 6), nn.ReLU(), nn.Linear(6, 3))
    with torch.no_grad():
        for a, b in ((hf[0], lin[0]), (hf[2], lin[2])):
            b.weight.copy_(a.weight.T)
            b.bias.copy_(a.bias)
        lin[4].load_state_dict(hf[4].state_dict())
    d_hf = layer_densities("erk", {n: s.param.shape for n, s in select(hf).items()}, 0.3)
    d_lin = layer_densities("erk", {n: s.param.shape for n, s in select(lin).items()}, 0.3)
    assert d_hf == pytest.approx(d_lin)
    x = torch.randn(5, 10)
    assert torch.allclose(hf(x), lin(x), atol=1e-6)
    sp_hf = sparsetrain.attach(hf, sgd(hf), "static", density=0.3, total_steps=5, seed=3)
    sp_lin = sparsetrain.attach(lin, sgd(lin), "static", density=0.3, total_steps=5, seed=3)
    assert {n: int(m.sum()) for n, m in sp_hf.masks.items()} == {n: int(m.sum()) for n, m in sp_lin.masks.items()}


def test_fan_in_and_granularities_use_the_conv1d_out_axis():
    w = torch.randn(8, 12)  # Conv1D: 8 inputs, 12 outputs
    assert fan_in(w.shape, 1) == 8 and fan_in(w.T.shape) == 8
    filt = oriented(get_granularity("filter"), 1).select(w.abs(), 0.25)
    assert filt.shape == w.shape
    cols = filt.all(0)
    assert int(cols.sum()) == 3 and torch.equal(filt, cols.expand_as(filt))  # whole output units
    nm = oriented(get_granularity("2:4"), 1).select(w, None)
    assert torch.equal(nm.T, get_granularity("2:4").select(w.T, None))  # N:M runs along the inputs
    assert (out_first(nm, 1).reshape(12, 2, 4).sum(-1) == 2).all()


def test_filter_pruning_of_conv1d_couples_its_bias():
    torch.manual_seed(0)
    net = nn.Sequential(Conv1D(6, 4), nn.ReLU(), nn.Linear(6, 2))
    sp = sparsetrain.attach(net, sgd(net), "prune", density=0.5, total_steps=8, update_every=2, end=0.5,
                            granularity="filter", layer_type="all")
    x, y = torch.randn(8, 4), torch.randint(0, 2, (8,))
    for _ in range(8):
        nn.functional.cross_entropy(net(x), y).backward()
        sp.optimizer.step()
        sp.optimizer.zero_grad()
    mask = sp.masks["0.weight"]
    dead = ~mask.any(0)
    assert torch.equal(mask, (~dead).expand_as(mask)) and dead.any()
    assert (net[0].bias[dead] == 0).all()


def test_transposed_conv1d_mask_in_a_state_dict_is_refused():
    model = gpt2()
    sp = sparsetrain.attach(model, sgd(model), "static", density=0.5, total_steps=10)
    state = sp.state_dict()
    name = "transformer.h.0.mlp.c_fc.weight"
    state["masks"][name] = state["masks"][name].T.contiguous()
    with pytest.raises(SparsetrainError, match="transposed"):
        sp.load_state_dict(state)


@pytest.mark.parametrize("variant", VARIANTS_FOR_HF, ids=lambda v: v.id)
def test_every_method_keeps_its_contracts_on_conv1d_layers(variant):
    run_and_check(variant, ModelSpec("hf", (8, 12), in_features=8), "adamw", 0.3, seed=1)


def test_nm_rigl_on_conv1d_keeps_n_of_every_m_inputs_per_output_unit():
    torch.manual_seed(0)
    net = nn.Sequential(Conv1D(8, 16), nn.ReLU(), nn.Linear(8, 3))  # Conv1D weight [16 inputs, 8 outputs]
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    sp = sparsetrain.attach(net, opt, "rigl", density=0.5, granularity="2:4", update_every=2, total_steps=12)
    first = sp.masks["0.weight"].clone()
    x, y = torch.randn(16, 16), torch.randint(0, 3, (16,))
    for _ in range(12):
        nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
        opt.zero_grad()
        groups = out_first(sp.masks["0.weight"], 1).reshape(8, 4, 4)  # [outputs, input groups, 4]
        assert (groups.sum(-1) == 2).all()
        assert not net[0].weight[~sp.masks["0.weight"]].any()  # exact zeros off the mask
    assert not torch.equal(first, sp.masks["0.weight"])  # the N:M updates moved weights


def test_an_unmatched_include_pattern_on_a_big_model_names_close_ones_without_listing_all():
    net = nn.Sequential(*[nn.Linear(4, 4) for _ in range(30)])
    with pytest.raises(SparsetrainError, match="Did you mean: 12.weight") as err:
        select(net, include=["12.weihgt"])
    assert "30" in str(err.value) and "29.weight" in str(err.value) and "17.weight" not in str(err.value)
