"""``sparsetrain report``: per-layer density, dense and sparse FLOPs, ITOP rate of a run or checkpoint."""

from __future__ import annotations

from pathlib import Path

import torch

from sparsetrain.errors import SparsetrainError
from sparsetrain.metrics.flops import sparse_flops
from sparsetrain.metrics.report import density_report
from sparsetrain.train.checkpoint import load_checkpoint
from sparsetrain.train.config import builder_kwargs, load_config
from sparsetrain.train.models import create_model
from sparsetrain.train.run import CHECKPOINT


def _locate(run: str | Path) -> tuple[Path, Path]:
    path = Path(run)
    ckpt = path if path.is_file() else path / CHECKPOINT
    if not ckpt.is_file():
        raise SparsetrainError(f"no checkpoint at {ckpt}: pass a run folder or its {CHECKPOINT}.")
    config = ckpt.parent / "config.yaml"
    if not config.is_file():
        raise SparsetrainError(f"{ckpt.parent} has no config.yaml next to the checkpoint, so the model "
                               "cannot be rebuilt.")
    return ckpt, config


def report(run: str | Path) -> str:
    """The report text for a run folder or a checkpoint file inside one."""
    ckpt, config = _locate(run)
    cfg = load_config(config)
    state = load_checkpoint(ckpt)
    info = state.get("data_info") or {}
    from sparsetrain.train.loop import _input_kwargs
    shape = tuple(info.get("input_shape", ()))
    model = create_model(cfg["model"]["name"], num_classes=info.get("num_classes", 10),
                         **_input_kwargs(cfg["model"]["name"], shape, builder_kwargs(cfg, "model")),
                         **builder_kwargs(cfg, "model"))
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as exc:
        raise SparsetrainError(f"{ckpt} does not match the model of {config}: {str(exc).splitlines()[0]}") from None
    sp = state.get("sparsifier")
    params = dict(model.named_parameters())
    masks = sp["masks"] if sp else {}
    lines = [f"run        {ckpt.parent}",
             f"method     {cfg['method']['name']}   epoch {state['epoch']}/{cfg['epochs']}"]
    if masks:
        lines.append("")
        lines.append(str(density_report({n: params[n] for n in masks}, masks)))
        fired = sum(int(torch.count_nonzero(m)) for m in sp["fired"].values())
        lines.append(f"\nITOP rate  {fired / sum(m.numel() for m in masks.values()):.4f}")
    flops = sparse_flops(model, torch.zeros(1, *shape), masks)
    lines.append(f"FLOPs      dense {flops['dense']:,}   sparse {flops['sparse']:,}   ({flops['ratio']:.4f}x)")
    return "\n".join(lines)
