"""``ruas-nni report``: Markdown tables and PNG plots of an NNI experiment of ruas-nni."""

from __future__ import annotations

import argparse

ORDER = 72
HELP = "tables and plots (PSNR vs parameters, alpha heatmaps) of a compare or nas experiment"

DESCRIPTION = """\
Read an NNI experiment's stored data (EXPERIMENT_DIR/db/nni.sqlite, and the trials' search/arch.json
where their output folders are on this machine) and write, into --out (default report-<id>):

  report.md            per strategy: mean, sample std and range over seeds of PSNR, SSIM,
                       parameters, FLOPs, ms per 600x400 image and search time; every trial; the
                       trials on the Pareto front of PSNR and ms; failed trials and their logs
  psnr_vs_params.png   PSNR against parameters, one dot per trial (the paper's Fig. 1)
  psnr_vs_ms.png       PSNR against ms per 600x400 (optimised engine), with the Pareto front
  alphas_<s>.png       IEM and NRM architecture probabilities as 7x7 heatmaps (the paper's Fig. 9)
  alphas.png           all strategies' heatmaps, stacked

EXPERIMENT_ID_OR_DIR is an experiment id (looked up in nnictl's experiment list, then in
--experiment-dir and ~/nni-experiments) or the experiment's folder. Works while the experiment runs.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "report", help=HELP, description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("experiment", metavar="EXPERIMENT_ID_OR_DIR", help="NNI experiment id or folder")
    parser.add_argument("--out", default=None, metavar="DIR", help="output folder (default: report-<experiment id>)")
    parser.add_argument("--experiment-dir", default=None, metavar="DIR",
                        help="NNI experiment working directory to look for the id in")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ruas_nni.experiments.report import write_report

    report = write_report(args.experiment, args.out, args.experiment_dir)
    plots = sorted(report.parent.glob("*.png"))
    for png in plots:
        print(f"plot: {png}")
    print(f"wrote {report} and {len(plots)} plot(s) into {report.parent}")
    return 0
