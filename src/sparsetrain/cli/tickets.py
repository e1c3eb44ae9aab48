"""``sparsetrain tickets imp|gems``: the lottery-ticket procedures (docs/algorithms.md, "Lottery tickets and IMP").

``imp``: iterative magnitude pruning with rewinding
(:mod:`sparsetrain.procedures.lottery`), one run folder per round, resumable.
``gems``: Rare Gems / Gem-Miner (:mod:`sparsetrain.procedures.gems`).

Both read the trainer's config with a section of their own (``imp:``,
``gems:``), and overrides are written as in ``sparsetrain train``:
``--imp.rounds 2 --epochs 1``, ``--gems.iter_period 3 --epochs 4``.
``--print-config`` prints the resolved configuration and stops. The older
``KEY=VALUE`` spelling (right after the procedure or after ``--set``) still
works, with a warning, and goes away in 0.3.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict
from pathlib import Path

from sparsetrain.errors import SparsetrainError
from sparsetrain.train.config import dump_config
from sparsetrain.train.folders import replace_folder

EXAMPLES = ("  sparsetrain tickets imp --config imp_mnist1d_mlp\n"
            "  sparsetrain tickets imp --config imp_mnist1d_mlp --imp.rounds 3 --imp.target_density null --epochs 20\n"
            "  sparsetrain tickets imp --config imp_mnist1d_mlp --imp.scope global --imp.rewind lr\n"
            "  sparsetrain tickets imp --out runs/imp-mlp-mnist1d-s0 --resume\n"
            "  sparsetrain tickets gems --config gems_mnist1d --gems.target_sparsity 2 --epochs 60\n"
            "  sparsetrain tickets gems --config my_rare_gems_config.yml --print-config\n")


def configure(p) -> None:
    """Arguments of ``sparsetrain tickets``."""
    p.add_argument("procedure", choices=["imp", "gems"], help="imp (iterative magnitude pruning) or gems (Gem-Miner)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="deprecated spelling of --KEY VALUE overrides (e.g. --imp.rounds 2 --epochs 1)")
    p.add_argument("--set", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                   help="deprecated spelling of --KEY VALUE overrides")
    p.add_argument("--config", "-c", help="a tickets config (bundled name or YAML file); for imp also a "
                                          "training recipe with method.name=dense and imp.* overrides; for "
                                          "gems also a flat Rare Gems file")
    p.add_argument("--print-config", action="store_true", help="print the resolved configuration and exit")
    p.add_argument("--out", help="output folder (imp default: runs/imp-{model}-{dataset}-s{seed})")
    p.add_argument("--resume", action="store_true", help="continue the procedure in --out after its last "
                                                         "complete round")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out folder")


def key_value_overrides(tokens: list[str]) -> list[str]:
    """``["epochs=1", "imp.rounds=2"]`` -> ``["--epochs=1", "--imp.rounds=2"]``.

    Example:
        >>> key_value_overrides(["imp.rounds=2"])
        ['--imp.rounds=2']
    """
    out = []
    for token in tokens:
        if "=" not in token or token.startswith("="):
            raise SparsetrainError(f"expected an override KEY=VALUE (e.g. imp.rounds=2), got {token!r}.")
        out.append(f"--{token}")
    return out


def cmd_tickets(args, extra: list[str]) -> int:
    """Dispatch to the procedure."""
    old = [*args.overrides, *args.set]
    if old:
        new = " ".join("--" + " ".join(token.split("=", 1)) for token in old)
        warnings.warn(f"KEY=VALUE overrides are deprecated; write them as in `sparsetrain train`: {new}",
                      FutureWarning, stacklevel=2)
    overrides = [*key_value_overrides(old), *extra]
    if args.procedure == "gems":
        return _gems(args, overrides)
    return _imp(args, overrides)


def _imp(args, overrides: list[str]) -> int:
    from sparsetrain.procedures.lottery import load_saved, load_tickets_config, run_imp, summary_markdown
    if args.resume and not args.out:
        raise SparsetrainError("--resume needs --out FOLDER (the IMP folder to continue).")
    base = args.config
    if base is None and args.resume:  # continue with the saved configuration (overrides on top)
        load_saved(args.out)
        base = Path(args.out) / "imp.yaml"
    elif base is None:
        raise SparsetrainError("tickets imp needs --config (e.g. --config imp_mnist1d_mlp, or a training recipe "
                               "plus --imp.target_density 0.1).")
    cfg, imp = load_tickets_config(base, overrides)
    if args.print_config:
        print(dump_config({**cfg, "imp": asdict(imp)}), end="")
        return 0
    out = Path(args.out or Path(cfg["run"]["dir"]) / f"imp-{cfg['model']['name']}-{cfg['data']['name']}-s{cfg['seed']}")
    result = run_imp(cfg, imp, out, resume=args.resume, overwrite=args.overwrite)
    print(f"\nIMP in {out} ({imp.scope}, rewind {imp.rewind}, prune {imp.prune_fraction:g} per round)")
    print(summary_markdown(result["rounds"]), end="")
    return 0


def _gems(args, overrides: list[str]) -> int:
    if not args.config:
        raise SparsetrainError("tickets gems needs --config (a bundled name such as gems_mnist1d, or a YAML file: "
                               "nested like a training recipe with a gems: section, or a flat Rare Gems file).")
    if args.resume:
        raise SparsetrainError("tickets gems cannot resume a search (no --resume); start it again in a new --out "
                               "or with --overwrite.")
    try:
        from sparsetrain.procedures.gems import load_gems_config, run_gems
    except ImportError as exc:
        raise SparsetrainError(f"Gem-Miner is not available in this installation ({exc}).") from None
    cfg = load_gems_config(args.config, overrides)  # bad input fails here, before any folder is made
    if args.print_config:
        print(dump_config(cfg), end="")
        return 0
    run = cfg["run"]
    out = Path(args.out or Path(run["dir"]) / (run["name"] or f"gems-{Path(args.config).stem}"))
    if out.exists() and any(out.iterdir()):
        if not args.overwrite:
            raise SparsetrainError(f"{out} already exists; pass --overwrite (the old one is kept as NAME.old-<time>) "
                                   "or another --out.")
        replace_folder(out, what="Gem-Miner folder")
    summary = run_gems(cfg, out, progress=run["progress"] is not False)
    print(f"\nGem-Miner in {out}")
    for key in ("density", "gem_acc_before_finetune", "acc_after_finetune", "sanity"):
        print(f"{key:<24} {_fmt(summary.get(key))}")
    return 0


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, dict):
        return ", ".join(f"{k} {_fmt(v)}" for k, v in value.items())
    return str(value)


__all__ = ["cmd_tickets", "configure", "key_value_overrides"]
