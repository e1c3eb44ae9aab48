"""Chase-style MLP unit sparsity on transformers and compaction of the emptied units (issue 13).

GPT-2 style (our GPT's Linear c_fc/c_proj and Hugging Face's transposed Conv1D) and Llama style
(gate/up/down, our SwiGLU GPT and Hugging Face's LlamaForCausalLM): Chase removes whole hidden units,
``compact_mlp`` takes them out, and the narrower model computes what the masked one does.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

import sparsetrain
from sparsetrain.deploy.transformer import compact_mlp, mlp_blocks, transformer_groups
from sparsetrain.errors import SparsetrainError
from sparsetrain.train.models import create_model

pytestmark = pytest.mark.usefixtures("one_thread")

VOCAB, CONTEXT = 50, 12


def build(kind: str) -> nn.Module:
    torch.manual_seed(0)
    if kind == "hf-gpt2":
        return GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=VOCAB, n_positions=CONTEXT))
    if kind == "hf-llama":
        return LlamaForCausalLM(LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                            num_attention_heads=2, num_key_value_heads=2, vocab_size=VOCAB,
                                            max_position_embeddings=CONTEXT))
    return create_model("gpt", num_classes=VOCAB, context=CONTEXT, n_layer=2, n_head=2, n_embd=32,
                        mlp="swiglu" if kind == "swiglu" else "gelu")


def logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    out = model(x)
    return out.logits if hasattr(out, "logits") else out


KINDS = ["gelu", "swiglu", "hf-gpt2", "hf-llama"]


@pytest.mark.parametrize("kind", KINDS)
def test_mlp_units_are_groups_on_the_right_axes(kind):
    model = build(kind)
    groups = transformer_groups(model)
    assert len(groups) == 2 and all(not g.residual for g in groups)
    g = groups[0]
    conv1d = kind == "hf-gpt2"  # weights [in, out]: units are columns of c_fc and rows of c_proj
    weights = [s for s in g.producers if s.param.endswith("weight")]
    assert len(weights) == (2 if kind in ("swiglu", "hf-llama") else 1)
    assert all(s.dim == (1 if conv1d else 0) for s in weights)
    assert g.consumers[0].dim == (0 if conv1d else 1)
    assert g.size == model.get_submodule(g.consumers[0].param.rsplit(".", 1)[0]).weight.shape[g.consumers[0].dim]


@pytest.mark.parametrize("kind", KINDS)
def test_chase_removes_mlp_units_and_compaction_keeps_the_outputs(kind):
    model = build(kind)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    sp = sparsetrain.attach(model, opt, "chase", density=0.3, total_steps=24, update_every=4, channel_every=4,
                            channel_sparsity=0.5, end=0.75)
    x = torch.randint(0, VOCAB, (4, CONTEXT), generator=torch.Generator().manual_seed(1))
    for _ in range(24):
        loss = F.cross_entropy(logits(model, x).flatten(0, 1), x.flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    small, widths = compact_mlp(model, sp.masks, example_input=x)
    before = sum(w[0] for w in widths.values())
    after = sum(w[1] for w in widths.values())
    assert after <= before * 0.6  # Chase emptied about half of the MLP units, and they are gone
    for block in mlp_blocks(small):  # the compact model really is narrower
        assert widths[block.name][1] == small.get_submodule(block.down).weight.numel() // 32
    assert torch.allclose(logits(small.eval(), x), logits(model, x), atol=1e-5, rtol=0)


def test_an_empty_gpt2_up_column_with_a_bias_is_folded_into_the_down_bias():
    model = build("hf-gpt2").eval()
    mlp = model.transformer.h[0].mlp
    with torch.no_grad():
        mlp.c_fc.weight[:, :10] = 0  # Conv1D [in, out]: units 0..9 read nothing, output gelu(b_j)
        mlp.c_fc.bias[:10] = torch.linspace(-1, 1, 10)
    small, widths = compact_mlp(model)
    assert widths["transformer.h.0.mlp"] == (128, 118) and widths["transformer.h.1.mlp"] == (128, 128)
    assert small.transformer.h[0].mlp.c_fc.nf == 118 and small.transformer.h[0].mlp.c_proj.weight.shape == (118, 32)
    x = torch.randint(0, VOCAB, (2, CONTEXT))
    assert torch.allclose(logits(small.eval(), x), logits(model, x), atol=1e-5, rtol=0)


def test_a_gated_unit_goes_when_one_factor_is_empty():
    model = build("swiglu").eval()
    with torch.no_grad():
        model.h[0].mlp.up_proj.weight[:5] = 0
        model.h[0].mlp.gate_proj.weight[5:8] = 0
        model.h[1].mlp.down_proj.weight[:, :3] = 0
    small, widths = compact_mlp(model)
    assert widths == {"h.0.mlp": (128, 120), "h.1.mlp": (128, 125)}
    x = torch.randint(0, VOCAB, (2, CONTEXT))
    assert torch.allclose(logits(small.eval(), x), logits(model, x), atol=1e-5, rtol=0)


def test_without_an_activation_module_a_biased_empty_unit_is_kept():
    class Plain(nn.Module):  # GPT-2 names, but the activation is a function: nothing to fold with
        def __init__(self):
            super().__init__()
            self.c_fc, self.c_proj = nn.Linear(4, 8), nn.Linear(8, 4)

        def forward(self, x):
            return self.c_proj(F.gelu(self.c_fc(x)))

    net = Plain()
    with torch.no_grad():
        net.c_fc.weight[:3] = 0
        net.c_fc.bias[:2] = 0  # units 0, 1 output gelu(0) = 0; unit 2 outputs gelu(b_2)
    small, widths = compact_mlp(net)
    assert widths == {"": (8, 6)}
    x = torch.randn(3, 4)
    assert torch.allclose(small(x), net(x), atol=1e-6)


def test_compaction_refuses_models_without_mlps_and_unknown_masks():
    with pytest.raises(SparsetrainError, match="no transformer MLP"):
        compact_mlp(nn.Sequential(nn.Linear(4, 4)))
    with pytest.raises(SparsetrainError, match="names no parameter"):
        compact_mlp(build("gelu"), {"h.9.mlp.c_fc.weight": torch.ones(1, dtype=torch.bool)})


def test_compaction_checks_the_outputs_when_given_an_input():
    class Shifted(nn.Module):  # GPT-2 names, but not down(act(up(x))): a removed unit still mattered
        def __init__(self):
            super().__init__()
            self.c_fc, self.c_proj, self.act = nn.Linear(4, 8), nn.Linear(8, 4), nn.GELU()

        def forward(self, x):
            return self.c_proj(self.act(self.c_fc(x)) + 1.0)

    net = Shifted()
    with torch.no_grad():
        net.c_fc.weight[:3] = 0
    x = torch.randn(3, 4)
    assert compact_mlp(net)[1] == {"": (8, 5)}  # without an input nothing can tell
    with pytest.raises(SparsetrainError, match="differs from the masked model"):
        compact_mlp(net, example_input=x)


def test_lenet_style_fc1_fc2_heads_are_not_taken_for_transformer_mlps():
    net = nn.Sequential()
    net.add_module("conv", nn.Conv2d(1, 4, 3))
    net.add_module("fc1", nn.Linear(16, 8))
    net.add_module("fc2", nn.Linear(8, 3))
    assert mlp_blocks(net) == [] and transformer_groups(net) == []
