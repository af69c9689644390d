"""``ruas-nni evaluate``: PSNR and SSIM of a model on paired low-light / ground-truth images."""

from __future__ import annotations

import argparse
import sys

from ruas_nni.cli._arguments import add_exposure_argument

ORDER = 40
HELP = "score a model on paired images (PSNR / SSIM per image and mean)"

DESCRIPTION = """\
Enhance every image of PAIRED_DIR/low and score it against PAIRED_DIR/high (same file names).

Scores follow the project's reference definitions (the ones of the authors' LOL checkpoint's
16.446 dB / 0.4993 on the 15 LOL test pairs): the output is clamped to [0, 1] and rounded to 8 bits;
PSNR over RGB with data range 1; SSIM with an 11x11 Gaussian window (sigma 1.5) per channel, averaged,
data range 1 (torchmetrics). The mean is the plain mean over images.

A diagnostic beside the scores: the same metrics after scaling each output so that its mean equals
its ground truth's ("exposure-matched"; separates wrong exposure from everything else), and the
mean brightness of the output and of the ground truth.

--json OUT writes {"mean": {"psnr", "ssim"}, "per_image": {"<name>": {"psnr", "ssim"}},
"exposure_matched": {"mean": {...}, "per_image": {...}}} (psnr, ssim, output_brightness,
reference_brightness).
--side-by-side DIR writes DIR/<name>.png showing input | ours | reference (ground truth), labelled.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "evaluate", help=HELP, description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--checkpoint", metavar="PATH", default=None,
                        help="model to score (default: the model shipped with ruas-nni); ours or the authors' lol/upe/dark.pt")
    parser.add_argument("--data", required=True, metavar="PAIRED_DIR", help="folder with low/ and high/ sub-folders")
    parser.add_argument("--stage", choices=("final", "iem"), default="final",
                        help="score the final output (IEM + NRM, default) or the IEM output (meant for upe.pt, dark.pt)")
    parser.add_argument("--json", metavar="OUT", default=None, help="also write the scores as JSON")
    parser.add_argument("--side-by-side", metavar="DIR", default=None,
                        help="write labelled input | ours | reference pictures into DIR")
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda or auto")
    add_exposure_argument(parser)
    parser.add_argument("--quiet", action="store_true", help="no progress bar (bars are drawn only on a terminal)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from tqdm import tqdm

    from ruas_nni.base.errors import UsageError
    from ruas_nni.base.quiet import show_progress
    from ruas_nni.inference.enhance import load_model, resolve_device
    from ruas_nni.inference.evaluation import evaluate, find_pairs, format_table

    pairs = find_pairs(args.data)
    if args.json is not None and Path(args.json).is_dir():
        raise UsageError(f"--json {args.json}: is a folder, expected a file name")
    if args.side_by_side is not None and Path(args.side_by_side).exists() and not Path(args.side_by_side).is_dir():
        raise UsageError(f"--side-by-side {args.side_by_side}: exists and is not a folder")
    device = resolve_device(args.device)
    checkpoint, _ = load_model(args.checkpoint)
    if args.exposure is not None or args.exposure_gamma is not None:
        checkpoint = checkpoint.with_exposure(args.exposure, args.exposure_gamma)

    def progress(items):
        return tqdm(items, desc="evaluate", unit="img", disable=not show_progress(args.quiet), file=sys.stderr)

    result = evaluate(checkpoint, pairs, stage=args.stage, device=device,
                      side_by_side_dir=args.side_by_side, progress=progress)
    print(format_table(result))
    written = []
    if args.json is not None:
        result.write_json(args.json)
        written.append(f"scores to {args.json}")
    if args.side_by_side is not None:
        written.append(f"{len(result.per_image)} side-by-side pictures (input | ours | reference) to {args.side_by_side}")
    print(f"wrote {' and '.join(written)}" if written else f"scored {len(result.per_image)} pairs (nothing written; "
          "--json and --side-by-side write files)")
    return 0
