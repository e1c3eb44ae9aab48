"""Pure schedules: ``(step, total_steps) -> value``.

Steps count completed optimizer steps (ALGORITHMS.md 11.5: the first possible
update happens at step ``update_every``). Horizons are fractions of training,
so a recipe scales from a one-minute CPU run to a long GPU run.
"""

from __future__ import annotations

import math
from collections.abc import Callable

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
    ``CosineDecay(0.5, T_max, eta_min=0.005)`` (ALGORITHMS.md 1.5: eta_min is
    absolute); with ``end=0, horizon=0.75`` it is RigL's drop fraction
    ``alpha/2 * (1 + cos(pi * t / T_end))`` (section 4, 7).

    Example:
        >>> f = cosine_decay(0.5, 0.005)
        >>> f(0, 100), round(f(50, 100), 4), f(100, 100)
        (0.5, 0.2525, 0.005)
    """
    def schedule(step: int, total: int) -> float:
        span = max(1.0, horizon * total)
        t = min(float(step), span)
        return end + (start - end) * (1.0 + math.cos(math.pi * t / span)) / 2.0
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
    """Zhu & Gupta cubic density schedule, quantised to update events (ALGORITHMS.md 2.1).

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
        return 1.0 - (s_f + (s_i - s_f) * (1.0 - progress) ** 3)
    return schedule


SCHEDULES: dict[str, Callable[..., Schedule]] = {
    "constant": constant,
    "cosine": cosine_decay,
    "exponential_p": exponential_p,
}
