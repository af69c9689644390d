"""Milliseconds per image of several checkpoints on the optimised engine, timed side by side.

``ruas-nni benchmark`` measures one model per call, in child processes; on a small shared machine
two calls minutes apart can differ by more than the models do. This script opens every checkpoint
in one process (``ruas_nni.inference.opener.open_enhancer``, engine ``auto``: what ``ruas-nni
enhance`` runs) and times them alternately on the same random image, so that whatever else the
machine does slows them alike; it prints, per checkpoint, the fastest and the median time and their
ratios to the first checkpoint's.

    python benchmarks/side_by_side.py ../shared/reference/ruas_official/lol.pt ruas_nni/pretrained/default.pt
    python benchmarks/side_by_side.py A.pt B.pt --size 1920x1080 --rounds 20 --json times.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from ruas_nni.base.atomic import atomic_write
from ruas_nni.inference.benchmark import parse_size
from ruas_nni.inference.latency import time_alternately
from ruas_nni.model.checkpoint import load_checkpoint


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoints", nargs="+", help="checkpoints to time; ratios are to the first")
    parser.add_argument("--size", default="600x400", help="image size WxH (default 600x400)")
    parser.add_argument("--rounds", type=int, default=40, help="alternated images per checkpoint (default 40)")
    parser.add_argument("--json", help="also write the times as JSON")
    args = parser.parse_args(argv)
    try:
        width, height = parse_size(args.size)
    except ValueError as exc:
        print(f"side_by_side.py: --size: {exc}", file=sys.stderr)
        return 2
    if args.rounds < 1:
        print("side_by_side.py: --rounds must be at least 1", file=sys.stderr)
        return 2
    names = [str(Path(p)) for p in args.checkpoints]
    times = time_alternately([load_checkpoint(p) for p in names], (width, height), args.rounds)
    fastest = [min(t) for t in times]
    medians = [statistics.median(t) for t in times]
    print(f"ms per {width}x{height} image, {args.rounds} alternated runs each (engine auto)")
    for name, low, mid in zip(names, fastest, medians):
        print(f"  {name}: fastest {low:.2f} ({low / fastest[0]:.2f}x), median {mid:.2f} ({mid / medians[0]:.2f}x)")
    if args.json:
        with atomic_write(Path(args.json)) as handle:
            handle.write((json.dumps({"size": [width, height], "rounds": args.rounds,
                                      "ms": dict(zip(names, times))}, indent=1) + "\n").encode())
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
