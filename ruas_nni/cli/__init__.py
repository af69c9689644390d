"""``ruas-nni``: the command line.

Each subcommand is a module of this package with ``ORDER`` (its place in ``--help``) and
``register(subparsers)``; they are discovered, so adding a command is adding a file. Modules import
heavy dependencies (NNI, Lightning) inside ``run``, so that ``ruas-nni enhance`` starts without them.

Conventions every command follows: progress bars only on a terminal (:func:`ruas_nni.base.quiet.show_progress`;
``--quiet`` hides them and nothing else), and the last line on standard output says what was
written where. Dependencies' warnings and tips are filtered in :mod:`ruas_nni.base.quiet`.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import sys
from typing import Sequence

from ruas_nni.base.errors import RuasError
from ruas_nni.base.quiet import quiet_dependencies

__all__ = ["main", "build_parser", "flag_of", "error_line"]

DESCRIPTION = """\
RUAS low-light enhancement on NNI: search a tiny enhancement network without ground truth,
compare search strategies, train the winner and enhance photos.

Paper: Liu et al., "Retinex-inspired Unrolling with Cooperative Prior Architecture Search for
Low-light Image Enhancement", CVPR 2021.
"""


def _subcommand_modules() -> list:
    modules = [importlib.import_module(f"{__name__}.{info.name}")
               for info in pkgutil.iter_modules(__path__) if not info.name.startswith("_")]
    return sorted((m for m in modules if hasattr(m, "register")), key=lambda m: (getattr(m, "ORDER", 100), m.__name__))


def build_parser() -> argparse.ArgumentParser:
    from ruas_nni import __version__

    parser = argparse.ArgumentParser(
        prog="ruas-nni", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"ruas-nni {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in _subcommand_modules():
        module.register(subparsers)
    return parser


def flag_of(key: str) -> str:
    """The command-line flag of an argument or configuration key: ``init_nrm`` -> ``--init-nrm``."""
    return "--" + key.replace("_", "-")


def error_line(error: RuasError) -> str:
    """The message users see for a library error: the keys it names written as flags."""
    return error.spelled(flag_of)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    quiet_dependencies()  # the one place where NNI's, Lightning's and setuptools' noise is filtered
    try:
        return int(args.func(args) or 0)
    except RuasError as exc:
        print(f"ruas-nni {args.command}: error: {error_line(exc)}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"ruas-nni {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
