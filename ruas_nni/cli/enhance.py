"""``ruas-nni enhance``: enhance image files and folders into PNGs."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ruas_nni.cli._arguments import add_exposure_argument, whole_number

ORDER = 50
HELP = "enhance low-light images (files or folders) into PNGs"

DESCRIPTION = """\
Enhance low-light images with a RUAS network. Each INPUT is an image file or a folder of images;
each result is OUTDIR/<input stem>.png at the input's size (16-bit for 16-bit inputs, alpha kept).
With --recursive, images in sub-folders keep their sub-folder below OUTDIR.

Inputs are never overwritten: when an output would be an input file (OUTDIR is the input folder),
it is written as <stem>_enhanced.png; inputs that would share an output (a.jpg, a.png) become
a_jpg.png and a_png.png. Each rename is said on stderr. Existing outputs are kept unless
--overwrite. Outputs are written under a temporary name and renamed when complete.

Checkpoints: a ruas-nni model.pt (from `ruas-nni train`), or one of the authors' RUAS checkpoints
(lol.pt, upe.pt, dark.pt), recognised by their keys. The authors meant lol.pt for the final output
and upe.pt / dark.pt for the IEM output: use --stage iem with those two.

Speed: the network is folded for inference and runs on one worker thread per CPU core, on tiles
with an exact halo whose size follows --memory-budget (bounded memory: a 3840x2160 image peaks
below 1 GB resident, a 7680x4320 one below 1.5 GB); 8-bit images stay 8-bit outside the tiles, and
are decoded and encoded in background threads. On CPU the folded network runs as C generated for
its architecture and compiled once with the system's C compiler (the native engine), or in ONNX
Runtime where there is no compiler. The checkpoint's folded graph and the compiled code are cached
in $RUAS_NNI_CACHE_DIR, else $XDG_CACHE_HOME/ruas-nni, else ~/.cache/ruas-nni (delete the folder to
clear it; --no-cache or RUAS_NNI_NO_CACHE=1 bypass it), so that later runs start without importing
PyTorch or compiling. See docs/speed.md.

Exit status: 0 when every input was enhanced (or its output kept), 1 when some inputs failed (each
named on stderr in one line), 2 for bad flags or an unusable checkpoint.
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
    add_exposure_argument(parser)
    parser.add_argument("--quiet", action="store_true", help="no progress bar (bars are drawn only on a terminal)")
    speed = parser.add_argument_group("speed")
    speed.add_argument("--workers", type=whole_number(0), default=0, metavar="N",
                       help="CPU worker threads (default 0: one per core)")
    speed.add_argument("--memory-budget", type=whole_number(16), default=None, metavar="MB",
                       help="working memory of the network on CPU, all tiles in flight together, in MB "
                            "(default 128 per worker); the tile size follows from it")
    speed.add_argument("--tile-pixels", type=whole_number(0), default=None, metavar="N",
                       help="largest tile, halo included, in pixels, instead of --memory-budget (default on "
                            "CUDA 9000000; 0: never tile). Tiles are exact: the halo covers the network's "
                            "receptive field")
    speed.add_argument("--png-compression", type=whole_number(0, 9), default=None, metavar="0-9",
                       help="zlib level of 8-bit PNG outputs (default: zlib's run-length strategy, as small as "
                            "Pillow's default level 6 and 2-3x faster to write)")
    speed.add_argument("--engine", choices=("auto", "torch", "onnxruntime", "native"), default="auto",
                       help="CPU engine for the folded network. native: C generated for the network's "
                            "architecture, compiled once with the system's C compiler (cc, gcc or clang; $CC) "
                            "and cached, about 3x faster than onnxruntime; onnxruntime: the folded ONNX graph; "
                            "torch: PyTorch. Default auto: native when a C compiler is found (onnxruntime with "
                            "a warning if it fails to build), else onnxruntime; with --no-cache onnxruntime. "
                            "See docs/speed.md")
    speed.add_argument("--no-cache", action="store_true",
                       help="neither read nor write the cache (default: each checkpoint's folded graph and the "
                            "native engine's compiled code are kept in ~/.cache/ruas-nni, so later runs start "
                            "without PyTorch and without compiling; RUAS_NNI_CACHE_DIR moves it; see "
                            "docs/speed.md)")
    speed.add_argument("--half", action="store_true", help="float16 on the GPU (needs --device cuda)")
    speed.add_argument("--no-cuda-graphs", action="store_true", help="on CUDA, do not replay CUDA graphs")
    speed.add_argument("--compile", action="store_true",
                       help="torch.compile the network (long start-up; slower than the default on CPU)")
    speed.add_argument("--layout", choices=("nchw", "nhwc", "iem-nhwc"), default="nchw",
                       help="memory layout of the folded network on CPU (default nchw; see docs/speed.md)")
    speed.add_argument("--no-fold", action="store_true",
                       help="run the network exactly as trained instead of its folded inference form")
    parser.set_defaults(func=run)


def _collect_sources(arguments: list[str], recursive: bool) -> list[tuple[Path, Path | None]]:
    from ruas_nni.base.errors import UsageError
    from ruas_nni.base.images import find_images

    sources: list[tuple[Path, Path | None]] = []
    for argument in arguments:
        path = Path(argument)
        try:
            found = find_images([path], recursive=recursive)
        except FileNotFoundError:
            raise UsageError(f"INPUT {argument}: no such file or folder") from None
        except OSError as exc:
            raise UsageError(f"INPUT {argument}: cannot list ({exc.strerror or exc})") from None
        root = path if path.is_dir() else None
        sources.extend((file, root) for file in found)
    return sources


def run(args: argparse.Namespace) -> int:
    import time

    from ruas_nni.base.errors import UsageError
    from ruas_nni.base.quiet import show_progress
    from ruas_nni.inference.files import enhance_files, plan_jobs, tune_allocator
    from ruas_nni.inference.opener import open_enhancer

    sources = _collect_sources(args.inputs, args.recursive)
    if not sources:
        raise UsageError(f"no images found in {', '.join(args.inputs)}")
    out_dir = Path(args.out)
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"-o {out_dir}: exists and is not a folder")

    tune_allocator()
    enhancer = open_enhancer(args.checkpoint, args.engine, stage=args.stage, device=args.device, fold=not args.no_fold,
                             half=args.half, compile=args.compile, cuda_graphs=not args.no_cuda_graphs,
                             workers=args.workers or None, max_tile_pixels=args.tile_pixels, layout=args.layout,
                             memory_budget=args.memory_budget, exposure=args.exposure,
                             exposure_gamma=args.exposure_gamma, use_cache=not args.no_cache)
    plan = plan_jobs(sources, out_dir, overwrite=args.overwrite)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"-o {out_dir}: cannot create the folder ({exc.strerror or exc})") from None

    from tqdm import tqdm

    started = time.monotonic()
    progress = tqdm(total=len(plan.jobs), desc="enhance", unit="img", disable=not show_progress(args.quiet),
                    file=sys.stderr)

    def say(line: str) -> None:
        progress.write(line, file=sys.stderr)

    for note in plan.notes:
        say(f"note: {note}")
    with enhancer:
        summary = enhance_files(
            enhancer, plan.jobs,
            png_compression=args.png_compression,
            on_error=lambda path, reason: (say(f"{path}: {reason}"), progress.update(1)),
            on_done=lambda job: progress.update(1),
        )
    progress.close()
    if plan.existing:
        print(f"kept {len(plan.existing)} existing output(s) in {out_dir} (use --overwrite to replace them)",
              file=sys.stderr)
    if summary.failed:
        print(f"{len(summary.failed)} of {len(plan.jobs) + len(plan.existing)} input(s) failed", file=sys.stderr)
    print(f"wrote {len(summary.written)} enhanced PNG(s) into {out_dir} in {time.monotonic() - started:.1f} s")
    return 1 if summary.failed else 0
