"""Whole-process speed of ``ruas-nni enhance`` against the reference-style script.

Builds a folder of 16 real low-light photos from ``../shared/data/unpaired`` (500x375 up to
1080x1920), then runs, as separate processes, alternated, ``--rounds`` times each:

* ``reference``: ``benchmarks/reference_enhance.py`` (the authors' inference, see there);
* ``reference, 1 thread``: the same with ``OMP_NUM_THREADS=1``: on a machine where other work keeps a
  core busy, PyTorch's two OpenMP threads wait on each other and the default reference becomes very
  slow; one thread is the conservative baseline then;
* ``ruas-nni``: ``python -m ruas_nni enhance DIR -o OUT --checkpoint lol.pt --stage final --quiet``;
* with ``--variants``, ``ruas-nni`` with one optimisation turned off at a time;
* with ``--baseline channels-last``, the reference with the network and input in channels-last memory
  format (``reference_enhance.py --channels-last``: the layout-tuned baseline of issue 13), with
  PyTorch's default threads and with ``OMP_NUM_THREADS=1``.

``--photos lol_val`` uses the 50 600x400 photos of ``../shared/data/lol_val/low`` instead of the 16
mixed photos; ``--photos lol81`` 81 photos of 600x400 as the reviewer's check has: those 50, the 15
of ``lol_eval15/low`` and the first 16 (by name) of ``unpaired/lol_low`` (for reporting only).

``ruas-nni enhance`` caches the ONNX graph of its checkpoint (``ruas_nni.inference.graph_cache``): here
in a private cache folder that starts empty, so its first run writes the graph (PyTorch imported) and
later ones start without PyTorch, as a user's runs do. ``--no-cache-run`` adds ``ruas-nni --no-cache``
(every run imports PyTorch and writes the graph).

Prints the median wall time of each, the ratio reference / each, and the largest difference of
``ruas-nni``'s outputs from the reference's, in 8-bit levels. Timings on a shared machine are noisy:
read the ratios (same run, interleaved), not the absolute numbers.

Usage: ``python benchmarks/enhance_speed.py [--checkpoint lol.pt] [--rounds 3] [--variants]
[--baseline channels-last] [--photos mixed|lol_val] [--json out.json]``
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("RUAS_SHARED", ROOT.parent / "shared"))

# (folder, (width, height), how many): 16 photos, 13.6 megapixels in all.
PHOTO_SET = [
    ("zerodce_real", (1080, 1920), 4),
    ("lime", (500, 375), 1),
    ("lime", (560, 420), 1),
    ("lime", (720, 680), 1),
    ("lime", (1039, 789), 1),
    ("dicm", (640, 480), 2),
    ("dicm", (800, 480), 2),
    ("dicm", (960, 720), 1),
    ("dicm", (960, 640), 1),
    ("sci_medium", (600, 400), 1),
    ("sci_medium", (960, 640), 1),
]

VARIANTS = {
    "no fold (network as trained)": ["--no-fold"],
    "one worker thread": ["--workers", "1"],
    "PNG zlib level 6": ["--png-compression", "6"],
    "no tiling": ["--tile-pixels", "0"],
    "glibc malloc defaults": [],  # RUAS_NNI_MALLOC_TUNING=0
}


def build_lol_val_folder(target: Path) -> list[Path]:
    """Link the 50 held-out 600x400 LOL photos into ``target`` (symbolic links, nothing copied)."""
    source = SHARED / "data" / "lol_val" / "low"
    if not source.is_dir():
        sys.exit(f"needs {source} (the project's ../shared material)")
    target.mkdir(parents=True, exist_ok=True)
    chosen = []
    for path in sorted(source.glob("*.png")):
        link = target / path.name
        link.symlink_to(path)
        chosen.append(link)
    return chosen


def build_lol81_folder(target: Path) -> list[Path]:
    """Link 81 LOL low-light photos of 600x400 into ``target``: lol_val's 50, eval15's 15, lol_low's first 16."""
    data = SHARED / "data"
    sets = [(data / "lol_val" / "low", "val", None), (data / "lol_eval15" / "low", "eval15", None),
            (data / "unpaired" / "lol_low", "low", 16)]
    target.mkdir(parents=True, exist_ok=True)
    chosen = []
    for folder, prefix, count in sets:
        if not folder.is_dir():
            sys.exit(f"needs {folder} (the project's ../shared material)")
        for path in sorted(folder.glob("*.png"), key=lambda p: (len(p.stem), p.stem))[:count]:
            link = target / f"{prefix}_{path.name}"
            link.symlink_to(path)
            chosen.append(link)
    return chosen


def build_photo_folder(target: Path) -> list[Path]:
    """Copy the benchmark photos into ``target``; returns them."""
    unpaired = SHARED / "data" / "unpaired"
    if not unpaired.is_dir():
        sys.exit(f"needs {unpaired} (the project's ../shared material)")
    target.mkdir(parents=True, exist_ok=True)
    chosen: list[Path] = []
    for folder, size, count in PHOTO_SET:
        found = 0
        for path in sorted((unpaired / folder).iterdir()):
            if found == count:
                break
            with Image.open(path) as image:
                if image.size != size:
                    continue
            copy = target / f"{folder}_{path.name}"
            if copy in chosen:
                continue
            shutil.copyfile(path, copy)
            chosen.append(copy)
            found += 1
    return chosen


CPU_SECONDS: dict[str, list[float]] = {}


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(command: list[str], env: dict[str, str] | None = None, label: str | None = None) -> float:
    """Wall time of ``command``; its CPU time (user + system) is recorded under ``label``."""
    cpu = _children_cpu()
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    elapsed = time.perf_counter() - start
    if label is not None:
        CPU_SECONDS.setdefault(label, []).append(_children_cpu() - cpu)
    if result.returncode != 0:
        sys.exit(f"failed ({result.returncode}): {' '.join(command)}\n{result.stderr[-2000:]}")
    return elapsed


def import_time(code: str, repeats: int = 5) -> float:
    return statistics.median(timed([sys.executable, "-c", code]) for _ in range(repeats))


def largest_difference(ours: Path, reference: Path) -> int:
    worst = 0
    for path in sorted(reference.iterdir()):
        a = np.asarray(Image.open(path).convert("RGB"), dtype=np.int16)
        b = np.asarray(Image.open(ours / path.name).convert("RGB"), dtype=np.int16)
        if a.shape != b.shape:
            raise SystemExit(f"{path.name}: size differs: {a.shape} vs {b.shape}")
        worst = max(worst, int(np.abs(a - b).max()))
    return worst


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=str(SHARED / "reference" / "ruas_official" / "lol.pt"))
    parser.add_argument("--stage", choices=("final", "iem"), default="final")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--variants", action="store_true", help="also time ruas-nni with each optimisation off")
    parser.add_argument("--baseline", choices=("nchw", "channels-last"), default="nchw",
                        help="channels-last: also run the reference with network and input in channels-last format")
    parser.add_argument("--photos", choices=("mixed", "lol_val", "lol81"), default="mixed",
                        help="16 mixed real photos (default), lol_val/low's 50 600x400 photos, or 81 of 600x400")
    parser.add_argument("--no-cache-run", action="store_true", help="also time ruas-nni --no-cache")
    parser.add_argument("--no-nchw-reference", action="store_true",
                        help="skip the (slow) NCHW reference runs; ratios are then against the first baseline")
    parser.add_argument("--json", metavar="OUT", help="write the results as JSON")
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="ruas-speed-"))
    try:
        builders = {"lol_val": build_lol_val_folder, "lol81": build_lol81_folder, "mixed": build_photo_folder}
        photos = builders[args.photos](work / "photos")
        os.environ["RUAS_NNI_CACHE_DIR"] = str(work / "cache")  # starts empty: the first run writes the graph
        megapixels = sum(np.prod(Image.open(p).size) for p in photos) / 1e6
        print(f"{len(photos)} photos, {megapixels:.1f} megapixels, in {work / 'photos'}")
        python = sys.executable
        common = ["--checkpoint", args.checkpoint, "--stage", args.stage]
        runs: dict[str, tuple[list[str], dict[str, str] | None]] = {
            "reference": ([python, str(ROOT / "benchmarks" / "reference_enhance.py"), *common,
                           str(work / "photos"), "{out}"], None),
            "reference, 1 thread": ([python, str(ROOT / "benchmarks" / "reference_enhance.py"), *common,
                                     str(work / "photos"), "{out}"], dict(os.environ, OMP_NUM_THREADS="1")),
            "ruas-nni": ([python, "-m", "ruas_nni", "enhance", str(work / "photos"), "-o", "{out}", *common, "--quiet"],
                         None),
        }
        if args.baseline == "channels-last":
            reference = [python, str(ROOT / "benchmarks" / "reference_enhance.py"), "--channels-last", *common,
                         str(work / "photos"), "{out}"]
            runs = {"reference, channels-last": (reference, None),
                    "reference, channels-last, 1 thread": (reference, dict(os.environ, OMP_NUM_THREADS="1")),
                    **runs}
        if args.no_cache_run:
            runs["ruas-nni, --no-cache"] = ([*runs["ruas-nni"][0], "--no-cache"], None)
        if args.no_nchw_reference:
            del runs["reference"], runs["reference, 1 thread"]
        first = next(iter(runs))
        if args.variants:
            for name, flags in VARIANTS.items():
                env = dict(os.environ, RUAS_NNI_MALLOC_TUNING="0") if name == "glibc malloc defaults" else None
                runs[name] = ([*runs["ruas-nni"][0], *flags], env)
        times: dict[str, list[float]] = {name: [] for name in runs}
        for round_index in range(args.rounds):
            for name, (command, env) in runs.items():
                out = work / f"out-{round_index}-{len(times[name])}-{abs(hash(name))}"
                if name == first and round_index == 0:
                    reference_out = out
                if name == "ruas-nni" and round_index == 0:
                    ours_out = out
                times[name].append(timed([c.replace("{out}", str(out)) for c in command], env, label=name))
                print(f"round {round_index + 1}: {name:<30} {times[name][-1]:6.2f} s", flush=True)
        medians = {name: statistics.median(values) for name, values in times.items()}
        worst = largest_difference(ours_out, reference_out)
        results = {
            "load_average_after": os.getloadavg(),
            "photos": len(photos),
            "megapixels": round(float(megapixels), 2),
            "cpu_cores": len(os.sched_getaffinity(0)),
            "median_seconds": {k: round(v, 3) for k, v in medians.items()},
            "all_seconds": {k: [round(x, 3) for x in v] for k, v in times.items()},
            "median_cpu_seconds": {k: round(statistics.median(v), 3) for k, v in CPU_SECONDS.items()},
            "baseline_over": {base: {k: round(medians[base] / v, 2) for k, v in medians.items()}
                              for base in medians if base.startswith("reference")},
            "largest_difference_8bit_levels": worst,
            "import_seconds": {
                "python -c 'import torch'": round(import_time("import torch"), 3),
                "python -c 'import ruas_nni.cli'": round(import_time("import ruas_nni.cli"), 3),
            },
        }
        print()
        cpu = results["median_cpu_seconds"]
        bases = [name for name in medians if name.startswith("reference")]
        print(f"{'run':<36} {'median s':>9} {'CPU s':>7}  " + "  ".join(f"[{b}] / run" for b in bases))
        for name, value in medians.items():
            print(f"{name:<36} {value:9.2f} {cpu[name]:7.2f}  "
                  + "  ".join(f"{medians[b] / value:>{len(b) + 8}.2f}" for b in bases))
        print("CPU s: user + system seconds of the process (all its threads), median")
        print(f"\nruas-nni vs {first} outputs: largest difference {worst} 8-bit level(s)")
        print("load average (1, 5, 15 min) at the end: " + ", ".join(f"{x:.2f}" for x in os.getloadavg()))
        for what, seconds in results["import_seconds"].items():
            print(f"{what}: {seconds:.2f} s")
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
