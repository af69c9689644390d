"""``ruas-nni``: the command line. Each subcommand lives in its own module with
``register(subparsers)``; heavy imports (NNI, Lightning) happen inside the subcommand that needs
them, so that ``ruas-nni enhance`` starts without them."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import Sequence

from ruas_nni.errors import RuasError

__all__ = ["main", "build_parser"]

SUBCOMMANDS = ("enhance", "demo")
"""Modules of :mod:`ruas_nni.cli`, one per subcommand, in the order ``--help`` lists them."""

DESCRIPTION = """\
RUAS low-light enhancement on NNI: search a tiny enhancement network without ground truth,
compare search strategies, train the winner and enhance photos.

Paper: Liu et al., "Retinex-inspired Unrolling with Cooperative Prior Architecture Search for
Low-light Image Enhancement", CVPR 2021.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ruas-nni", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    from ruas_nni import __version__

    parser.add_argument("--version", action="version", version=f"ruas-nni {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in SUBCOMMANDS:
        importlib.import_module(f"ruas_nni.cli.{name.replace('-', '_')}").register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except RuasError as exc:
        print(f"ruas-nni {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"ruas-nni {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
