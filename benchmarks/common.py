"""Helpers the benchmark scripts share: the machine header, statistics, Markdown tables,
and writing a script's section into ``benchmarks/RESULTS.md``.

The scripts run as ``python benchmarks/<name>.py``, so this folder is on
``sys.path`` and ``import common`` works; the smoke tests add it themselves.

Example:
    >>> fmt_stats([1.0, 3.0, 2.0])
    '2.000 (1.000-3.000)'
    >>> replace_section("# R\\n", "acc", "## A\\nnew\\n").count("<!-- begin acc -->")
    1
"""

from __future__ import annotations

import datetime
import os
import platform
import statistics
import subprocess
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "RESULTS.md"


def git_commit() -> str:
    """The short hash of HEAD, or ``?`` outside a checkout."""
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=HERE,
                             check=False).stdout.strip()
    except OSError:
        return "?"
    return out or "?"


def cpu_name() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_name(device: str) -> str:
    """``cpu`` or the CUDA device's name."""
    if device.startswith("cuda") and torch.cuda.is_available():
        return f"{device} ({torch.cuda.get_device_name(torch.device(device))})"
    return device


def machine_info(device: str = "cpu") -> list[str]:
    """Date, machine, load, versions and thread count: the header every benchmark prints."""
    import sparsetrain
    try:
        load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        load = "?"
    return [f"date: {datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')}",
            f"cpu: {cpu_name()} ({os.cpu_count()} logical cores), load average {load}; device {device_name(device)}",
            f"python {platform.python_version()}, torch {torch.__version__}, threads {torch.get_num_threads()}, "
            f"sparsetrain {sparsetrain.__version__} (git {git_commit()})"]


def stats(values: list[float]) -> tuple[float, float, float]:
    """(median, min, max)."""
    return statistics.median(values), min(values), max(values)


def fmt_stats(values: list[float], scale: float = 1.0, digits: int = 3) -> str:
    """``median (min-max)`` of ``values`` times ``scale``; just the value for one sample."""
    med, lo, hi = stats(values)
    if len(values) == 1:
        return f"{med * scale:.{digits}f}"
    return f"{med * scale:.{digits}f} ({lo * scale:.{digits}f}-{hi * scale:.{digits}f})"


def mean_std(values: list[float], scale: float = 100.0) -> str:
    """``mean ± std`` (sample std; 0 for one value), in percent by default."""
    mean = statistics.mean(values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{mean * scale:.2f} ± {std * scale:.2f}"


def table(header: list[str], rows: list[list[str]]) -> str:
    """A Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def replace_section(text: str, key: str, body: str) -> str:
    """Put ``body`` between ``<!-- begin key -->`` and ``<!-- end key -->`` in ``text``
    (replacing what was there); appended at the end when the markers are missing."""
    begin, end = f"<!-- begin {key} -->", f"<!-- end {key} -->"
    block = f"{begin}\n{body.rstrip()}\n{end}"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        return head + block + rest.split(end, 1)[1]
    return text.rstrip() + "\n\n" + block + "\n"


def write_section(key: str, body: str, path: str | Path = RESULTS) -> Path:
    """Write one script's section into the results file (see :func:`replace_section`)."""
    path = Path(path)
    text = path.read_text() if path.is_file() else "# Benchmark results\n"
    path.write_text(replace_section(text, key, body))
    return path


def fill_defaults(args, sizes: dict) -> None:
    """Set every size option the user left out (``None``) from ``sizes`` (a script's full or quick sizes).

    Example:
        >>> import argparse
        >>> args = argparse.Namespace(steps=None, batch=8)
        >>> fill_defaults(args, {"steps": 100, "batch": 32}); (args.steps, args.batch)
        (100, 8)
    """
    for key, value in sizes.items():
        if getattr(args, key) is None:
            setattr(args, key, value)


def pyplot():
    """matplotlib's pyplot on the Agg backend, or None when matplotlib is missing."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


class Tee:
    """Print as usual and keep a copy of everything printed (to write it into RESULTS.md).

    Example:
        >>> with Tee() as tee:
        ...     print("hello")
        hello
        >>> tee.text()
        'hello\\n'
    """

    def __init__(self) -> None:
        import io
        self._buf = io.StringIO()

    def __enter__(self) -> Tee:
        import sys
        self._stdout = sys.stdout
        sys.stdout = self
        return self

    def __exit__(self, *exc) -> None:
        import sys
        sys.stdout = self._stdout

    def write(self, s: str) -> int:
        self._buf.write(s)
        return self._stdout.write(s)

    def flush(self) -> None:
        self._stdout.flush()

    def text(self) -> str:
        return self._buf.getvalue()


def demote(text: str, levels: int = 2) -> str:
    """Push Markdown headings down ``levels`` levels (a script's ``#`` becomes RESULTS.md's ``###``).

    Example:
        >>> demote("# A\\n## B\\ntext", 1)
        '## A\\n### B\\ntext'
    """
    return "\n".join("#" * levels + line if line.startswith("#") else line for line in text.splitlines())
