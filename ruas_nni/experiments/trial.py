"""One trial of the strategy comparison: search -> train -> evaluate, reported to NNI.

``python -m ruas_nni.experiments.trial`` is the trial command of the experiments that ``ruas-nni compare`` and
``examples/compare_experiment.yaml`` start. The tuner (GridSearch over the search space
``{"strategy": choice, "seed": choice}``) gives each trial its strategy and seed; everything else
(data folders, epochs, crops, training steps: :class:`~ruas_nni.experiments.settings.TrialSettings`)
is a flag of the trial command, the same for every trial. The NNI manager is unauthenticated, so the
parameters it sends are untrusted: they are read as plain JSON (never with ``nni.load``, which can
import and call what the text names) and must be exactly ``{"strategy": one of --strategies, "seed":
an integer}``; anything else makes the trial print one line and fail before it does anything. A trial

1. **searches** an architecture with its strategy (``cooperative``, ``separate``, ``joint``,
   ``darts``, ``gumbel-darts``) on the unpaired images, reporting after every search epoch an NNI
   intermediate result ``{"default": psnr, "psnr", "ssim", "val_loss", "val_iem", "val_nrm", "epoch"}``:
   PSNR (dB) and SSIM on the evaluation pairs of the network the search would derive at that point
   (each edge's argmax operation, with the supernet's weights of that operation), and the supernet's
   reference-free losses on the search's validation images; it writes ``search/arch.json``
   (genotype plus the architecture probabilities);
2. **trains** the exported network for ``--train-steps`` steps with the reference recipe;
3. **evaluates** it on the paired images (PSNR / SSIM as ``ruas-nni evaluate`` computes them), counts
   its parameters and FLOPs (600 x 400 input, paper Table 2) and times it (``ms``: the optimised
   engine's milliseconds per 600 x 400 image), and reports the final metric
   ``{"default": psnr, "psnr", "ssim", "params", "flops", "ms", "search_seconds", "train_seconds",
   "strategy", "seed", "genotype"}`` (the genotype as a JSON string, which the web UI shows as text).

Everything goes to the trial's output folder (``$NNI_OUTPUT_DIR``): ``search/arch.json``,
``train/model.pt``, ``result.json``, and TensorBoard logs under ``tensorboard/`` (``search/``,
``train/``, ``eval/``), where the web UI's TensorBoard button looks. Outside NNI (no
``NNI_PLATFORM``), ``--strategy``, ``--seed`` and ``--out`` say what to run and where, and the results
are printed instead of reported.

This module is the command line only; the work is :mod:`ruas_nni.experiments.trial_runner`'s.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Sequence

from ..base.errors import RuasError, UsageError
from ..base.quiet import quiet_dependencies
from ..base.threads import set_torch_threads
from ..search.config import STRATEGIES
from .settings import ParameterError, TrialSettings, validate_parameters
from .trial_runner import (
    NniReporter,
    PrintReporter,
    Reporter,
    link_tensorboard_for_web_ui,
    nni_parameters,
    require_eval_data,
    run_trial,
)

__all__ = ["REFUSED", "build_parser", "main"]

_log = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m ruas_nni.experiments.trial", allow_abbrev=False,
        description="One trial of `ruas-nni compare`: search, train and evaluate. Every path and setting comes "
                    "from these flags; from NNI's tuner only the strategy (one of --strategies) and an integer "
                    "seed (or --strategy / --seed outside NNI).")
    TrialSettings.add_arguments(parser)
    parser.add_argument("--strategy", choices=STRATEGIES, default=None, help="outside NNI: the strategy")
    parser.add_argument("--seed", type=int, default=None, help="outside NNI: the seed (default 0)")
    parser.add_argument("--out", default=None, help="outside NNI: output folder (inside: $NNI_OUTPUT_DIR)")
    return parser


def _flag(key: str) -> str:
    return "--" + key.replace("_", "-")


def _parameters(args: argparse.Namespace, settings: TrialSettings) -> tuple[str, int, Reporter, Path]:
    """Strategy, seed, reporter and output folder: from NNI when running as a trial (only strategy and
    seed, validated), else from flags."""
    in_nni = bool(os.environ.get("NNI_PLATFORM")) and os.environ.get("NNI_PLATFORM") != "unittest"
    if in_nni:
        strategy, seed = validate_parameters(nni_parameters(), settings.strategies)
        out = Path(os.environ.get("NNI_OUTPUT_DIR") or args.out or ".")
        link_tensorboard_for_web_ui(out, os.environ.get("NNI_TRIAL_JOB_ID"))
        reporter: Reporter = NniReporter()
    else:
        if args.strategy is None:
            raise UsageError(f"no strategy: pass --strategy (one of {', '.join(settings.strategies)})")
        strategy, seed = validate_parameters({"strategy": args.strategy, "seed": args.seed or 0}, settings.strategies)
        if args.out is None:
            raise UsageError("--out is required outside an NNI experiment")
        out = Path(args.out)
        reporter = PrintReporter()
    return strategy, seed, reporter, out


REFUSED = "ruas-nni trial: refused NNI parameters: "
"""The start of the one line a trial prints when it refuses the parameters the manager sent."""


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = TrialSettings.from_namespace(args)
        require_eval_data(settings)
        strategy, seed, reporter, out = _parameters(args, settings)
    except ParameterError as exc:
        print(REFUSED + " ".join(str(exc).split()), file=sys.stderr, flush=True)
        return 1
    except (RuasError, ValueError) as exc:
        message = exc.spelled(_flag) if isinstance(exc, RuasError) else str(exc)
        print(f"ruas-nni trial: error: {message}", file=sys.stderr, flush=True)
        return getattr(exc, "exit_code", 2)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    quiet_dependencies()
    try:
        set_torch_threads(settings.threads)  # default 1: fastest on shared cores (docs/speed.md)
        _log.info("trial: strategy %s, seed %d, output %s", strategy, seed, out)
        result = run_trial(settings, strategy, seed, out, reporter)
    except RuasError as exc:
        print(f"ruas-nni trial: error: {exc.spelled(_flag)}", file=sys.stderr)
        return exc.exit_code
    _log.info("trial done: PSNR %.3f dB, SSIM %.4f", result.metrics["psnr"], result.metrics["ssim"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
