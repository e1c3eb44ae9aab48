"""fasterai's pruning schedules for the schedule study (ALGORITHMS.md 8.1, 8.3).

Every schedule is a pure function ``(start, end, pos) -> sparsity`` with
``pos`` in [0, 1] the position inside the pruning window. **Unit:** sparsity
is a fraction of weights removed, in [0, 1); fasterai speaks in percent
(``SparsifyCallback(95, ...)``), so its 95 is our 0.95. The formulas are
unit-free, so the shapes are the same.

:class:`SparsitySchedule` places a function inside training, like fasterai's
``Schedule(sched_func, start_pct, end_pct, start_sparsity)``: before
``start`` (a fraction of training) the sparsity is ``start_sparsity``, between
``start`` and ``end`` it is ``function(start_sparsity, end_sparsity, pos)``
with ``pos = (t/T - start) / (end - start)``, after ``end`` the last value is
held (the blog's "tail" of fine-tuning when ``end < 1``).

Example:
    >>> s = SparsitySchedule("agp", end_sparsity=0.9, start=0.2, end=0.8)
    >>> s(0, 100), round(s(50, 100), 4), s(80, 100), s(100, 100)
    (0.0, 0.7875, 0.9, 0.9)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from sparsetrain.errors import SparsetrainError, unknown_choice

#: ``(start_sparsity, end_sparsity, pos) -> sparsity``
SparsityFn = Callable[[float, float, float], float]


def one_shot(start: float, end: float, pos: float) -> float:
    """All at once: ``end`` anywhere in the window (ALGORITHMS.md 8.1; fasterai preset start 0.5).

    Example:
        >>> one_shot(0.0, 0.9, 0.0), one_shot(0.0, 0.9, 1.0)
        (0.9, 0.9)
    """
    return end


def iterative(start: float, end: float, pos: float, n_steps: int = 3) -> float:
    """``n_steps`` equal jumps: start + (end - start) / n * ceil(n * pos) (ALGORITHMS.md 8.1).

    Example:
        >>> [round(iterative(0.0, 0.9, p), 6) for p in (0.0, 0.1, 1 / 3, 0.5, 1.0)]
        [0.0, 0.3, 0.3, 0.6, 0.9]
    """
    # round first so that 3 * (1/3) = 1.0000000000000002 does not jump one step early
    return start + (end - start) / n_steps * math.ceil(round(n_steps * pos, 9))


def agp(start: float, end: float, pos: float) -> float:
    """Zhu & Gupta's cubic: end + (start - end)(1 - pos)^3 (ALGORITHMS.md 8.1).

    This is the fixed formula: fasterai's 2021 code read ``end + start - end *
    (1 - pos) ** 3`` (missing parenthesis), right only for start = 0; fixed
    upstream on 2021-10-04 ("fix agp").

    Example:
        >>> agp(0.0, 0.8, 0.0), round(agp(0.0, 0.8, 0.5), 12), agp(0.2, 0.8, 1.0)
        (0.0, 0.7, 0.8)
    """
    return end + (start - end) * (1.0 - pos) ** 3


def lin(start: float, end: float, pos: float) -> float:
    """fastai's SchedLin: start + pos (end - start) (ALGORITHMS.md 8.1).

    Example:
        >>> lin(0.0, 0.8, 0.25)
        0.2
    """
    return start + pos * (end - start)


def cos(start: float, end: float, pos: float) -> float:
    """fastai's SchedCos: start + (end - start)(1 + cos(pi (1 - pos)))/2 (ALGORITHMS.md 8.1).

    Example:
        >>> cos(0.0, 0.8, 0.0), round(cos(0.0, 0.8, 0.5), 12), cos(0.0, 0.8, 1.0)
        (0.0, 0.4, 0.8)
    """
    return start + (end - start) * (1.0 + math.cos(math.pi * (1.0 - pos))) / 2.0


def exp(start: float, end: float, pos: float) -> float:
    """fastai's SchedExp: start (end / start)^pos; needs start > 0 (ALGORITHMS.md 8.1).

    The blog passes ``start_sparsity=0.0001`` (percent) for this reason.

    Example:
        >>> round(exp(0.01, 0.64, 0.5), 12)
        0.08
    """
    if start <= 0.0:
        raise SparsetrainError(
            f"the 'exp' sparsity schedule needs start_sparsity > 0 (it computes start * (end/start)**pos), "
            f"got {start!r}; fasterai's blog uses a tiny start such as 1e-6 (0.0001%)."
        )
    return start * (end / start) ** pos


def one_cycle(start: float, end: float, pos: float, alpha: float = 14.0, beta: float = 5.0) -> float:
    """One-Cycle pruning: start + (end - start)(1 + e^(beta-alpha)) / (1 + e^(beta - alpha pos)).

    Defaults alpha=14, beta=5 are the blog's (and the study's); fasterai's
    library code uses beta=6 (pass ``functools.partial(one_cycle, beta=6)``).
    Note s(0) != start: s(0) - start = (1 + e^(beta-alpha))/(1 + e^beta)
    ~ 0.0067 of the range for beta=5 (0.0025 for beta=6). ALGORITHMS.md 8.1.

    Example:
        >>> round(one_cycle(0.0, 1.0, 0.0), 4), one_cycle(0.0, 0.9, 1.0)
        (0.0067, 0.9)
    """
    out = (1.0 + math.exp(beta - alpha)) / (1.0 + math.exp(beta - alpha * pos))
    return start + (end - start) * out


def dsd(start: float, end: float, pos: float) -> float:
    """Dense-sparse-dense: cosine up to ``end`` at pos 0.5, then cosine back to ``start`` (ALGORITHMS.md 8.1).

    Example:
        >>> dsd(0.0, 0.8, 0.0), dsd(0.0, 0.8, 0.5), round(dsd(0.0, 0.8, 0.75), 12), dsd(0.0, 0.8, 1.0)
        (0.0, 0.8, 0.4, 0.0)
    """
    if pos < 0.5:
        return cos(start, end, 2.0 * pos)
    return cos(end, start, 2.0 * pos - 1.0)


SPARSITY_SCHEDULES: dict[str, SparsityFn] = {
    "one_shot": one_shot, "iterative": iterative, "agp": agp, "lin": lin, "cos": cos, "exp": exp,
    "one_cycle": one_cycle, "dsd": dsd,
}


def get_sparsity_schedule(name: str | SparsityFn) -> SparsityFn:
    """Look a schedule function up by name (a callable is returned as is).

    Example:
        >>> get_sparsity_schedule("cos") is cos
        True
    """
    if callable(name):
        return name
    if name not in SPARSITY_SCHEDULES:
        raise unknown_choice("sparsity schedule", name, SPARSITY_SCHEDULES)
    return SPARSITY_SCHEDULES[name]


def _check_sparsity(value: float, what: str) -> float:
    value = float(value)
    if not 0.0 <= value < 1.0:
        hint = f" It looks like a percentage: pass {value / 100:g} for {value:g}%." if 1.0 <= value < 100 else ""
        raise SparsetrainError(f"{what} must be a fraction of weights removed in [0, 1), got {value!r}.{hint}")
    return value


@dataclass
class SparsitySchedule:
    """A sparsity schedule placed in training: ``(step, total_steps) -> sparsity`` (ALGORITHMS.md 8.3).

    Attributes:
        function: a name of :data:`SPARSITY_SCHEDULES` or a ``(start, end, pos)`` callable.
        start_sparsity: sparsity before the window (fraction in [0, 1)).
        end_sparsity: sparsity reached at the end of the window.
        start: fraction of training where the window opens (fasterai ``start_pct``).
        end: fraction of training where it closes (``end_pct``); after it the last value is held.
        n_steps: number of jumps of ``iterative``.

    Example:
        >>> s = SparsitySchedule("iterative", end_sparsity=0.9, start=0.2)
        >>> [round(s(t, 10), 6) for t in (0, 2, 3, 5, 7, 8, 10)]
        [0.0, 0.0, 0.3, 0.6, 0.6, 0.9, 0.9]
        >>> round(s.density(5, 10), 6)
        0.4
    """

    function: str | SparsityFn
    start_sparsity: float = 0.0
    end_sparsity: float = 0.9
    start: float = 0.0
    end: float = 1.0
    n_steps: int = 3

    def __post_init__(self) -> None:
        self.fn = get_sparsity_schedule(self.function)
        self.name = self.function if isinstance(self.function, str) else getattr(self.function, "__name__", "custom")
        _check_sparsity(self.start_sparsity, "start_sparsity")
        _check_sparsity(self.end_sparsity, "end_sparsity")
        if not 0.0 <= self.start < self.end <= 1.0:
            raise SparsetrainError(
                f"the pruning window needs 0 <= start < end <= 1 (fractions of training), "
                f"got start={self.start!r}, end={self.end!r}."
            )
        if self.fn is iterative and (int(self.n_steps) != self.n_steps or self.n_steps < 1):
            raise SparsetrainError(f"iterative needs n_steps >= 1 (an integer), got {self.n_steps!r}.")
        self.at(0.0)  # fail now (e.g. exp with start 0), not in the middle of training

    def at(self, pos: float) -> float:
        """The function at window position ``pos`` in [0, 1]."""
        if self.fn is iterative:
            return iterative(self.start_sparsity, self.end_sparsity, pos, int(self.n_steps))
        return float(self.fn(self.start_sparsity, self.end_sparsity, pos))

    def __call__(self, step: int, total_steps: int) -> float:
        """Sparsity after ``step`` of ``total_steps`` optimizer steps."""
        frac = step / max(1, total_steps)
        if frac < self.start:
            return self.start_sparsity
        return self.at(min(1.0, (frac - self.start) / (self.end - self.start)))

    def density(self, step: int, total_steps: int) -> float:
        """1 - sparsity: the fraction kept, the unit of ``sparsetrain.ops.prune_to``."""
        return 1.0 - self(step, total_steps)


def plot_schedules(path: str, names: list[str] | None = None, end_sparsity: float = 0.9) -> str:
    """Draw the schedules over one window (pos 0 -> 1) into a PNG at ``path``.

    ``exp`` is drawn from start 1e-6 (it cannot start at 0; the blog's 0.0001 %); the others from 0.
    Needs matplotlib (``pip install sparsetrain[plot]``). Returns ``path``.
    """
    from sparsetrain.train.plots import pyplot, save_figure
    plt = pyplot()
    if plt is None:
        raise SparsetrainError("plot_schedules needs matplotlib: pip install 'sparsetrain[plot]'.")
    names = list(SPARSITY_SCHEDULES) if names is None else names
    xs = [i / 200 for i in range(201)]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name in names:
        fn = get_sparsity_schedule(name)
        start = 1e-6 if fn is exp else 0.0
        ax.plot(xs, [fn(start, end_sparsity, x) for x in xs], label=name)
    ax.set_xlabel("position in the pruning window")
    ax.set_ylabel("sparsity (fraction removed)")
    ax.set_title("Pruning schedules")
    ax.grid(alpha=0.3)
    ax.legend()
    save_figure(fig, path, dpi=120)
    return path
