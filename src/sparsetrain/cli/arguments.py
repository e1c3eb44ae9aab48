"""Typed command-line options: every command checks its numbers the way the config does.

An option's text is read in the config dialect (``parse_value``: ``5e-4``,
``[1, 2]``) and handed to the same checks as a config key
(``errors.check_count``, ``check_density``, ...), so ``--seeds 0`` and
``--epochs 0`` get the same one line. A failed check becomes argparse's
``error: argument --seeds: ...`` (exit status 2), never a traceback.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from sparsetrain.errors import SparsetrainError, check_count, check_density, check_fraction


def checked(check: Callable[[Any, str], Any]) -> Callable[[str], Any]:
    """An argparse ``type=``: parse the text like a config value, then ``check`` it.

    argparse puts the option's name in front of the message, so the check
    speaks of no name.

    Example:
        >>> checked(check_count)("3")
        3
        >>> checked(check_count)("0")
        Traceback (most recent call last):
        ...
        argparse.ArgumentTypeError: must be a whole number >= 1, got 0.
    """
    from sparsetrain.train.config import parse_value

    def convert(text: str) -> Any:
        try:
            return check(parse_value(text), "")
        except SparsetrainError as exc:
            raise argparse.ArgumentTypeError(str(exc).strip()) from None

    return convert


def count(minimum: int = 1) -> Callable[[str], int]:
    """A whole number >= ``minimum``."""
    return checked(lambda value, what: check_count(value, what, minimum))


def fraction() -> Callable[[str], float]:
    """A number in [0, 1]."""
    return checked(check_fraction)


def density() -> Callable[[str], float]:
    """A fraction of weights kept, in (0, 1]."""
    return checked(check_density)


def comma_list(item: Callable[[Any, str], Any]) -> Callable[[str], list]:
    """``a,b,c`` (or ``[a, b, c]``), each item checked.

    Example:
        >>> comma_list(check_density)("0.2,0.1")
        [0.2, 0.1]
    """
    from sparsetrain.train.config import parse_value

    def check_all(value: Any, name: str) -> list:
        items = value if isinstance(value, list) else [parse_value(t) for t in str(value).split(",")]
        return [item(v, "each value") for v in items]

    return checked(check_all)


def add_round_to(p: argparse.ArgumentParser) -> None:
    """``--round-to N`` of compact, export and bench."""
    p.add_argument("--round-to", type=count(), default=1, metavar="N",
                   help="keep every resized width a multiple of N by keeping some empty channels (outputs "
                        "unchanged; 8 or 16 match the channel blocks of GPU / AVX-512 kernels; default 1: exact)")
