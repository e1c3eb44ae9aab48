"""The run folder: config.yaml, metrics.jsonl, summary.json, checkpoints, PNG plots.

Only rank 0 writes. Checkpoints are atomic; on resume, metrics recorded after
the checkpoint (a killed epoch) are dropped so the log matches the weights.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

import sparsetrain
from sparsetrain.core.files import atomic_write_text
from sparsetrain.errors import SparsetrainError
from sparsetrain.metrics.channels import channel_stats
from sparsetrain.metrics.flops import sparse_flops
from sparsetrain.train.checkpoint import load_checkpoint, save_checkpoint
from sparsetrain.train.config import dump_config
from sparsetrain.train.folders import acquire_run_lock, release_run_lock
from sparsetrain.train.tasks import get_task

CHECKPOINT = "checkpoint.pt"


def git_hash() -> str | None:
    """The commit of the sparsetrain source tree, if it is a git checkout."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                             text=True, timeout=5)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def versions() -> dict[str, str]:
    """Versions that matter for reproducing a run."""
    return {"sparsetrain": sparsetrain.__version__, "torch": torch.__version__,
            "python": platform.python_version(), "platform": platform.platform()}


class RunLogger:
    """Writes one run folder; see the module docstring."""

    def __init__(self, run_dir: str | Path, cfg: dict, rank: int = 0, resume: bool = False,
                 data_info: dict | None = None) -> None:
        self.dir, self.cfg, self.rank = Path(run_dir), cfg, rank
        self.data_info = data_info or {}
        self.main = rank == 0
        self.elapsed = 0.0
        self.best: dict[str, Any] = {}
        self.history_seen = 0
        self.updates_logged = 0
        self.history: list[dict] = []
        if self.main:
            try:
                self.dir.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise SparsetrainError(f"cannot create the run folder {self.dir}: {exc.strerror or exc}. Choose a "
                                       "writable --run.dir.") from None
            acquire_run_lock(self.dir)
            for stale in self.dir.glob(f".{CHECKPOINT}.*.tmp"):  # left by a kill during a write
                stale.unlink(missing_ok=True)
            if not resume:  # when resuming, config.yaml is rewritten only once restore() succeeds
                (self.dir / "metrics.jsonl").write_text("")
                atomic_write_text(self.dir / "config.yaml", dump_config(cfg))

    # ------------------------------------------------------------ progress and events
    def progress(self, loader, epoch: int):
        """A tqdm bar over batches when stdout is a terminal (rank 0), else the loader itself."""
        mode = self.cfg["run"]["progress"]
        show = self.main and (mode is True or (mode == "auto" and sys.stdout.isatty()))
        if not show:
            return loader
        from tqdm.auto import tqdm
        return tqdm(loader, desc=f"epoch {epoch + 1}/{self.cfg['epochs']}", leave=False, dynamic_ncols=True)

    def _append(self, record: dict) -> None:
        self.history.append(record)
        if self.main:
            with open(self.dir / "metrics.jsonl", "a") as fh:
                fh.write(json.dumps(record) + "\n")

    def update_events(self, sparsifier) -> None:
        """Log topology updates the sparsifier made since the last call."""
        if sparsifier is None:
            return
        for event in sparsifier.history[self.history_seen:]:
            record = {"event": "update", **{k: v for k, v in event.items() if _is_jsonable(v)}}
            if self.updates_logged % self.cfg["run"]["layer_density_every"] == 0:
                record["layer_density"] = {r["name"]: r["density"] for r in sparsifier.report().rows}
                # Chase's biased reallocation, for any method
                stats = channel_stats(sparsifier.masks, out_axes=sparsifier.ctx.out_axes)
                record.update(amenable_channels=stats["amenable"], empty_channels=stats["empty"])
            self.updates_logged += 1
            self._append(record)
        self.history_seen = len(sparsifier.history)

    # ------------------------------------------------------------ epochs and checkpoints
    def end_epoch(self, metrics: dict, model, optimizer, lr_schedule, sparsifier) -> None:
        """Log the epoch, print one line, checkpoint atomically."""
        task = get_task(self.data_info.get("task", "classification"))
        select = f"val_{task.best}" if f"val_{task.best}" in metrics else f"test_{task.best}"
        if task.better(metrics[select], self.best.get(select)):
            self.best = {"selected_by": select, select: metrics[select], "epoch": metrics["epoch"],
                         "test_acc": metrics["test_acc"], "test_loss": metrics["test_loss"]}
        self._append({"event": "epoch", **metrics})
        if self.main:
            parts = [f"epoch {metrics['epoch']:>3}/{self.cfg['epochs']}", f"loss {metrics['train_loss']:.4f}",
                     f"train {metrics['train_acc'] * 100:5.2f}%"]
            if "val_acc" in metrics:
                parts.append(f"val {metrics['val_acc'] * 100:5.2f}%")
            parts.append(f"test {metrics['test_acc'] * 100:5.2f}%")
            if "val_ppl" in metrics:
                parts.append(f"val ppl {metrics['val_ppl']:.3f}")
            if "density" in metrics:
                parts.append(f"density {metrics['density']:.4f}")
            parts.append(f"lr {metrics['lr']:.4g}  {metrics['time']:.0f}s")
            print("  ".join(parts), flush=True)
        last = metrics["epoch"] == self.cfg["epochs"]
        if last or metrics["epoch"] % max(1, self.cfg["run"]["checkpoint_every"]) == 0:
            self.elapsed = metrics["time"]
            self.save(metrics["epoch"], model, optimizer, lr_schedule, sparsifier)

    def save(self, epoch: int, model, optimizer, lr_schedule, sparsifier) -> None:
        """Atomic checkpoint of everything needed to continue exactly."""
        if not self.main:
            return
        state = {"epoch": epoch, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                 "lr_schedule": lr_schedule.state_dict(), "rng": torch.get_rng_state(),
                 "cuda_rng": _cuda_rng(model),
                 "sparsifier": sparsifier.state_dict() if sparsifier is not None else None,
                 "elapsed": self.elapsed, "best": self.best, "history_seen": self.history_seen,
                 "updates_logged": self.updates_logged, "method": self.cfg["method"]["name"],
                 "data_info": self.data_info}
        metrics = self.dir / "metrics.jsonl"
        if metrics.is_file():  # the log reaches the disk before the checkpoint that it must match
            with open(metrics, "a") as fh:
                os.fsync(fh.fileno())
        save_checkpoint(state, self.dir / CHECKPOINT)

    def restore(self, model, optimizer, lr_schedule, sparsifier) -> int:
        """Load the last checkpoint; returns the epoch to continue from."""
        path = self.dir / CHECKPOINT
        if not path.is_file():
            raise SparsetrainError(f"cannot resume {self.dir}: it has no {CHECKPOINT} (the run stopped before its "
                                   "first epoch ended). Start it again with --overwrite.")
        state = load_checkpoint(path, map_location=next(model.parameters()).device)
        if state["method"] != self.cfg["method"]["name"]:
            raise SparsetrainError(f"{path} was written by method {state['method']!r}, the config says "
                                   f"{self.cfg['method']['name']!r}.")
        try:
            model.load_state_dict(state["model"])
        except RuntimeError as exc:
            raise SparsetrainError(f"{path} is from a different model: {str(exc).splitlines()[0]}") from None
        optimizer.load_state_dict(state["optimizer"])
        lr_schedule.load_state_dict(state["lr_schedule"])
        torch.set_rng_state(state["rng"])
        if state.get("cuda_rng") is not None and _cuda_rng(model) is not None:
            # dropout on the GPU draws from it; set_rng_state takes a CPU tensor
            torch.cuda.set_rng_state(state["cuda_rng"].cpu(), next(model.parameters()).device)
        if sparsifier is not None:
            fix = f"set them back under method: in {self.dir / 'config.yaml'} to resume, or start a new run"
            sparsifier.load_state_dict(state["sparsifier"], fix=fix)
        self.elapsed, self.best = state["elapsed"], state["best"]
        # the fresh sparsifier's history holds only its init entry: later events are new
        self.history_seen = len(sparsifier.history) if sparsifier is not None else 0
        self.updates_logged = state["updates_logged"]
        self._truncate_metrics(state["epoch"], int(state["lr_schedule"]["last_epoch"]))
        if self.main:
            atomic_write_text(self.dir / "config.yaml", dump_config(self.cfg))
        return int(state["epoch"])

    def _truncate_metrics(self, epoch: int, step: int) -> None:
        """Keep the intact metric records up to the checkpoint (epoch ``epoch``, optimizer step ``step``).

        A killed epoch's records go; so does a line a kill tore, and only that line: the step
        limit comes from the checkpoint, not from the (possibly torn) epoch record.
        """
        path = self.dir / "metrics.jsonl"
        if not path.is_file():
            return
        from sparsetrain.train.plots import read_metrics
        kept = [r for r in read_metrics(self.dir)
                if (r.get("event") == "epoch" and r["epoch"] <= epoch)
                or (r.get("event") == "update" and r["step"] <= step)]
        self.history = kept
        if self.main:
            atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in kept))

    # ------------------------------------------------------------ the end
    def finish(self, model, sparsifier, example, wall: float) -> dict[str, Any]:
        """Write summary.json (and plots); returns the summary."""
        epochs = [r for r in self.history if r.get("event") == "epoch"]
        final = epochs[-1] if epochs else {}
        masks = sparsifier.masks if sparsifier is not None else {}
        flops = sparse_flops(model, example, masks)
        summary = {
            "method": self.cfg["method"]["name"], "model": self.cfg["model"]["name"],
            "dataset": self.cfg["data"]["name"], "seed": self.cfg["seed"], "epochs": self.cfg["epochs"],
            "final_test_acc": final.get("test_acc"), "final_val_acc": final.get("val_acc"),
            **{f"final_{k}": final.get(k) for k in ("test_loss", "val_loss", "test_ppl", "val_ppl") if k in final},
            "best": {"selected_by": "val_acc" if "val_acc" in self.best else "test_acc", **self.best},
            "density": sparsifier.density() if sparsifier is not None else 1.0,
            "layer_density": ({r["name"]: r["density"] for r in sparsifier.report().rows}
                              if sparsifier is not None else {}),
            "itop_rate": sparsifier.itop_rate() if sparsifier is not None else 1.0,
            "flops": {"dense": flops["dense"], "sparse": flops["sparse"], "ratio": flops["ratio"]},
            "wall_time_s": wall, "versions": versions(), "git": git_hash(),
            # bit-exact reproduction holds for the same seed *and* the same thread count (CPU float sums)
            "threads": torch.get_num_threads(),
        }
        shrinks = [h for h in sparsifier.history if "shrunk" in h] if sparsifier is not None else []
        if shrinks:  # --method.shrink: parameters and {layer: [out, in]} widths at the start and after each shrink
            summary["shrink"] = [{k: h[k] for k in ("step", "shrunk", "parameters", "widths")} for h in shrinks]
        if self.main:
            try:
                atomic_write_text(self.dir / "summary.json", json.dumps(summary, indent=2))
                if self.cfg["run"]["plots"]:
                    self._plot()
            finally:
                release_run_lock(self.dir)
        return summary

    def _plot(self) -> None:
        from sparsetrain.train.plots import plot_run
        try:
            plot_run(self.dir)
        except SparsetrainError as exc:  # the training is done: say what is safe and how to redraw
            raise SparsetrainError(f"{exc} The run finished: {CHECKPOINT} and summary.json are intact; draw the "
                                   f"plots later with `sparsetrain plot {self.dir}`.") from None


def _cuda_rng(model) -> torch.Tensor | None:
    """The RNG state of the model's CUDA device (every rank draws in step with rank 0), or None on CPU."""
    device = next(model.parameters()).device
    return torch.cuda.get_rng_state(device) if device.type == "cuda" else None


def _is_jsonable(value: Any) -> bool:
    return isinstance(value, (int, float, str, bool, type(None)))
