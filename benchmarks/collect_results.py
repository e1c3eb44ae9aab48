"""Copy the per-benchmark result files into benchmarks/RESULTS.md.

    python benchmarks/collect_results.py

Some benchmarks write their own file (``results_<name>.md``: Chase, inference,
pruning at initialisation, Gem-Miner, IMP) because they ran alongside each
other; this puts each one, unchanged but for heading levels, between its
``<!-- begin file:results_<name> -->`` markers in RESULTS.md, so RESULTS.md
holds every table and the per-benchmark files stay what the commands wrote.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, demote, write_section  # noqa: E402

#: (file stem, the command that writes it)
SOURCES = [
    ("results_chase", "python benchmarks/chase_accuracy.py"),
    ("results_chase_residual", "python benchmarks/chase_residual.py"),
    ("results_inference", "python benchmarks/inference.py"),
    ("results_inference_imagenet", "python benchmarks/inference.py --models resnet50 --resolution imagenet --no-mlp"),
    ("results_init_pruning", "python benchmarks/init_pruning.py"),
    ("results_gems", "python benchmarks/gems.py"),
    ("results_imp", "python benchmarks/imp.py"),
    ("results_tickets", "python benchmarks/tickets_cnn1d.py"),
]


def collect(folder: Path = Path(__file__).resolve().parent, results: Path = RESULTS) -> list[str]:
    """Write every existing ``results_*.md`` of ``SOURCES`` into ``results``; returns the keys written."""
    written = []
    for stem, command in SOURCES:
        source = folder / f"{stem}.md"
        if not source.is_file():
            continue
        body = (f"<!-- copied from {stem}.md (written by `{command}`) by "
                f"`python benchmarks/collect_results.py`; edit the source file, not this copy -->\n\n"
                + demote(source.read_text(), 1))
        write_section(f"file:{stem}", body, results)
        written.append(stem)
    return written


if __name__ == "__main__":
    for stem in collect():
        print(f"{stem}.md -> {RESULTS}")
