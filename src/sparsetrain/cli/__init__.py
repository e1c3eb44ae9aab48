"""The ``sparsetrain`` command line: train, compare, methods, recipes, report, plot."""

from __future__ import annotations

import argparse
import os
import sys
import traceback

from sparsetrain.errors import PeerStopped, SparsetrainError

EPILOG = """examples:
  sparsetrain train                                   # MNIST-1D, 1D CNN, GraNet at 90 % sparsity
  sparsetrain train --config granet_cifar10_resnet50 --data.root ~/data/cifar-10-batches-py
  sparsetrain train --method.name rigl --method.density 0.05 --epochs 10
  sparsetrain compare --methods dense,static,set,rigl,gmp,granet --seeds 3
  sparsetrain methods '*rig*'
  sparsetrain report runs/granet-cnn1d-mnist1d-s0
  torchrun --nproc_per_node=2 -m sparsetrain train --epochs 5
"""


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with one sub-parser per command."""
    from sparsetrain.cli import commands

    parser = argparse.ArgumentParser(prog="sparsetrain", description="Sparse neural-network training for PyTorch.",
                                     epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (fn, help_text, configure, examples) in commands.COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text, epilog="examples:\n" + examples,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        configure(p)
        p.set_defaults(func=fn)
    return parser


def split_overrides(parser: argparse.ArgumentParser, argv: list[str]) -> tuple[list[str], list[str]]:
    """Separate config overrides (``--method.density 0.05``) from the command's own arguments.

    A ``--name`` that the command does not define is an override; its value is
    the next token unless written ``--name=value``. Doing this before argparse
    keeps an override's value from being taken as a positional argument.

    Example:
        >>> p = build_parser()
        >>> split_overrides(p, ["compare", "--seeds", "2", "--threads", "1", "a.yaml"])
        (['compare', '--seeds', '2', 'a.yaml'], ['--threads', '1'])
    """
    if not argv or argv[0] not in _subparsers(parser):
        return argv, []
    own = {opt for action in _subparsers(parser)[argv[0]]._actions for opt in action.option_strings}
    kept, overrides, i = argv[:1], [], 1
    while i < len(argv):
        token = argv[i]
        name = token.split("=", 1)[0]
        if token.startswith("--") and name not in own:
            take = 1 if "=" in token or i + 1 >= len(argv) else 2
            overrides += argv[i:i + take]
            i += take
            continue
        kept.append(token)
        i += 1
    return kept, overrides


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; bad input prints one clear message and exits with status 2."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if not argv:
        argv = ["train"]
    argv, extra = split_overrides(parser, argv)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse printed its message (bad option, a value a check refused, --help)
        return int(exc.code or 0)
    if args.command is None:
        parser.print_help()
        return 0
    if extra and args.command not in ("train", "compare", "tickets"):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return int(args.func(args, extra) or 0)
    except PeerStopped:
        print(_PEER_STOPPED.format(command=args.command, rank=os.environ.get("RANK", "?")), file=sys.stderr)
        return 2
    except SparsetrainError as exc:
        print(f"sparsetrain {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # the reader went away (`sparsetrain criteria | head`): nothing more to say
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115  (python flushes stdout once more at exit)
        return 0
    except KeyboardInterrupt:
        print(f"sparsetrain {args.command}: interrupted; the last checkpoint is intact (resume with --resume RUN).",
              file=sys.stderr)
        return 130
    except RuntimeError as exc:
        if not _lost_a_peer(exc):
            raise
        print(_PEER_STOPPED.format(command=args.command, rank=os.environ.get("RANK", "?")), file=sys.stderr)
        return 1


_PEER_STOPPED = ("sparsetrain {command} (rank {rank}): stopped because another process of this torchrun job "
                 "stopped; the reason is in its message above.")


def _lost_a_peer(exc: RuntimeError) -> bool:
    """True for a collective that failed under torchrun: its cause is another rank's own error, printed
    by that rank, so this rank's traceback (gloo's "Connection closed by peer") would only bury it."""
    if int(os.environ.get("WORLD_SIZE", "1")) < 2:
        return False
    frames = traceback.extract_tb(exc.__traceback__)
    return bool(frames) and f"torch{os.sep}distributed{os.sep}" in frames[-1].filename
