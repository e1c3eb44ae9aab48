"""PNG figures: matplotlib without a display, written atomically (run plots, comparisons, schedules)."""

from __future__ import annotations

import warnings
from pathlib import Path

from sparsetrain.core.files import atomic_write_bytes


def pyplot():
    """matplotlib's ``pyplot`` on the file-only Agg backend, or None (with one warning) when it is missing.

    Example:
        >>> plt = pyplot()
        >>> fig, ax = plt.subplots(); _ = ax.plot([0, 1])
    """
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        warnings.warn("matplotlib is not installed: no plots (pip install 'sparsetrain[plot]').", stacklevel=3)
        return None
    return plt


def save_figure(fig, path: str | Path, dpi: int = 110) -> Path:
    """Write ``fig`` as a PNG atomically and close it.

    A full or read-only disk gives one line naming the file (the checkpoint is
    written separately and stays intact), never a traceback from matplotlib.

    Example:
        >>> import tempfile, os
        >>> fig, ax = pyplot().subplots(); _ = ax.plot([0, 1])
        >>> save_figure(fig, os.path.join(tempfile.mkdtemp(), "a.png")).name
        'a.png'
    """
    import matplotlib.pyplot as plt
    path = Path(path)
    fig.tight_layout()
    try:
        atomic_write_bytes(path, lambda fh: fig.savefig(fh, format="png", dpi=dpi), advice="Free some space.")
    finally:
        plt.close(fig)
    return path
