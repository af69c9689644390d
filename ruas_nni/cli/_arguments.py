"""Argument types and argument groups that several subcommands share."""

from __future__ import annotations

import argparse
from typing import Callable


def whole_number(low: int, high: int | None = None) -> Callable[[str], int]:
    """An argparse ``type`` for integers in ``[low, high]``; errors say the allowed range."""
    allowed = f"a whole number {low}-{high}" if high is not None else f"a whole number >= {low}"

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {allowed}, got {text!r}") from None
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"expected {allowed}, got {value}")
        return value

    return parse


def exposure_level(text: str) -> float:
    """An argparse ``type`` for ``--exposure``: a mean brightness in ``[0, 1]`` (0 = off)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number 0-1, got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number 0-1 (0 = off), got {value:g}")
    return value


def tone_gamma(text: str) -> float:
    """An argparse ``type`` for ``--exposure-gamma``: a number in ``(0, 2]``."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 2], got {text!r}") from None
    if not 0.0 < value <= 2.0:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 2], got {value:g}")
    return value


def add_exposure_argument(parser: argparse.ArgumentParser) -> None:
    """``--exposure E``, shared by enhance and evaluate."""
    parser.add_argument("--exposure", type=exposure_level, default=None, metavar="E",
                        help="scale the IEM output (the illumination) to mean brightness E before the NRM, for any "
                             "model (default: the model's own setting; 0 = off). Tiles share one gain per image. A model "
                             "without normalisation of its own gets the shoulder policy, which never clips (docs/tone.md)")
    parser.add_argument("--exposure-gamma", type=tone_gamma, default=None, metavar="P",
                        help="with exposure normalisation: the tone curve u**P before the gain (1 = plain scaling; "
                             "default: the model's own setting)")


def add_experiment_arguments(parser: argparse.ArgumentParser) -> None:
    """``--port``, ``--concurrency`` and ``--experiment-dir`` of the commands that start NNI experiments."""
    parser.add_argument("--port", type=int, default=None, metavar="P", help="NNI manager / web UI port (default 8080)")
    parser.add_argument("--concurrency", type=int, default=None, metavar="N", help="trials at a time (default 1)")
    parser.add_argument("--experiment-dir", default=None, metavar="DIR",
                        help="NNI experiment working directory (default ~/nni-experiments)")
