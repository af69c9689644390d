"""``ruas-nni benchmark``: parameters, FLOPs and latency of a network."""

from __future__ import annotations

import argparse

from ruas_nni.cli._arguments import whole_number

ORDER = 60
HELP = "parameters, FLOPs (PyTorch's counter) and latency: eager baselines vs the optimised engine"

DESCRIPTION = """\
Report, for one network: its parameters; its FLOPs for the whole network and the IEM alone at each
--size, counted by PyTorch's FLOP counter (a multiply-add counts as 2 FLOPs; the paper's Table 2
"GFLOPs" are multiply-adds, so compare those with the GMACs column); and, unless --no-latency, the
latency in ms per image and the peak memory of three paths: the eager baseline (the network as
trained, run as the authors' script runs it), the layout-tuned eager baseline eager-channels-last
(the same network, weights and input in channels-last memory format, which alone is about twice as
fast on CPU) and the optimised engine of `ruas-nni enhance`, each measured in child
processes, alternated, at --latency-size (default 600x400 and 1920x1080; GPU paths too when CUDA is
available).

Without --checkpoint: the shipped default model when there is one, else the paper genotype with
random weights (parameters and FLOPs do not depend on the weights; latency hardly does).
"""


def _size(text: str) -> tuple[int, int]:
    from ruas_nni.inference.benchmark import parse_size

    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("benchmark", help=HELP, description=DESCRIPTION,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", metavar="PATH", default=None, help="network to measure (see above)")
    parser.add_argument("--size", type=_size, action="append", metavar="WxH",
                        help="image size for FLOPs, repeatable (default 600x400, the paper's Table 2)")
    parser.add_argument("--latency-size", type=_size, action="append", metavar="WxH",
                        help="image size for latency, repeatable (default 600x400 and 1920x1080)")
    parser.add_argument("--stage", choices=("final", "iem"), default="final", help="output whose latency is measured")
    parser.add_argument("--rounds", type=whole_number(1), default=2, help="alternated child processes per path (default 2)")
    parser.add_argument("--runs", type=whole_number(1), default=3, help="timed images per size in each child (default 3)")
    parser.add_argument("--no-latency", action="store_true", help="parameters and FLOPs only")
    parser.add_argument("--json", metavar="OUT", help="also write the results as JSON")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from ruas_nni.base.atomic import atomic_write
    from ruas_nni.base.errors import UsageError
    from ruas_nni.inference.benchmark import format_report, run_benchmark
    from ruas_nni.model.checkpoint import load_checkpoint

    if args.checkpoint is not None:
        load_checkpoint(args.checkpoint)  # refuse an unusable file up front, in one line
    try:
        report = run_benchmark(args.checkpoint, sizes=args.size or [(600, 400)], latency_sizes=args.latency_size,
                               rounds=args.rounds, runs=args.runs, stage=args.stage, latency=not args.no_latency)
    except RuntimeError as exc:
        raise UsageError(str(exc)) from None
    print(format_report(report))
    if args.json:
        with atomic_write(Path(args.json)) as handle:
            handle.write((json.dumps(report, indent=2) + "\n").encode())
        print(f"wrote {args.json}")
    return 0
