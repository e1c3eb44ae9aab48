"""Whole attention heads: when one is removable, its removal (GPT-2, Llama with GQA, our GPT), `compact`.

A head goes when its output-projection columns are zero, or its value rows and value bias are zero; the compact
model must compute exactly what the masked one does, at every position, padding masks included.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

from sparsetrain.core.graph import attention_modules, channel_groups
from sparsetrain.core.layout import out_axis
from sparsetrain.core.transformer import attention_blocks, head_groups, in_axis
from sparsetrain.deploy.compact import compact
from sparsetrain.deploy.heads import compact_heads, silent_heads
from sparsetrain.deploy.widths import rebuild
from sparsetrain.errors import SparsetrainError
from sparsetrain.train.models import create_model

pytestmark = pytest.mark.usefixtures("one_thread")

VOCAB, CONTEXT = 50, 10


def build(kind: str) -> nn.Module:
    torch.manual_seed(0)
    if kind == "hf-gpt2":
        return GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=32, n_head=4, vocab_size=VOCAB, n_positions=CONTEXT,
                                          bos_token_id=0, eos_token_id=0)).eval()
    if kind.startswith("hf-llama"):  # 6 query heads on 2 (GQA) or 6 key / value heads, with biases
        return LlamaForCausalLM(LlamaConfig(hidden_size=48, intermediate_size=64, num_hidden_layers=2,
                                            num_attention_heads=6, num_key_value_heads=2 if kind == "hf-llama-gqa"
                                            else 6, vocab_size=VOCAB, max_position_embeddings=CONTEXT,
                                            attention_bias=True)).eval()
    return create_model("gpt", num_classes=VOCAB, context=CONTEXT, n_layer=2, n_head=4, n_embd=32).eval()


def randomize_biases(model: nn.Module) -> None:
    with torch.no_grad():  # HF and our GPT start with zero biases; a fold must be exercised with real ones
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.normal_(0, 0.5)


def logits(model: nn.Module, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    out = model(x) if mask is None else model(x, attention_mask=mask)
    return out.logits if hasattr(out, "logits") else out


def inputs() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, VOCAB, (3, CONTEXT), generator=g)
    mask = torch.ones(3, CONTEXT, dtype=torch.long)
    mask[0, :4] = 0  # left padding: a padded query row sees no key but itself
    mask[1, -2:] = 0
    return x, mask


def params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def head_masks(model: nn.Module, layer: int, write: list[int], values: list[int]) -> dict[str, torch.Tensor]:
    """Masks that empty the output columns of heads ``write`` and the value rows and bias of kv heads ``values``."""
    block = attention_blocks(model)[layer]
    d, start = block.head_dim, 2 * block.heads * block.head_dim if block.fused else 0
    out, v = model.get_submodule(block.out), model.get_submodule(block.qkv[-1])
    masks = {f"{block.out}.weight": torch.ones_like(out.weight, dtype=torch.bool),
             f"{block.qkv[-1]}.weight": torch.ones_like(v.weight, dtype=torch.bool),
             f"{block.qkv[-1]}.bias": torch.ones_like(v.bias, dtype=torch.bool)}
    o_cols = masks[f"{block.out}.weight"].movedim(in_axis(out), 0)  # Conv1D is [in, out]
    v_rows = masks[f"{block.qkv[-1]}.weight"].movedim(out_axis(v), 0)
    for h in write:
        o_cols[h * d:(h + 1) * d] = False
    for g in values:
        v_rows[start + g * d:start + (g + 1) * d] = False
        masks[f"{block.qkv[-1]}.bias"][start + g * d:start + (g + 1) * d] = False
    return masks


def apply(model: nn.Module, masks: dict[str, torch.Tensor]) -> nn.Module:
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name in masks:
                p.mul_(masks[name])
    return model


KINDS = ["gpt", "hf-gpt2", "hf-llama", "hf-llama-gqa"]


@pytest.mark.parametrize("kind", KINDS)
def test_heads_are_found_with_their_counts(kind):
    blocks = attention_blocks(build(kind))
    assert len(blocks) == 2
    b = blocks[0]
    heads, kv, d = {"gpt": (4, 4, 8), "hf-gpt2": (4, 4, 8), "hf-llama": (6, 6, 8), "hf-llama-gqa": (6, 2, 8)}[kind]
    assert (b.heads, b.kv_heads, b.head_dim, b.fused) == (heads, kv, d, kind in ("gpt", "hf-gpt2"))


@pytest.mark.parametrize("kind", ["gpt", "hf-gpt2", "hf-llama"])
def test_silent_heads_go_and_the_outputs_are_exactly_the_masked_models(kind):
    model = build(kind)
    randomize_biases(model)
    masks = head_masks(model, 0, write=[1], values=[2, 3])  # head 1 writes nothing, heads 2, 3 have no values
    x, mask = inputs()
    small, spec = compact(model, x, masks=masks)
    assert spec["removed"] == {attention_blocks(model)[0].name: [1, 2, 3]}
    before, after = attention_blocks(model), attention_blocks(small)
    assert (after[0].heads, after[1].heads) == (before[0].heads - 3, before[1].heads)
    assert params(small) < params(model)
    masked = apply(model, masks)
    pad = None if kind == "gpt" else mask  # our GPT is causal only; the HF models also take padding masks
    torch.testing.assert_close(logits(small, x, pad), logits(masked, x, pad), rtol=0, atol=1e-5)


def test_a_head_with_zero_queries_and_keys_stays_it_averages_its_values():
    model = build("gpt")
    block = attention_blocks(model)[0]
    with torch.no_grad():
        model.h[0].attn.c_attn.weight[:8] = 0  # query rows of head 0
        model.h[0].attn.c_attn.weight[32:40] = 0  # key rows of head 0: uniform scores, still input-dependent
    assert not silent_heads(model, block).any()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        same, spec = compact(model, inputs()[0])
    assert same is model and spec["removed"] == {}
    assert any("nothing to compact" in str(w.message) for w in caught)


def test_a_value_bias_keeps_the_head_padded_positions_would_differ():
    model = build("hf-gpt2")
    randomize_biases(model)
    attn = model.transformer.h[0].attn
    with torch.no_grad():  # Conv1D [in, out]; values are outputs 64..95
        attn.c_attn.weight[:, 64:80] = 0  # heads 0, 1: no value rows
        attn.c_attn.bias[72:80] = 0  # head 1 also no value bias: it adds exactly zero
    small, heads = compact_heads(model, example_input=inputs()[0])
    assert heads == {"transformer.h.0.attn": (4, 3), "transformer.h.1.attn": (4, 4)}  # head 0 adds b_v: it stays
    x, mask = inputs()  # row 0's first positions see no key: the kernels give them zeros, not b_v
    torch.testing.assert_close(logits(small, x, mask), logits(model, x, mask), rtol=0, atol=1e-5)


@pytest.mark.parametrize(("write", "values", "heads", "kv"), [
    ([0, 1, 2], [], 3, 1),  # all of group 0's query heads: the group goes with its key / value rows
    ([0, 3, 4], [], 4, 2),  # one head in each group can go: groups keep 2 heads each
    ([0, 1, 2, 3], [], 2, 1),  # group 0 whole, group 1 loses one of its three
    ([0], [], 6, 2),  # only group 0 could lose a head: the groups must stay equal, nothing goes
    ([], [0, 1], 1, 1),  # no values at all: one head stays
])
def test_grouped_query_attention_keeps_equal_groups(write, values, heads, kv):
    model = build("hf-llama-gqa")
    randomize_biases(model)
    masks = head_masks(model, 0, write, values)
    x, mask = inputs()
    small, counts = compact_heads(model, masks, example_input=x)
    block = attention_blocks(small)[0]
    assert counts["model.layers.0.self_attn"] == (6, heads) and (block.heads, block.kv_heads) == (heads, kv)
    assert small.model.layers[0].self_attn.num_key_value_groups == heads // kv
    torch.testing.assert_close(logits(small, x, mask), logits(apply(model, masks), x, mask), rtol=0, atol=1e-5)


@pytest.mark.parametrize("kind", ["gpt", "hf-gpt2", "hf-llama-gqa"])
def test_the_width_spec_rebuilds_the_compact_model(kind):
    model = build(kind)
    masks = head_masks(model, 1, write=[0], values=[1])
    x, mask = inputs()
    small, spec = compact(model, x, masks=masks)
    again = rebuild(lambda: build(kind), spec, small.state_dict())
    assert again.state_dict().keys() == small.state_dict().keys()
    use_mask = None if kind == "gpt" else mask
    torch.testing.assert_close(logits(again, x, use_mask), logits(small, x, use_mask), rtol=0, atol=0)


def test_compact_removes_mlp_units_and_heads_together():
    model = build("hf-gpt2")
    with torch.no_grad():
        model.transformer.h[0].mlp.c_proj.weight[:64] = 0  # Conv1D [in, out]: half the units read by nobody
        model.transformer.h[1].attn.c_proj.weight[8:24] = 0  # heads 1 and 2 write nothing
    x, _ = inputs()
    small, spec = compact(model, x)
    assert spec["removed"] == {"transformer.h.0.mlp": list(range(64)), "transformer.h.1.attn": [1, 2]}
    assert small.transformer.h[1].attn.num_heads == 2 and small.transformer.h[1].attn.split_size == 16
    assert small.transformer.h[0].mlp.c_fc.nf == 64
    torch.testing.assert_close(logits(small, x), logits(model, x), rtol=0, atol=1e-5)


def test_head_groups_empty_whole_heads():
    model = build("gpt")
    group = head_groups(model)[0]
    assert (group.name, group.size) == ("h.0.attn", 4)
    params_ = dict(model.named_parameters())
    with torch.no_grad():  # what a Chase-style method would do to channel 2 of the group
        for s in (*group.producers, *group.consumers):
            params_[s.param].movedim(s.dim, 0)[list(s.index[2])] = 0
    assert [len(s.index[0]) for s in group.producers] == [24, 24]  # q, k and v rows of the fused projection
    small, heads = compact_heads(model, example_input=inputs()[0])
    assert heads["h.0.attn"] == (4, 3)
    gqa = head_groups(build("hf-llama-gqa"))[0]  # shared key / value rows are not one head's
    assert [s.param.rsplit(".", 2)[-2] for s in gqa.producers] == ["q_proj", "q_proj"]


def test_the_traced_graph_offers_no_attention_channels():
    """Regression: torch-pruning took c_attn's 3 * n_embd outputs for c_proj's inputs; removing one broke the GPT."""
    model = build("gpt")
    groups = channel_groups(model, inputs()[0], prune_skip=True)
    assert [g.name for g in groups] == ["h.0.mlp.c_fc", "h.1.mlp.c_fc"]
    assert attention_modules(model) == ["h.0.attn", "h.1.attn"]
    encoder = nn.TransformerEncoder(nn.TransformerEncoderLayer(16, 2, 32, batch_first=True), 1)
    assert [g.name for g in channel_groups(encoder, torch.randn(2, 4, 16))] == ["layers.0.linear1"]


def test_compact_on_an_attention_it_cannot_split_says_so():
    encoder = nn.TransformerEncoder(nn.TransformerEncoderLayer(16, 2, 32, batch_first=True), 1).eval()
    with torch.no_grad():
        encoder.layers[0].linear1.weight[:5] = 0
    with pytest.raises(SparsetrainError, match="self_attn.*MultiheadAttention"):
        compact(encoder, torch.randn(2, 4, 16))
