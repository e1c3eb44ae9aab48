"""Per-layer density report."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class DensityReport:
    """Rows of ``{name, type, shape, numel, active, density}`` plus the total; prints as a table."""

    rows: list[dict]

    @property
    def total(self) -> dict:
        numel = sum(r["numel"] for r in self.rows)
        active = sum(r["active"] for r in self.rows)
        return {"name": "total", "type": "", "shape": "", "numel": numel, "active": active,
                "density": active / numel if numel else 0.0}

    def __str__(self) -> str:
        rows = self.rows + [self.total]
        width = max(len(r["name"]) for r in rows)
        kind = max([len("type")] + [len(r.get("type", "")) for r in rows])
        head = f"{'layer':<{width}}  {'type':<{kind}}  {'shape':<18} {'numel':>10} {'active':>10} {'density':>8}"
        lines = [head, "-" * len(head)]
        for r in rows:
            shape = "x".join(map(str, r["shape"])) if r["shape"] else ""
            lines.append(f"{r['name']:<{width}}  {r.get('type', ''):<{kind}}  {shape:<18} {r['numel']:>10} "
                         f"{r['active']:>10} {r['density']:>8.4f}")
        return "\n".join(lines)


def density_report(params: dict[str, Tensor], masks: dict[str, Tensor],
                   active: dict[str, int] | None = None, removed: dict[str, int] | None = None,
                   types: dict[str, str] | None = None) -> DensityReport:
    """Build a :class:`DensityReport` from parameters and their masks.

    ``active`` gives the counts when the caller has them (the engine counts
    sharded FSDP2 masks over all ranks once per update). ``removed``: weights a
    shrink took out of each parameter; ``numel`` and ``density`` then refer to
    the original size (``shape`` is the current one), as in the masked run.
    ``types``: the module type of each parameter (from selection).

    Example:
        >>> w = torch.zeros(2, 3); m = torch.tensor([[1, 0, 0], [0, 1, 1]], dtype=torch.bool)
        >>> density_report({"w": w}, {"w": m}).rows[0]["active"]
        3
    """
    rows = []
    for name, p in params.items():
        numel = math.prod(p.shape) + (removed or {}).get(name, 0)
        n_active = int(torch.count_nonzero(masks[name])) if active is None else active[name]
        rows.append({"name": name, "type": (types or {}).get(name, ""), "shape": list(p.shape), "numel": numel,
                     "active": n_active, "density": n_active / numel})
    return DensityReport(rows)
