"""Griffe extension for the API reference: read ``Example:`` as an ``Examples:`` section.

The code base writes one ``Example:`` block per docstring (sometimes with a note in
parentheses). Griffe's Google parser knows only the plural, so the singular would
render as an admonition with the ``>>>`` lines as plain text; this rewrites the
title before parsing so the doctests render as code.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_TITLE = re.compile(r"^(?P<indent>\s*)Example(?: \((?P<note>[^)]*)\))?:\s*$", re.MULTILINE)


def _plural(match: re.Match) -> str:
    note = match.group("note")
    return f"{match.group('indent')}Examples:" + (f" {note}" if note else "")


class ExampleSections(griffe.Extension):
    """Rename ``Example:`` / ``Example (note):`` section titles to ``Examples:``."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = _TITLE.sub(_plural, obj.docstring.value)
