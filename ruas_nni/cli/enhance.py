"""``ruas-nni enhance``: enhance image files and folders into PNGs."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ORDER = 50
HELP = "enhance low-light images (files or folders) into PNGs"

DESCRIPTION = """\
Enhance low-light images with a RUAS network. Each INPUT is an image file or a folder of images;
each result is OUTDIR/<input stem>.png at the input's size (16-bit for 16-bit inputs, alpha kept).

Checkpoints: a ruas-nni model.pt (from `ruas-nni train`), or one of the authors' RUAS checkpoints
(lol.pt, upe.pt, dark.pt), recognised by their keys. The authors meant lol.pt for the final output
and upe.pt / dark.pt for the IEM output: use --stage iem with those two.

Exit status: 0 when every input was enhanced, 1 when some inputs failed (each named on stderr),
2 for bad flags or an unusable checkpoint.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "enhance", help=HELP, description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="image files or folders of images")
    parser.add_argument("-o", "--out", required=True, metavar="OUTDIR", help="folder for the enhanced PNGs")
    parser.add_argument("--checkpoint", metavar="PATH", default=None,
                        help="model to use (default: the model shipped with ruas-nni)")
    parser.add_argument("--stage", choices=("final", "iem"), default="final",
                        help="write the final output (IEM + NRM, default) or the IEM output only")
    parser.add_argument("--device", default="auto", help="auto (default: CUDA when available), cpu or cuda")
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs (default: keep them)")
    parser.add_argument("--recursive", action="store_true", help="also look into sub-folders of folder inputs")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ruas_nni.data import ImageReadError, find_images, read_image, write_png
    from ruas_nni.enhance import Enhancer, load_model, resolve_device
    from ruas_nni.errors import UsageError

    try:
        inputs = find_images(args.inputs, recursive=args.recursive)
    except FileNotFoundError as exc:
        raise UsageError(f"INPUT {exc.args[0]}: no such file or folder") from None
    if not inputs:
        raise UsageError(f"no images found in {', '.join(args.inputs)}")
    out_dir = Path(args.out)
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"-o {out_dir}: exists and is not a folder")

    checkpoint, _ = load_model(args.checkpoint)
    enhancer = Enhancer(checkpoint, stage=args.stage, device=resolve_device(args.device))

    resolved_inputs = {p.resolve() for p in inputs}
    failures = 0
    skipped = 0
    for path in tqdm(inputs, desc="enhance", unit="img", disable=args.quiet, file=sys.stderr):
        target = out_dir / f"{path.stem}.png"
        if target.resolve() in resolved_inputs:
            print(f"{path}: skipped: its output {target} would overwrite an input", file=sys.stderr)
            failures += 1
            continue
        if target.exists() and not args.overwrite:
            skipped += 1
            continue
        try:
            image = read_image(path)
        except ImageReadError as exc:
            print(f"{path}: {exc}", file=sys.stderr)
            failures += 1
            continue
        write_png(target, enhancer(image.rgb), image.alpha, image.bit_depth)
    if skipped:
        print(f"kept {skipped} existing output(s) in {out_dir} (use --overwrite to replace them)", file=sys.stderr)
    if failures:
        print(f"{failures} of {len(inputs)} input(s) failed", file=sys.stderr)
        return 1
    return 0
