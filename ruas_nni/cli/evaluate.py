"""``ruas-nni evaluate``: PSNR and SSIM of a model on paired low-light / ground-truth images, or
no-reference artefact measures of an enhancement against its low-light inputs."""

from __future__ import annotations

import argparse
import sys

from ruas_nni.cli._arguments import add_exposure_argument, whole_number

ORDER = 40
HELP = "score a model on paired images (PSNR / SSIM), or any enhancement on real photos (--no-reference)"

DESCRIPTION = """\
Paired (--data PAIRED_DIR): enhance every image of PAIRED_DIR/low and score it against
PAIRED_DIR/high (same file names).

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

No reference (real photos without ground truth; docs/no_reference.md):
  --no-reference LOW_DIR                   enhance every image of LOW_DIR with the model and measure
                                           each output (clamped, rounded to 8 bits) against its input
  --no-reference OUTPUT_DIR --inputs LOW_DIR
                                           measure images enhanced elsewhere (e.g. another method's
                                           outputs) against their inputs, matched by file stem; no model runs
On 8-bit values, "max" a pixel's largest channel: clip = fraction of pixels with output max >= 250
and input max < 200; crush = output max <= 5 and input max >= 3; bright = mean output (0..1);
post = fraction of adjacent pixel pairs whose input max differs by <= 1 and output max by >= 8;
cast = 100 x the largest shift of mean chromaticity (r,g,b)/(r+g+b) over pixels with input max >= 12
and output max in 26..229. The table ends with the mean and the worst photo's value (max; min for
bright). --json OUT writes {"mean", "worst", "worst_image", "per_image", "settings"};
--contact-sheet PATH.png shows input | output of the --sheet-rows photos with the largest
clip + crush + post + cast/100.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "evaluate", help=HELP, description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--checkpoint", metavar="PATH", default=None,
                        help="model to score (default: the model shipped with ruas-nni); ours or the authors' lol/upe/dark.pt")
    parser.add_argument("--data", metavar="PAIRED_DIR",
                        help="paired scores: folder with low/ and high/ sub-folders (required unless --no-reference)")
    parser.add_argument("--no-reference", metavar="DIR", default=None,
                        help="no-reference measures instead of paired scores: DIR holds low-light photos to enhance "
                             "with the model, or, with --inputs, outputs already enhanced")
    parser.add_argument("--inputs", metavar="LOW_DIR", default=None,
                        help="with --no-reference: the low-light inputs of the enhanced images in DIR (same file "
                             "stems, any readable format); no model runs")
    parser.add_argument("--contact-sheet", metavar="PATH.png", default=None,
                        help="with --no-reference: write a PNG of input | output of the photos with the largest "
                             "artefact score (clip + crush + post + cast/100), each row labelled with its measures")
    parser.add_argument("--sheet-rows", type=whole_number(1, 100), default=8, metavar="N",
                        help="photos on the contact sheet (default 8)")
    parser.add_argument("--stage", choices=("final", "iem"), default="final",
                        help="score the final output (IEM + NRM, default) or the IEM output (meant for upe.pt, dark.pt)")
    parser.add_argument("--json", metavar="OUT", default=None, help="also write the scores as JSON")
    parser.add_argument("--side-by-side", metavar="DIR", default=None,
                        help="write labelled input | ours | reference pictures into DIR")
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda or auto")
    add_exposure_argument(parser)
    parser.add_argument("--quiet", action="store_true", help="no progress bar (bars are drawn only on a terminal)")
    parser.set_defaults(func=run)


def _check_modes(args: argparse.Namespace) -> None:
    """One line for a wrong combination of the two modes' flags, before anything runs."""
    from ruas_nni.base.errors import UsageError

    if args.data is None and args.no_reference is None:
        raise UsageError("give `data` PAIRED_DIR (paired PSNR / SSIM) or `no_reference` DIR (real photos without "
                         "ground truth)", keys=("data", "no_reference"))
    if args.data is not None and args.no_reference is not None:
        raise UsageError("`data` and `no_reference` are two modes: give one of them", keys=("data", "no_reference"))
    if args.data is not None:
        for key in ("inputs", "contact_sheet"):
            if getattr(args, key) is not None:
                raise UsageError(f"`{key}` belongs to `no_reference`; it has no meaning with `data`",
                                 keys=(key, "no_reference", "data"))
    else:
        if args.side_by_side is not None:
            raise UsageError("`side_by_side` shows the ground truth and belongs to `data`; with `no_reference` "
                             "use `contact_sheet`", keys=("side_by_side", "data", "no_reference", "contact_sheet"))
        if args.inputs is not None:
            for key in ("checkpoint", "exposure", "exposure_gamma"):
                if getattr(args, key) is not None:
                    raise UsageError(f"`{key}` has no effect with `inputs`: the images of `no_reference` are "
                                     "measured as they are, no model runs", keys=(key, "inputs", "no_reference"))


def _check_outputs(args: argparse.Namespace) -> None:
    from pathlib import Path

    from ruas_nni.base.errors import UsageError

    if args.json is not None and Path(args.json).is_dir():
        raise UsageError(f"--json {args.json}: is a folder, expected a file name")
    sheet = getattr(args, "contact_sheet", None)
    if sheet is not None:
        if Path(sheet).is_dir():
            raise UsageError(f"--contact-sheet {sheet}: is a folder, expected a file name ending in .png")
        if Path(sheet).suffix.lower() != ".png":
            raise UsageError(f"--contact-sheet {sheet}: expected a file name ending in .png")


def _progress(args: argparse.Namespace, what: str):
    from tqdm import tqdm

    from ruas_nni.base.quiet import show_progress

    def progress(items):
        return tqdm(items, desc=what, unit="img", disable=not show_progress(args.quiet), file=sys.stderr)

    return progress


def run_no_reference(args: argparse.Namespace) -> int:
    from ruas_nni.base.atomic import atomic_write
    from ruas_nni.inference.enhance import load_model, resolve_device
    from ruas_nni.inference.no_reference import (
        contact_sheet,
        evaluate_no_reference,
        find_low_light,
        format_table,
        match_outputs,
    )

    _check_outputs(args)
    rows = args.sheet_rows if args.contact_sheet is not None else 0
    settings: dict[str, object]
    if args.inputs is not None:
        photos = match_outputs(args.no_reference, args.inputs)
        result = evaluate_no_reference(photos, sheet_rows=rows, progress=_progress(args, "measure"))
        settings = {"mode": "outputs", "outputs": str(args.no_reference), "inputs": str(args.inputs)}
    else:
        photos = find_low_light(args.no_reference)
        device = resolve_device(args.device)
        checkpoint, path = load_model(args.checkpoint)
        if args.exposure is not None or args.exposure_gamma is not None:
            checkpoint = checkpoint.with_exposure(args.exposure, args.exposure_gamma)
        result = evaluate_no_reference(photos, checkpoint, stage=args.stage, device=device, sheet_rows=rows,
                                       progress=_progress(args, "evaluate"))
        settings = {"mode": "model", "inputs": str(args.no_reference), "checkpoint": str(path), "stage": args.stage,
                    "exposure": args.exposure, "exposure_gamma": args.exposure_gamma}
    print(format_table(result))
    sheet = contact_sheet(result) if args.contact_sheet is not None else None  # made before anything is written
    written = []
    if args.json is not None:
        result.write_json(args.json, extra={"settings": settings})
        written.append(f"measures to {args.json}")
    if sheet is not None:
        with atomic_write(args.contact_sheet) as handle:
            handle.write(sheet)
        written.append(f"a contact sheet of the {len(result.sheet)} worst photos (input | output) to {args.contact_sheet}")
    print(f"wrote {' and '.join(written)}" if written else f"measured {len(result.per_image)} photos (nothing written; "
          "--json and --contact-sheet write files)")
    return 0


def run(args: argparse.Namespace) -> int:
    _check_modes(args)
    if args.no_reference is not None:
        return run_no_reference(args)
    return run_paired(args)


def run_paired(args: argparse.Namespace) -> int:
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
