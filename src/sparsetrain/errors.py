"""User-facing errors: one clear message that names the problem and the fix."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class SparsetrainError(ValueError):
    """Bad input given to sparsetrain (the message says what to do)."""


class PeerStopped(SparsetrainError):
    """Raised on ranks 1.. when rank 0 refused the input: rank 0 prints the reason, the others say why they stop."""


def unknown_choice(kind: str, name: str, choices: Iterable[str]) -> SparsetrainError:
    """Build the error for an unknown registered name, listing the close ones.

    Example:
        >>> str(unknown_choice("method", "rigll", ["rigl", "set"]))[:40]
        "unknown method 'rigll'. Did you mean: ri"
    """
    choices = sorted(choices)
    close = difflib.get_close_matches(name, choices, n=3, cutoff=0.5)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    return SparsetrainError(f"unknown {kind} {name!r}.{hint} Choices: {', '.join(choices)}.")


def check_density(value: float, what: str = "density") -> float:
    """Return ``value`` if it is a fraction in (0, 1], else raise a clear error."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise SparsetrainError(f"{what} must be a number in (0, 1], got {value!r}.") from None
    if not 0.0 < value <= 1.0:
        hint = ""
        if 1.0 < value <= 100.0:
            hint = f" It looks like a percentage: pass {value / 100:g} for {value:g}% kept."
        raise SparsetrainError(
            f"{what} must be in (0, 1] (the fraction of weights kept), got {value!r}.{hint}"
        )
    return value


def check_fraction(value: float, what: str) -> float:
    """Return ``value`` if it lies in [0, 1], else raise a clear error."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise SparsetrainError(f"{what} must be a fraction in [0, 1], got {value!r}.") from None
    if not 0.0 <= value <= 1.0:
        raise SparsetrainError(f"{what} must be a fraction in [0, 1], got {value!r}.")
    return value


def check_count(value: object, what: str, minimum: int = 1) -> int:
    """Return ``value`` as an int if it is a whole number >= ``minimum`` (``1e3`` counts), else a clear error.

    Example:
        >>> check_count(3, "seeds")
        3
        >>> check_count(2.5, "epochs")
        Traceback (most recent call last):
        ...
        sparsetrain.errors.SparsetrainError: epochs must be a whole number >= 1, got 2.5.
    """
    whole = isinstance(value, int) or (isinstance(value, float) and value.is_integer())
    if isinstance(value, bool) or not whole or value < minimum:  # type: ignore[operator]
        raise SparsetrainError(f"{what} must be a whole number >= {minimum}, got {value!r}.")
    return int(value)  # type: ignore[arg-type]


def check_nonnegative(value: object, what: str) -> float:
    """Return ``value`` as a float if it is a number >= 0, else raise a clear error."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SparsetrainError(f"{what} must be a number >= 0, got {value!r}.")
    if not value >= 0:
        raise SparsetrainError(f"{what} must be >= 0, got {value!r}.")
    return float(value)
