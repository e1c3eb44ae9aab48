"""GPU figures in one command (issue 15): correctness on CUDA, then five timed parts, under 8 minutes.

    PYTHONPATH=src python benchmarks/gpu_suite.py                 # on one H100 / H200
    PYTHONPATH=src python benchmarks/gpu_suite.py --out /tmp/gpu  # results elsewhere
    PYTHONPATH=src python benchmarks/gpu_suite.py --dry-run       # toy sizes on the CPU (what CI runs)

Parts, each with its own time budget, each isolated (an exception or an
overrun is recorded in the results and the next part runs):

1. ``correctness``: ``pytest -m gpu`` over the test files that hold GPU-marked
   tests (tests/test_gpu.py today: 2:4
   semi-structured, top-k on CUDA equal to the CPU bit for bit, every method's
   masks identical on CPU and GPU, bf16 / fp16 autocast with GradScaler).
2. ``overhead``: ResNet-50 training step, ImageNet shape, batch 128, bf16
   autocast, channels_last: dense vs rigl, granet, set, static; CUDA events,
   medians of interleaved rounds; mask work as a share of the step.
3. ``update``: one topology update of rigl and granet on ResNet-50, next to
   rigl-torch's ``_rigl_step`` (rigl-torch 0.5.2).
4. ``chase``: Chase compact inference on ResNet-50 (ImageNet shape), S_c 0.3 /
   0.4 / 0.5, batch 64 and 256, bf16, ``score_norm=layer`` + ``prune_skip``.
5. ``semi_structured``: 2:4 ``nn.Linear`` at LLM shapes vs dense, bf16, both
   ``to_sparse_semi_structured`` backends; end to end on a registered GPT model
   when one exists.
6. ``csr``: a 98 %-sparse MLP as CSR vs dense.

Writes ``results_gpu.md`` and ``results_gpu.json`` (every raw timing, device,
driver, torch and CUDA versions, date) into ``--out`` (default: this folder;
``--dry-run``: a new temporary folder). ``--dry-run`` runs every part at toy
sizes on the CPU; the parts that need CUDA say "skipped: needs CUDA".
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import xml.etree.ElementTree as ET
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import gpu_inference  # noqa: E402
import gpu_parts  # noqa: E402
from common import git_commit, machine_info, table  # noqa: E402

#: seconds per part; their sum (with imports) stays under the 8-minute goal on one H100 / H200
BUDGETS = {"correctness": 120, "overhead": 85, "update": 45, "chase": 95, "semi_structured": 45, "csr": 20}
#: the measuring parts (correctness, the first, is :func:`correctness` below)
PARTS: dict[str, Callable[[gpu_parts.Sizes, float], dict]] = {
    "overhead": gpu_parts.engine_overhead, "update": gpu_parts.update_time, "chase": gpu_inference.chase_inference,
    "semi_structured": gpu_inference.semi_structured, "csr": gpu_inference.csr_mlp,
}
#: loops stop starting new rounds after this share of a part's budget; the budget plus GRACE is a hard limit
SOFT, GRACE = 0.7, 5.0


class PartTimeout(Exception):
    """A part ran past its hard time limit."""


@contextmanager
def hard_limit(seconds: float):
    """Raise :class:`PartTimeout` in this (main) thread after ``seconds`` (SIGALRM; no limit where it is missing)."""
    if not hasattr(signal, "SIGALRM"):
        yield
        return

    def expire(signum, frame):
        raise PartTimeout(f"ran past its {seconds:.0f} s budget")

    old = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


# ---------------------------------------------------------------------------- (1) correctness
def correctness(budget: float, dry_run: bool, out: Path) -> dict:
    """``pytest -m gpu`` in a subprocess; pass / fail / skip counts and the failures from its JUnit XML."""
    xml = out / "gpu_tests.xml"
    # only the files that hold GPU-marked tests: collecting the others would import packages
    # (data sets, integrations) that a bare GPU machine may lack, and a collection error stops pytest
    paths = sorted(str(f.relative_to(ROOT)) for f in (ROOT / "tests").glob("test_*.py")
                   if "pytest.mark.gpu" in f.read_text())
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")])))
    if dry_run:
        env["CUDA_VISIBLE_DEVICES"] = ""  # a dry run is a CPU run, also on a GPU machine
    cmd = [sys.executable, "-m", "pytest", "-m", "gpu", *paths, "-q", "-p", "no:cacheprovider", "-o", "addopts=",
           "--import-mode=importlib", "-rs", "--continue-on-collection-errors", f"--junitxml={xml}"]
    try:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=budget)
    except subprocess.TimeoutExpired as exc:  # keep what it printed: the progress line shows how far it got
        partial = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        tail = partial.strip().splitlines()[-15:]
        return {"status": "timeout", "headline": f"pytest ran past its {budget:.0f} s budget",
                "lines": [f"**timeout**: `pytest -m gpu` ran past its {budget:.0f} s budget; its output so far:", "",
                          "```", *tail, "```"], "raw": {"output_tail": tail}}
    tail = (proc.stdout + proc.stderr).strip().splitlines()[-15:]
    if not xml.is_file():
        raise RuntimeError(f"pytest wrote no report (exit {proc.returncode}):\n" + "\n".join(tail))
    suite = ET.parse(xml).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    counts["passed"] = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    failed, skipped = [], set()
    for case in suite.iter("testcase"):
        name = f"{case.get('classname')}::{case.get('name')}"
        for bad in (*case.findall("failure"), *case.findall("error")):
            failed.append({"test": name, "message": (bad.get("message") or "")[:400]})
        for skip in case.findall("skipped"):
            skipped.add(skip.get("message") or "")
    xml.unlink()
    status = "failed" if failed or proc.returncode not in (0, 5) else "ok"
    headline = (f"{counts['passed']} passed, {counts['failures'] + counts['errors']} failed, "
                f"{counts['skipped']} skipped")
    lines = [f"`{' '.join(['pytest', *cmd[3:]])}` (exit {proc.returncode}): {headline}."]
    if skipped:
        lines += ["", "Skip reasons: " + "; ".join(sorted(skipped))]
    if failed:
        lines += ["", table(["failed test", "message"], [[f["test"], f["message"].replace("|", "/").replace(
            "\n", " ")[:200]] for f in failed])]
    return {"status": status, "headline": headline, "lines": lines,
            "raw": {"counts": counts, "failed": failed, "skip_reasons": sorted(skipped), "returncode": proc.returncode,
                    "output_tail": tail}}


# ---------------------------------------------------------------------------- runner
def run_part(name: str, fn: Callable[[], dict], budget: float) -> dict:
    """Run one part, stopped at ``budget + GRACE`` seconds; its result, or its skip / failure / timeout, as a record."""
    start = time.monotonic()
    try:
        with hard_limit(budget + GRACE):
            result = fn()
        result.setdefault("status", "ok")
    except gpu_parts.Skip as why:
        result = {"status": "skipped", "headline": f"skipped: {why}", "lines": [f"skipped: {why}"], "raw": {}}
    except PartTimeout as why:
        result = {"status": "timeout", "headline": str(why), "lines": [f"**timeout**: {why}"], "raw": {}}
    except Exception as err:  # noqa: BLE001 - isolation: the failure goes into the results, the suite goes on
        trace = traceback.format_exc()
        first = str(err).splitlines()[0][:160] if str(err) else ""
        result = {"status": "error", "headline": f"{type(err).__name__}: {first}",
                  "lines": ["**error**:", "", "```", trace.strip()[-3000:], "```"], "raw": {}, "traceback": trace}
    finally:
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    result.update(seconds=round(time.monotonic() - start, 2), budget_s=budget)
    print(f"[{name}] {result['status']} in {result['seconds']:.0f} s: {result['headline']}", flush=True)
    return result


def driver_version() -> str:
    """The NVIDIA driver version from ``nvidia-smi``, or ``?``."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20, check=False).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "?"
    return out.splitlines()[0] if out else "?"


def meta(args, device: torch.device) -> dict:
    import sparsetrain
    cuda = device.type == "cuda"
    return {"date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
            "command": "python benchmarks/gpu_suite.py" + "".join(f" {a}" for a in args.argv),
            "dry_run": args.dry_run, "device": torch.cuda.get_device_name(device) if cuda else "cpu",
            "driver": driver_version() if cuda else "n/a", "torch": torch.__version__,
            "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version() if cuda else None,
            "python": platform.python_version(), "sparsetrain": sparsetrain.__version__, "git": git_commit(),
            "machine": machine_info(str(device)), "budgets_s": BUDGETS}


def report(info: dict, results: dict[str, dict]) -> str:
    """``results_gpu.md``: the machine, a summary row per part, then each part's section."""
    title = "# GPU suite" + (" (DRY RUN: toy sizes on the CPU, not figures)" if info["dry_run"] else "")
    lines = [title, "", f"`{info['command']}`", "",
             f"- date: {info['date']}; git {info['git']}; sparsetrain {info['sparsetrain']}",
             f"- device: {info['device']}; driver {info['driver']}; torch {info['torch']}, CUDA {info['cuda']}, "
             f"cuDNN {info['cudnn']}; python {info['python']}",
             f"- total {sum(r['seconds'] for r in results.values()):.0f} s", "",
             table(["part", "status", "seconds (budget)", "result"],
                   [[n, r["status"], f"{r['seconds']:.0f} ({r['budget_s']})", r["headline"]]
                    for n, r in results.items()])]
    for name, r in results.items():
        lines += ["", f"## {name}", "", *r["lines"]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="every part at toy sizes on the CPU (seconds)")
    parser.add_argument("--out", default=None, help="folder for results_gpu.md / .json (default: benchmarks/; "
                        "--dry-run: a new temporary folder)")
    parser.add_argument("--parts", default=",".join(BUDGETS), help=f"comma-separated subset of {', '.join(BUDGETS)}")
    args = parser.parse_args(argv)
    args.argv = sys.argv[1:] if argv is None else argv
    unknown = set(args.parts.split(",")) - set(BUDGETS)
    if unknown:
        parser.error(f"unknown part(s) {sorted(unknown)}; choose from {', '.join(BUDGETS)}")
    out = Path(args.out) if args.out else (Path(tempfile.mkdtemp(prefix="gpu_suite_")) if args.dry_run else HERE)
    out.mkdir(parents=True, exist_ok=True)
    gpu_parts.FORCE_CPU = args.dry_run
    sizes = gpu_parts.TOY if args.dry_run else gpu_parts.FULL
    device = gpu_parts.pick_device()
    if not args.dry_run and device.type != "cuda":
        print("note: no CUDA device: the CUDA-only parts will be skipped; use --dry-run for a quick CPU check",
              flush=True)
    info = meta(args, device)
    print(f"gpu_suite on {info['device']} (torch {info['torch']}, CUDA {info['cuda']}), writing to {out}", flush=True)
    results: dict[str, dict] = {}
    for name in [p for p in BUDGETS if p in args.parts.split(",")]:
        budget = BUDGETS[name]
        if name == "correctness":
            results[name] = run_part(name, lambda b=budget: correctness(b, args.dry_run, out), budget)
        else:
            fn = PARTS[name]
            results[name] = run_part(name, lambda f=fn, b=budget: f(sizes, time.monotonic() + SOFT * b), budget)
    (out / "results_gpu.md").write_text(report(info, results))
    (out / "results_gpu.json").write_text(json.dumps({"meta": info, "parts": results}, indent=1, default=str) + "\n")
    print(f"wrote {out / 'results_gpu.md'} and {out / 'results_gpu.json'}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
