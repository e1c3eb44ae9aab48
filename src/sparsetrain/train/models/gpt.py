"""A small decoder-only transformer (GPT), nanoGPT-sized, for character-level language modelling.

Pre-norm blocks (LayerNorm -> causal self-attention -> residual, LayerNorm ->
MLP -> residual), learned positions, token embedding tied to the output head
(as GPT-2 and nanoGPT), so the default selection sparsifies every linear layer
of the blocks and leaves the tied embedding / head dense
(docs/guides/transformers.md). The MLP is GPT-2's (``c_fc`` -> GELU ->
``c_proj``) or, with ``mlp="swiglu"``, Llama's (``down_proj(silu(gate_proj(x))
* up_proj(x))``). Radford et al. 2019, "Language Models are Unsupervised
Multitask Learners"; Touvron et al. 2023, "LLaMA".

Example:
    >>> import torch
    >>> net = gpt(num_classes=50, context=16, n_layer=1, n_head=2, n_embd=32)
    >>> tuple(net(torch.zeros(3, 16, dtype=torch.long)).shape)
    (3, 16, 50)
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sparsetrain.errors import SparsetrainError, unknown_choice
from sparsetrain.train.models.registry import register_model

MLPS = ("gelu", "swiglu")


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention with one fused q/k/v projection (``c_attn``).

    The heads' total width is read from the weights, not from the model width, so a compact copy with
    fewer heads (``n_head`` lowered, :mod:`sparsetrain.deploy.heads`) runs as is.
    """

    def __init__(self, n_embd: int, n_head: int, dropout: float = 0.0):
        super().__init__()
        self.n_head, self.dropout = n_head, dropout
        self.c_attn = nn.Linear(n_embd, 3 * n_embd)
        self.c_proj = nn.Linear(n_embd, n_embd)

    def forward(self, x: Tensor) -> Tensor:
        b, t, _ = x.shape
        q, k, v = self.c_attn(x).chunk(3, dim=2)
        q, k, v = (z.view(b, t, self.n_head, -1).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=self.dropout if self.training else 0.0)
        return self.c_proj(y.transpose(1, 2).reshape(b, t, -1))


class MLP(nn.Module):
    """GPT-2's MLP ``c_proj(gelu(c_fc(x)))``: hidden unit ``j`` is row ``j`` of ``c_fc``, column ``j`` of ``c_proj``."""

    def __init__(self, n_embd: int, hidden: int):
        super().__init__()
        self.c_fc, self.c_proj = nn.Linear(n_embd, hidden), nn.Linear(hidden, n_embd)
        self.act = nn.GELU()

    def forward(self, x: Tensor) -> Tensor:
        return self.c_proj(self.act(self.c_fc(x)))


class SwiGLU(nn.Module):
    """Llama's MLP: ``down_proj(silu(gate_proj(x)) * up_proj(x))``, no biases."""

    def __init__(self, n_embd: int, hidden: int):
        super().__init__()
        self.gate_proj = nn.Linear(n_embd, hidden, bias=False)
        self.up_proj = nn.Linear(n_embd, hidden, bias=False)
        self.down_proj = nn.Linear(hidden, n_embd, bias=False)
        self.act_fn = nn.SiLU()

    def forward(self, x: Tensor) -> Tensor:
        return self.down_proj(self.act_fn(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    """One pre-norm transformer block."""

    def __init__(self, n_embd: int, n_head: int, hidden: int, mlp: str, dropout: float):
        super().__init__()
        self.ln_1, self.ln_2 = nn.LayerNorm(n_embd), nn.LayerNorm(n_embd)
        self.attn = CausalSelfAttention(n_embd, n_head, dropout)
        self.mlp = MLP(n_embd, hidden) if mlp == "gelu" else SwiGLU(n_embd, hidden)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.drop(self.attn(self.ln_1(x)))
        return x + self.drop(self.mlp(self.ln_2(x)))


class GPT(nn.Module):
    """Token ids ``[batch, time]`` -> next-token logits ``[batch, time, vocab]``."""

    def __init__(self, vocab: int, context: int, n_layer: int, n_head: int, n_embd: int, hidden: int,
                 mlp: str = "gelu", dropout: float = 0.0):
        super().__init__()
        self.context = context
        self.wte, self.wpe = nn.Embedding(vocab, n_embd), nn.Embedding(context, n_embd)
        self.drop = nn.Dropout(dropout)
        self.h = nn.ModuleList(Block(n_embd, n_head, hidden, mlp, dropout) for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(n_embd)
        self.lm_head = nn.Linear(n_embd, vocab, bias=False)
        self.lm_head.weight = self.wte.weight  # tied, as GPT-2 and nanoGPT
        self.apply(self._init)
        for name, p in self.named_parameters():  # GPT-2's scaled init of the residual projections
            if name.endswith(("c_proj.weight", "down_proj.weight")):
                nn.init.normal_(p, 0.0, 0.02 / math.sqrt(2 * n_layer))

    @staticmethod
    def _init(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, 0.0, 0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def forward(self, idx: Tensor) -> Tensor:
        t = idx.shape[1]
        if t > self.context:
            raise SparsetrainError(f"the GPT sees at most {self.context} tokens, got a sequence of {t}.")
        pos = torch.arange(t, device=idx.device)
        x = self.drop(self.wte(idx) + self.wpe(pos))
        for block in self.h:
            x = block(x)
        return self.lm_head(self.ln_f(x))


@register_model("gpt")
def gpt(num_classes: int = 98, context: int = 64, n_layer: int = 2, n_head: int = 4, n_embd: int = 128,
        mlp_ratio: int = 4, mlp: str = "gelu", dropout: float = 0.0) -> GPT:
    """A small GPT; ``num_classes`` is the vocabulary (filled in from the dataset), ``context`` the
    longest sequence (filled in from the dataset's window), ``mlp`` ``"gelu"`` (GPT-2) or ``"swiglu"`` (Llama)."""
    if mlp not in MLPS:
        raise unknown_choice("mlp", mlp, MLPS)
    if n_embd % n_head:
        raise SparsetrainError(f"n_embd ({n_embd}) must be a multiple of n_head ({n_head}).")
    return GPT(num_classes, context, n_layer, n_head, n_embd, mlp_ratio * n_embd, mlp, dropout)
