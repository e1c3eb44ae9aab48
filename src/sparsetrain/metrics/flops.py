"""Dense and sparse inference FLOPs.

Dense FLOPs come from torch's own ``FlopCounterMode`` (per module); the sparse
count follows the RigL-paper convention: each sparsified layer's FLOPs times
its density, everything else (unsparsified layers) counted dense.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from sparsetrain.core.selection import unwrap


def module_flops(model: nn.Module, example_input: Any) -> tuple[int, dict[str, int]]:
    """Forward FLOPs of ``model`` on ``example_input``: (total, {module path: flops}).

    Only leaf modules that own parameters are listed (conv / linear / ...).

    Example:
        >>> net = nn.Sequential(nn.Linear(4, 3))
        >>> module_flops(net, torch.randn(1, 4))
        (24, {'0': 24})
    """
    model = unwrap(model)
    was_training = model.training
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(*example_input) if isinstance(example_input, tuple) else model(example_input)
    model.train(was_training)
    counts = counter.get_flop_counts()
    prefix = type(model).__name__
    per_module = {}
    for name, module in model.named_modules():
        if not name or any(True for _ in module.children()):
            continue
        key = f"{prefix}.{name}"
        if key in counts:
            per_module[name] = int(sum(counts[key].values()))
    return int(counter.get_total_flops()), per_module


def sparse_flops(model: nn.Module, example_input: Any, masks: dict[str, Tensor]) -> dict[str, Any]:
    """Dense and sparse FLOPs for a model whose weights ``masks`` are sparsified.

    Returns ``{"dense": int, "sparse": int, "ratio": sparse / dense, "per_layer": {...}}``
    where a layer's sparse FLOPs are its dense FLOPs times its mask density.
    """
    total, per_module = module_flops(model, example_input)
    sparse_total, per_layer = total, {}
    for name, mask in masks.items():
        module = name.rsplit(".", 1)[0] if "." in name else ""
        dense = per_module.get(module, 0)
        density = float(torch.count_nonzero(mask)) / mask.numel()
        sparse_total -= dense - dense * density
        per_layer[name] = {"dense": dense, "sparse": dense * density, "density": density}
    return {"dense": total, "sparse": int(round(sparse_total)), "ratio": sparse_total / max(1, total),
            "per_layer": per_layer}
