"""Training schedules: ``(step, total_steps) -> value``, a curve placed in training.

Steps count completed optimizer steps (the first possible update happens at
step ``update_every``). Horizons are fractions of training, so a recipe
scales from a one-minute CPU run to a long GPU run. The shapes come from
:mod:`.curves` (one cubic, one cosine). **Unit:** the library thinks in
density (the fraction of weights kept); :class:`SparsitySchedule` speaks
fasterai's sparsity (a fraction removed, where fasterai writes percent: its
95 is our 0.95) and converts at the edge with :meth:`SparsitySchedule.density`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sparsetrain.errors import SparsetrainError
from sparsetrain.schedules.curves import CURVES, SparsityFn, agp, cos, exp, get_curve, iterative

Schedule = Callable[[int, int], float]


def constant(value: float) -> Schedule:
    """Always ``value``.

    Example:
        >>> constant(0.3)(10, 100)
        0.3
    """
    def schedule(step: int, total: int) -> float:
        return value
    return schedule


def cosine_decay(start: float, end: float = 0.0, horizon: float = 1.0) -> Schedule:
    """Cosine from ``start`` to ``end`` over ``horizon * total`` steps, then ``end``.

    With ``end=0.005, horizon=1`` this is sparse_learning / ITOP / GraNet's
    ``CosineDecay(0.5, T_max, eta_min=0.005)`` (eta_min is absolute); with
    ``end=0, horizon=0.75`` it is RigL's drop fraction
    ``alpha/2 * (1 + cos(pi * t / T_end))``. The shape is :func:`.curves.cos`.

    Example:
        >>> f = cosine_decay(0.5, 0.005)
        >>> f(0, 100), round(f(50, 100), 4), f(100, 100)
        (0.5, 0.2525, 0.005)
    """
    def schedule(step: int, total: int) -> float:
        span = max(1.0, horizon * total)
        return cos(start, end, min(float(step), span) / span)
    return schedule


def exponential_p(start: float, power: float = 3.0, begin: float = 0.0, horizon: float = 1.0) -> Schedule:
    """rigl's ``exponential_p`` drop fraction: start * (1 - (t - b)/(e - b)) ** p."""
    def schedule(step: int, total: int) -> float:
        b, e = begin * total, max(begin * total + 1, horizon * total)
        frac = min(1.0, max(0.0, (step - b) / (e - b)))
        return start * (1.0 - frac) ** power
    return schedule


def gmp_density(initial_density: float, final_density: float, start: float, end: float,
                update_every: int) -> Schedule:
    """Zhu & Gupta cubic density schedule (:func:`.curves.agp`), quantised to update events.

    With k = floor(t / dT), k0 = floor(t0 / dT), kf = floor(tf / dT):
    s_t = s_f + (s_i - s_f) * (1 - (k - k0) / (kf - k0)) ** 3, returned as a
    density (1 - s_t). Fixed on purpose: the original's last event is
    k = kf - 1, which stops short of s_f by (s_i - s_f) / (kf - k0) ** 3; here
    the event at k = kf reaches the final density exactly, and from step
    ``floor(end * total)`` on the value is the final density.

    Example (s_i = 0, s_f = 0.9, 10 events):
        >>> f = gmp_density(1.0, 0.1, 0.0, 1.0, 10)
        >>> f(0, 100), round(f(50, 100), 4), round(f(100, 100), 4)
        (1.0, 0.2125, 0.1)
    """
    s_i, s_f = 1.0 - initial_density, 1.0 - final_density

    def schedule(step: int, total: int) -> float:
        k = step // update_every
        k0 = int(start * total) // update_every
        kf = max(k0 + 1, int(end * total) // update_every)
        # from the end step on, the final density, even if no multiple of update_every fell in the window
        progress = 1.0 if step >= int(end * total) else min(1.0, max(0.0, (k - k0) / (kf - k0)))
        return 1.0 - agp(s_i, s_f, progress)
    return schedule


def _check_sparsity(value: float, what: str) -> float:
    value = float(value)
    if not 0.0 <= value < 1.0:
        hint = f" It looks like a percentage: pass {value / 100:g} for {value:g}%." if 1.0 <= value < 100 else ""
        raise SparsetrainError(f"{what} must be a fraction of weights removed in [0, 1), got {value!r}.{hint}")
    return value


@dataclass
class SparsitySchedule:
    """A curve placed in training, in fasterai's unit: ``(step, total_steps) -> sparsity``.

    Like fasterai's ``Schedule(sched_func, start_pct, end_pct, start_sparsity)``:
    before ``start`` (a fraction of training) the sparsity is ``start_sparsity``,
    between ``start`` and ``end`` it is ``function(start_sparsity, end_sparsity,
    pos)`` with ``pos = (t/T - start) / (end - start)``, after ``end`` the last
    value is held (the blog's "tail" of fine-tuning when ``end < 1``).

    Attributes:
        function: a curve's name (:mod:`.curves`) or a ``(start, end, pos)`` callable.
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
        self.fn = get_curve(self.function)
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
    from sparsetrain.core.figures import pyplot, save_figure
    plt = pyplot()
    if plt is None:
        raise SparsetrainError("plot_schedules needs matplotlib: pip install 'sparsetrain[plot]'.")
    names = CURVES.names() if names is None else names
    xs = [i / 200 for i in range(201)]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name in names:
        fn = get_curve(name)
        start = 1e-6 if fn is exp else 0.0
        ax.plot(xs, [fn(start, end_sparsity, x) for x in xs], label=name)
    ax.set_xlabel("position in the pruning window")
    ax.set_ylabel("sparsity (fraction removed)")
    ax.set_title("Pruning schedules")
    ax.grid(alpha=0.3)
    ax.legend()
    save_figure(fig, path, dpi=120)
    return path
