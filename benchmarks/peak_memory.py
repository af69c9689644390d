"""Peak resident memory of ``ruas-nni enhance`` on a 3840x2160 and a 7680x4320 photo.

The photos are made by resizing a real 1080x1920 low-light photo from
``../shared/data/unpaired/zerodce_real`` (bicubic, rotated to landscape) into a temporary folder;
each size runs as its own ``python -m ruas_nni enhance`` process, and its peak resident set size
is read with ``resource.getrusage(RUSAGE_CHILDREN)`` (the same number as ``/usr/bin/time -v``'s
"Maximum resident set size"). The targets of issue 13 are < 1 GB at 4K and < 1.5 GB at 8K.

Usage: ``python benchmarks/peak_memory.py [--checkpoint lol.pt] [--size 3840x2160 ...] [-- extra enhance flags]``
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("RUAS_SHARED", ROOT.parent / "shared"))
LIMITS_MB = {(3840, 2160): 1000, (7680, 4320): 1500}


def make_photo(size: tuple[int, int], target: Path) -> Path:
    from PIL import Image

    folder = SHARED / "data" / "unpaired" / "zerodce_real"
    if not folder.is_dir():
        sys.exit(f"needs {folder} (the project's ../shared material)")
    for path in sorted(folder.iterdir()):
        with Image.open(path) as image:
            if image.width * image.height >= 1080 * 1920:
                photo = image.convert("RGB")
                break
    else:
        sys.exit(f"no 1080x1920 photo in {folder}")
    if photo.width < photo.height:
        photo = photo.transpose(Image.Transpose.ROTATE_90)
    target.mkdir(parents=True, exist_ok=True)
    out = target / f"photo_{size[0]}x{size[1]}.png"
    photo.resize(size, Image.Resampling.BICUBIC).save(out, compress_level=1)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=str(SHARED / "reference" / "ruas_official" / "lol.pt"))
    parser.add_argument("--size", action="append", help="WxH (default 3840x2160 and 7680x4320)")
    parser.add_argument("extra", nargs="*", help="more `ruas-nni enhance` flags (after --)")
    args = parser.parse_args(argv)
    sizes = [tuple(int(v) for v in s.split("x")) for s in args.size] if args.size else list(LIMITS_MB)
    work = Path(tempfile.mkdtemp(prefix="ruas-memory-"))
    try:
        print(f"{'size':>10} {'peak RSS MB':>12} {'limit MB':>9} {'wall s':>7}")
        for size in sizes:
            photo = make_photo(size, work / f"in-{size[0]}")
            before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
            start = time.perf_counter()
            result = subprocess.run([sys.executable, "-m", "ruas_nni", "enhance", str(photo.parent), "-o",
                                     str(work / f"out-{size[0]}"), "--checkpoint", args.checkpoint, "--quiet",
                                     *args.extra], capture_output=True, text=True)
            elapsed = time.perf_counter() - start
            if result.returncode != 0:
                sys.exit(f"enhance failed: {result.stderr[-2000:]}")
            peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
            # ru_maxrss of the children is the largest of any child so far: sizes run smallest first.
            note = "" if peak > before else " (not above an earlier child's peak)"
            limit = LIMITS_MB.get(size)
            print(f"{size[0]}x{size[1]:<5} {peak / 1024:12.0f} {limit or '-':>9} {elapsed:7.1f}{note}", flush=True)
        print("load average: " + ", ".join(f"{x:.2f}" for x in os.getloadavg()))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
