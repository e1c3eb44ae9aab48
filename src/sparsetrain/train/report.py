"""``sparsetrain report``: per-layer density, dense and sparse FLOPs, ITOP rate of a run or checkpoint."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

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


@dataclass
class LoadedRun:
    """A trained model rebuilt from a run folder (``load_run``)."""

    model: nn.Module
    input_shape: tuple[int, ...]
    factory: Callable[[], nn.Module]
    folder: Path
    cfg: dict
    epoch: int
    sparsifier: dict  # the saved Sparsifier.state_dict() ({} for a dense run)

    @property
    def masks(self) -> dict[str, Tensor]:
        """``{parameter name: bool mask}`` of the sparsifier state ({} for a dense run)."""
        return self.sparsifier.get("masks") or {}


def load_run(run: str | Path) -> LoadedRun:
    """Rebuild the model of a run folder (or a checkpoint file inside one) with its weights, in eval mode."""
    from sparsetrain.train.models import input_kwargs
    ckpt, config = _locate(run)
    cfg = load_config(config)
    state = load_checkpoint(ckpt)
    info = state.get("data_info") or {}
    shape = tuple(info.get("input_shape", ()))
    name, kwargs = cfg["model"]["name"], builder_kwargs(cfg, "model")
    all_kwargs = {"num_classes": info.get("num_classes", 10), **input_kwargs(name, shape, kwargs), **kwargs}

    def factory() -> nn.Module:
        return create_model(name, **all_kwargs)
    model = factory()
    spec = (state.get("sparsifier") or {}).get("width_spec")
    if spec and spec.get("widths"):  # a run shrunk while it trained (--method.shrink)
        from sparsetrain.deploy.widths import apply_widths
        apply_widths(model, spec)
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as exc:
        raise SparsetrainError(f"{ckpt} does not match the model of {config}: {str(exc).splitlines()[0]}") from None
    return LoadedRun(model.eval(), shape, factory, ckpt.parent, cfg, state["epoch"], state.get("sparsifier") or {})


def report(run: str | Path) -> str:
    """The report text for a run folder or a checkpoint file inside one."""
    loaded = load_run(run)
    cfg, masks, sp = loaded.cfg, loaded.masks, loaded.sparsifier
    params = dict(loaded.model.named_parameters())
    lines = [f"run        {loaded.folder}",
             f"method     {cfg['method']['name']}   epoch {loaded.epoch}/{cfg['epochs']}"]
    if masks:
        lines.append("")
        removed = sp.get("removed") or {}  # weights a shrink took out (--method.shrink): counted at full size
        lines.append(str(density_report({n: params[n] for n in masks}, masks, removed=removed)))
        fired = sum(int(torch.count_nonzero(m)) for m in sp["fired"].values()) + sp.get("fired_removed", 0)
        lines.append(f"\nITOP rate  {fired / (sum(m.numel() for m in masks.values()) + sum(removed.values())):.4f}")
    flops = sparse_flops(loaded.model, torch.zeros(1, *loaded.input_shape), masks)
    lines.append(f"FLOPs      dense {flops['dense']:,}   sparse {flops['sparse']:,}   ({flops['ratio']:.4f}x)")
    return "\n".join(lines)
