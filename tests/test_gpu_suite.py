"""benchmarks/gpu_suite.py (issue 15) cannot rot between GPU loans: its dry run (toy sizes, CPU) runs
every part and writes the Markdown and JSON reports, and a failing or overrunning part is recorded
while the suite goes on. No test here checks a timing."""

from __future__ import annotations

import doctest
import importlib
import json
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
gpu_suite = importlib.import_module("gpu_suite")
gpu_parts = importlib.import_module("gpu_parts")

PARTS = ["correctness", "overhead", "update", "chase", "semi_structured", "csr"]


@pytest.fixture
def cpu_run(monkeypatch):
    monkeypatch.setattr(gpu_parts, "FORCE_CPU", False)  # main() sets it; leave the module as found


def test_dry_run_writes_the_report_and_every_raw_timing(tmp_path, one_thread, cpu_run):
    assert gpu_suite.main(["--dry-run", "--out", str(tmp_path)]) == 0
    data = json.loads((tmp_path / "results_gpu.json").read_text())
    meta, parts = data["meta"], data["parts"]
    assert meta["dry_run"] is True and meta["device"] == "cpu"
    assert {"date", "driver", "torch", "cuda", "cudnn", "git", "command"} <= set(meta)
    assert list(parts) == PARTS
    status = {name: p["status"] for name, p in parts.items()}
    assert status == {**dict.fromkeys(PARTS, "ok"), "semi_structured": "skipped"}, {
        n: parts[n].get("traceback", parts[n]["headline"]) for n in PARTS}
    assert parts["semi_structured"]["headline"] == "skipped: needs CUDA"
    counts = parts["correctness"]["raw"]["counts"]
    assert counts["tests"] > 0 and counts["skipped"] == counts["tests"]  # CPU: every GPU test skipped...
    assert any("needs CUDA" in r for r in parts["correctness"]["raw"]["skip_reasons"])  # ...with the reason
    times = parts["overhead"]["raw"]["times_s"]
    assert set(times) == {"dense", "rigl", "granet", "set", "static"}
    assert all(len(t["step"]) == len(times["dense"]["step"]) > 0 for t in times.values())
    assert parts["update"]["raw"]["rigl"]["ours"] and parts["update"]["raw"]["granet"]["ours"]
    assert set(parts["chase"]["raw"]) == {"0.3", "0.4", "0.5"}
    assert {r["variant"] for r in parts["csr"]["raw"]} == {"dense", "csr"}
    md = (tmp_path / "results_gpu.md").read_text()
    assert md.startswith("# GPU suite (DRY RUN")
    for name in PARTS:
        assert f"\n## {name}\n" in md and f"| {name} | {status[name]} |" in md


def test_a_failing_part_is_recorded_and_the_suite_goes_on(tmp_path, monkeypatch, cpu_run):
    def broken(sizes, deadline):
        raise ValueError("boom")
    monkeypatch.setitem(gpu_suite.PARTS, "update", broken)
    assert gpu_suite.main(["--dry-run", "--out", str(tmp_path), "--parts", "update,csr"]) == 0
    parts = json.loads((tmp_path / "results_gpu.json").read_text())["parts"]
    assert parts["update"]["status"] == "error" and parts["update"]["headline"] == "ValueError: boom"
    assert "ValueError: boom" in parts["update"]["traceback"]
    assert parts["csr"]["status"] == "ok"


@pytest.mark.parametrize("name", ["gpu_parts", "gpu_inference"])
def test_doctests(name):
    assert doctest.testmod(importlib.import_module(name)).failed == 0


def test_a_part_past_its_budget_is_stopped_and_recorded(monkeypatch):
    monkeypatch.setattr(gpu_suite, "GRACE", 0.0)
    start = time.monotonic()
    result = gpu_suite.run_part("slow", lambda: time.sleep(30) or {}, 0.2)
    assert result["status"] == "timeout" and time.monotonic() - start < 2


def test_unknown_part_is_refused(capsys):
    with pytest.raises(SystemExit):
        gpu_suite.main(["--dry-run", "--parts", "overhead,warp"])
    assert "unknown part(s) ['warp']" in capsys.readouterr().err
