"""``sparsetrain compact | export | bench``: from a sparse run to a model that is really smaller and faster.

docs/algorithms.md, "Chase". A run folder (or its ``checkpoint.pt``) is rebuilt from its
``config.yaml``; its masks come from the sparsifier state in the checkpoint.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch
from torch import Tensor, nn

from sparsetrain.cli import arguments
from sparsetrain.core.files import atomic_write_text
from sparsetrain.errors import SparsetrainError, check_count
from sparsetrain.train.report import LoadedRun, load_run


def _splits(loaded: LoadedRun):
    """The run's data set, without augmentation."""
    from sparsetrain.train.config import builder_kwargs
    from sparsetrain.train.data import create_dataset
    cfg = loaded.cfg
    return create_dataset(cfg["data"]["name"], root=cfg["data"]["root"], seed=cfg["seed"],
                          val_fraction=cfg["data"]["val_fraction"], augment=False, **builder_kwargs(cfg, "data"))


def example_batch(loaded: LoadedRun, n: int = 32) -> Tensor:
    """``n`` real test (else validation / training) inputs of the run's data set."""
    splits = _splits(loaded)
    data = next(d for d in (splits.test, splits.val, splits.train) if d is not None and len(d))
    return torch.stack([data[i][0] for i in range(min(n, len(data)))])


def _calibration_loader(loaded: LoadedRun, batches: int):
    loader = torch.utils.data.DataLoader(_splits(loaded).train, batch_size=loaded.cfg["batch_size"], shuffle=False)
    return [b for _, b in zip(range(batches), loader, strict=False)]


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def compact_run(run: str | Path, *, calibrate: int = 0, out: str | Path | None = None,
                round_to: int = 1) -> tuple[LoadedRun, nn.Module, dict, Path]:
    """Compact a run's model; writes ``compact.safetensors`` (sparse, with the width spec) and ``width_spec.json``."""
    from sparsetrain.deploy.checkpoint import save_compact
    from sparsetrain.deploy.compact import compact
    loaded = load_run(run)
    x = example_batch(loaded)
    calibration = _calibration_loader(loaded, calibrate) if calibrate else None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        small, spec = compact(loaded.model, x, masks=loaded.masks, calibration=calibration, round_to=round_to)
    for w in caught:
        print(f"note: {w.message}")
    spec = _from_original(spec, small, loaded)
    folder = Path(out) if out else loaded.folder
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "compact.safetensors"
    save_compact(small, spec, path, metadata={"model": loaded.cfg["model"]["name"]})
    atomic_write_text(folder / "width_spec.json", json.dumps(spec, indent=1))
    return loaded, small, spec, path


def _from_original(spec: dict, small: nn.Module, loaded: LoadedRun) -> dict:
    """The width spec against the architecture as built (a run shrunk while it trained is narrower already)."""
    from sparsetrain.deploy.widths import module_widths
    return {**spec, "widths": module_widths(small, loaded.factory())}


# ---------------------------------------------------------------- compact
def configure_compact(p) -> None:
    p.add_argument("run", help="a run folder or a checkpoint.pt inside one")
    p.add_argument("--out", help="folder for compact.safetensors and width_spec.json (default: the run folder)")
    p.add_argument("--calibrate", type=arguments.count(0), default=0, metavar="BATCHES",
                   help="also remove channels whose constant cannot be folded exactly and recompute BatchNorm "
                        "statistics on this many training batches (outputs then differ slightly)")
    arguments.add_round_to(p)


def cmd_compact(args, extra) -> int:
    loaded, small, spec, path = compact_run(args.run, calibrate=args.calibrate, out=args.out, round_to=args.round_to)
    removed = sum(len(v) for v in spec["removed"].values())
    print(f"removed    {removed} channels in {len(spec['removed'])} groups")
    print(f"params     {_params(loaded.model):,} -> {_params(small):,}")
    print(f"wrote      {path} ({path.stat().st_size / 1e6:.2f} MB) and {path.parent / 'width_spec.json'}")
    return 0


# ---------------------------------------------------------------- export
def configure_export(p) -> None:
    p.add_argument("run", help="a run folder or a checkpoint.pt inside one")
    p.add_argument("--onnx", metavar="FILE", help="write the compact model as ONNX")
    p.add_argument("--sparse", metavar="FILE", help="write the compact model as a sparse safetensors checkpoint")
    p.add_argument("--legacy-onnx", action="store_true", help="use the TorchScript ONNX exporter (no onnxscript)")
    arguments.add_round_to(p)


def cmd_export(args, extra) -> int:
    from sparsetrain.deploy.checkpoint import save_compact
    from sparsetrain.deploy.onnx import export_onnx, onnx_max_error
    if not args.onnx and not args.sparse:
        raise SparsetrainError("export needs --onnx FILE and/or --sparse FILE.")
    loaded = load_run(args.run)
    x = example_batch(loaded)
    from sparsetrain.deploy.compact import compact
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # nothing removable: export the masked model as it is
        small, spec = compact(loaded.model, x, masks=loaded.masks, round_to=args.round_to)
    spec = _from_original(spec, small, loaded)
    if args.sparse:
        save_compact(small, spec, args.sparse, metadata={"model": loaded.cfg["model"]["name"]})
        print(f"wrote      {args.sparse}")
    if args.onnx:
        export_onnx(small, x[:1], args.onnx, legacy=args.legacy_onnx)
        err = onnx_max_error(args.onnx, small, x)
        check = "onnxruntime not installed: outputs not compared" if err is None else \
            f"onnxruntime max |diff| vs torch {err:.2e} on {len(x)} inputs"
        print(f"wrote      {args.onnx} (onnx.checker passed; {check})")
    return 0


# ---------------------------------------------------------------- bench
def configure_bench(p) -> None:
    p.add_argument("target", metavar="MODEL_OR_RUN", help="a run folder, or a bundled model name (sparsetrain "
                   "models) made channel-sparse with --channel-sparsity")
    p.add_argument("--channel-sparsity", type=arguments.fraction(), default=0.5,
                   help="bundled model: fraction of channels removed "
                        "(Chase's UMM rule, one shot; default 0.5)")
    p.add_argument("--density", type=arguments.density(), default=0.1,
                   help="bundled model: unstructured density (default 0.1)")
    p.add_argument("--min-ratio", type=arguments.fraction(), default=0.2,
                   help="bundled model: Chase's minimum width beta")
    p.add_argument("--score-norm", default="none", choices=("none", "layer"),
                   help="bundled model: Chase's channel ranking (none = the paper's global UMM; layer = each "
                        "layer's scores relative to its mean, our extension)")
    p.add_argument("--prune-skip", action="store_true",
                   help="bundled model: also remove channels tied through residual additions (Chase prune skip)")
    p.add_argument("--input-shape", type=arguments.comma_list(check_count), default="3,32,32",
                   help="bundled model: one sample's shape (default 3,32,32)")
    p.add_argument("--num-classes", type=arguments.count(), default=10)
    p.add_argument("--batch-sizes", type=arguments.comma_list(check_count), default="1,64",
                   help="comma-separated batch sizes (default 1,64)")
    p.add_argument("--reps", type=arguments.count(), default=20, help="timed repetitions per variant (median reported)")
    p.add_argument("--warmup", type=arguments.count(0), default=5)
    p.add_argument("--threads", type=arguments.count(), default=None, help="torch.set_num_threads for the timing")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--no-csr", action="store_true", help="skip the CSR variant")
    arguments.add_round_to(p)
    p.add_argument("--json", metavar="FILE", help="also write the rows as JSON")


_TOKENS = ("sparsetrain bench times models on random float inputs; a language model reads token ids, which it "
           "does not make yet. Time a compact GPT with python benchmarks/transformer.py, or compact / export the "
           "run (sparsetrain compact RUN).")


def _bench_target(args) -> tuple[nn.Module, Tensor, dict[str, Tensor]]:
    from sparsetrain.deploy.bench import channel_sparse_masks
    from sparsetrain.train.models import create_model, input_kwargs, list_models
    if Path(args.target).exists():
        loaded = load_run(args.target)
        if not example_batch(loaded, 1).is_floating_point():  # token ids (a language model)
            raise SparsetrainError(_TOKENS)
        return loaded.model, torch.randn(2, *loaded.input_shape), loaded.masks
    if args.target not in list_models():
        from sparsetrain.errors import unknown_choice
        raise unknown_choice("model (or run folder)", args.target, list_models())
    if args.target == "gpt":
        raise SparsetrainError(_TOKENS)
    shape = tuple(args.input_shape)
    model = create_model(args.target, num_classes=args.num_classes, **input_kwargs(args.target, shape)).eval()
    x = torch.randn(2, *shape)
    masks = channel_sparse_masks(model, x, args.channel_sparsity, min_ratio=args.min_ratio, density=args.density,
                                 score_norm=args.score_norm, prune_skip=args.prune_skip)
    return model, x, masks


def cmd_bench(args, extra) -> int:
    from sparsetrain.deploy.bench import bench, format_table, prepare
    batches = tuple(args.batch_sizes)
    if args.threads:
        torch.set_num_threads(args.threads)
    model, x, masks = _bench_target(args)
    if args.device != "cpu":  # compact and decide CSR / 2:4 on the device that will run the model
        from sparsetrain.distributed import pick_device
        args.device = str(pick_device(args.device))
        model, x = model.to(args.device), x.to(args.device)
        masks = {k: v.to(args.device) for k, v in masks.items()}
    models, counts, info = prepare(model, x, masks=masks, csr=not args.no_csr, csr_batch=max(batches),
                                   round_to=args.round_to)
    for note in info["notes"]:
        print(f"note: {note}")
    rows = bench(models, tuple(x.shape[1:]), batch_sizes=batches, device=args.device, threads=args.threads,
                 reps=args.reps, warmup=args.warmup, counts=counts)
    print(format_table(rows))
    if "csr" in info:
        chosen = {n: d["choice"] for n, d in info["csr"].items()}
        print(f"csr layers: {chosen or 'no sparse linear layer'}")
    if args.json:
        atomic_write_text(args.json, json.dumps({"rows": rows, "info": info}, indent=1, default=str))
    return 0


__all__ = ["LoadedRun", "cmd_bench", "cmd_compact", "cmd_export", "compact_run", "configure_bench",
           "configure_compact", "configure_export", "example_batch", "load_run"]
