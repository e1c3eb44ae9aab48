"""Per-channel density statistics of any sparse model (Chase's "biased parameter reallocation", docs/algorithms.md,
"Chase").

Unstructured DST does not spread its weights evenly over channels: some output
channels end up far sparser than the rest (the Chase paper reports up to 60 %
of the channels being sparser than others). These functions measure that from
the masks alone, for any method, so the trainer can log it at every update.

A channel is an output unit of a conv / linear weight (a row of its mask); its
density is its active share of its fan-in. Our reading of "sparser than
others" (the paper's exact threshold is not in the released code): a channel
is *amenable* when its density is below ``ratio`` times a reference density,
the model's overall density (``reference="model"``, default) or its own
layer's (``reference="layer"``).

Example:
    >>> import torch
    >>> masks = {"w": torch.tensor([[True, True], [True, False], [False, False]])}
    >>> s = channel_stats(masks)  # overall density 3/6 = 0.5
    >>> s["channels"], round(s["amenable"], 3), round(s["empty"], 3)
    (3, 0.333, 0.333)
"""

from __future__ import annotations

import torch
from torch import Tensor

from sparsetrain.core.layout import out_first
from sparsetrain.errors import unknown_choice

REFERENCES = ("model", "layer")


def channel_densities(masks: dict[str, Tensor], out_axes: dict[str, int] | None = None) -> dict[str, Tensor]:
    """``{name: float tensor [out_channels]}``: each output channel's active share of its fan-in
    (weights with at least two dimensions; 1-D parameters have no channels). ``out_axes`` gives the
    out axis of weights not laid out ``[out, in, ...]`` (``Sparsifier.ctx.out_axes``)."""
    out = {}
    for name, mask in masks.items():
        if mask.dim() >= 2:
            mask = out_first(mask, (out_axes or {}).get(name, 0))
            rows = mask.reshape(mask.shape[0], -1)
            out[name] = rows.sum(1, dtype=torch.float32).cpu() / rows.shape[1]
    return out


def channel_stats(masks: dict[str, Tensor], ratio: float = 1.0, reference: str = "model",
                  out_axes: dict[str, int] | None = None) -> dict[str, float]:
    """Share of channels sparser than ``ratio`` x the reference density, and of empty channels.

    Returns ``{"channels": n, "amenable": share, "empty": share}`` over all
    channels of all weights, plus ``"amenable[<name>]"`` per weight.
    """
    if reference not in REFERENCES:
        raise unknown_choice("reference", reference, REFERENCES)
    dens = channel_densities(masks, out_axes)
    if not dens:
        return {"channels": 0, "amenable": 0.0, "empty": 0.0}
    active = sum(int(torch.count_nonzero(masks[n])) for n in dens)
    overall = active / sum(masks[n].numel() for n in dens)
    stats: dict[str, float] = {}
    n_amenable = n_empty = n_total = 0
    for name, d in dens.items():
        ref = overall if reference == "model" else float(torch.count_nonzero(masks[name])) / masks[name].numel()
        below = int((d < ratio * ref).sum())
        stats[f"amenable[{name}]"] = below / d.numel()
        n_amenable += below
        n_empty += int((d == 0).sum())
        n_total += d.numel()
    return {"channels": n_total, "amenable": n_amenable / n_total, "empty": n_empty / n_total, **stats}


__all__ = ["channel_densities", "channel_stats"]
