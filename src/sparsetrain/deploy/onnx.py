"""ONNX export of a (compact) model, validated with ``onnx.checker`` and, when installed, onnxruntime.

torch >= 2.9 exports through ``torch.export`` by default (``dynamo=True``),
which needs ``onnxscript``; the batch dimension is exported dynamic so one
file serves batch 1 and batch 64. ``legacy=True`` uses the deprecated
TorchScript exporter (no onnxscript needed, much faster to export).

Example:
    >>> import os, tempfile
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Linear(4, 3)).eval()
    >>> path = export_onnx(net, torch.randn(2, 4), os.path.join(tempfile.mkdtemp(), "net.onnx"), legacy=True)
    >>> path.suffix
    '.onnx'
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sparsetrain.errors import SparsetrainError


def _need(module: str, extra: str = "export") -> Any:
    try:
        return __import__(module)
    except ImportError:
        raise SparsetrainError(f"ONNX export needs {module}: pip install 'sparsetrain[{extra}]' "
                               f"(or pip install {module}).") from None


def export_onnx(model: nn.Module, example_input: torch.Tensor, path: str | Path, *, dynamic_batch: bool = True,
                legacy: bool = False, opset: int | None = None) -> Path:
    """Export ``model`` (eval mode) to ``path`` and validate the file with ``onnx.checker``.

    Args:
        model: the model to export (a compact model is a standard module).
        example_input: one input batch (a tensor); its batch dim is exported dynamic.
        path: the ``.onnx`` file to write.
        dynamic_batch: export the first dimension as a symbolic ``batch``.
        legacy: use the TorchScript exporter instead of ``torch.export`` (``dynamo=True``).
        opset: ONNX opset version (default: the exporter's).

    Raises:
        SparsetrainError: onnx / onnxscript missing, or the export failed (with the reason).
    """
    onnx = _need("onnx")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    kwargs: dict[str, Any] = {"opset_version": opset} if opset else {}
    if legacy:
        kwargs.update(dynamo=False, input_names=["input"], output_names=["output"],
                      dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}} if dynamic_batch else None)
    else:
        _need("onnxscript")
        kwargs.update(dynamo=True, dynamic_shapes=({0: torch.export.Dim("batch")},) if dynamic_batch else None)
    quiet = logging.getLogger("torch.onnx")
    level = quiet.level
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")  # the exporters are chatty (torchvision ops, deprecations)
            quiet.setLevel(logging.ERROR)
            torch.onnx.export(model, (example_input,), str(path), **kwargs)
    except Exception as err:  # noqa: BLE001 - any exporter failure becomes one message with its reason
        raise SparsetrainError(f"ONNX export of {type(model).__name__} failed: {type(err).__name__}: "
                               f"{str(err).splitlines()[0][:300]}. Try legacy=True (--legacy-onnx).") from None
    finally:
        quiet.setLevel(level)
    onnx.checker.check_model(onnx.load(str(path)))
    return path


def onnx_max_error(path: str | Path, model: nn.Module, example_input: torch.Tensor) -> float | None:
    """Largest |onnxruntime output - torch output| on ``example_input``; None when onnxruntime is not installed."""
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {session.get_inputs()[0].name: example_input.detach().cpu().numpy()})[:1]
    with torch.no_grad():
        expected = model.eval()(example_input).detach().cpu()
    return float((torch.from_numpy(out) - expected).abs().max())


__all__ = ["export_onnx", "onnx_max_error"]
