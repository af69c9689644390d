"""Collect the strategy comparison of docs/search.md: every ``cmp_<strategy>_s<seed>`` search in a
runs folder (scripts/search_comparison.sh) with the lol_val scores of its trained winner
(``cmp_<strategy>_s<seed>_short/val25.json``: every second lol_val pair) into
``docs/search_comparison.csv``, copy each winner's arch.json to
``docs/search_winners/<strategy>_s<seed>.json``, and print the table with the median and spread
(max - min) per strategy.

    python scripts/search_comparison.py runs/comparison [CSV [WINNERS_DIR]]

``CSV`` and ``WINNERS_DIR`` default to ``docs/search_comparison.csv`` and ``docs/search_winners``.
"""

from __future__ import annotations

import csv
import json
import shutil
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STRATEGIES = ("cooperative", "separate", "joint", "darts", "random")
FIELDS = ("strategy", "seed", "psnr", "ssim", "params", "search_s", "iem", "nrm", "psnr_full50", "ssim_full50")
"""The CSV's columns; a row leaves out what it does not have (written as empty)."""


def main(runs: str, csv_path: str = "docs/search_comparison.csv", winners: str = "docs/search_winners") -> int:
    runs_dir = Path(runs)
    winners_dir = ROOT / winners
    winners_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    baseline = runs_dir / "paper_short" / "val25.json"
    if baseline.exists():
        scores = json.loads(baseline.read_text())["mean"]
        rows.append({"strategy": "paper genotype", "seed": "", "psnr": round(scores["psnr"], 3),
                     "ssim": round(scores["ssim"], 4), "params": 3438})
    for strategy in STRATEGIES:
        for arch_path in sorted(runs_dir.glob(f"cmp_{strategy}_s*/arch.json")):
            name = arch_path.parent.name
            seed = int(name.rsplit("_s", 1)[1])
            arch = json.loads(arch_path.read_text())
            val = runs_dir / f"{name}_short" / "val25.json"
            scores = json.loads(val.read_text())["mean"] if val.exists() else None
            target = winners_dir / f"{strategy}_s{seed}.json"
            shutil.copyfile(arch_path, target)
            full_path = runs_dir / f"{name}_full" / "val50.json"  # optional: trained with train's defaults, all 50 pairs
            full = json.loads(full_path.read_text())["mean"] if full_path.exists() else None
            rows.append({"strategy": strategy, "seed": seed,
                         "psnr": round(scores["psnr"], 3) if scores else "", "ssim": round(scores["ssim"], 4) if scores else "",
                         "params": arch["params"], "search_s": arch["seconds"],
                         "iem": " ".join(arch["iem"]), "nrm": " ".join(arch["nrm"]),
                         **({"psnr_full50": round(full["psnr"], 3), "ssim_full50": round(full["ssim"], 4)} if full else {})})
    default = runs_dir / "default_s0_short" / "val25.json"
    if default.exists():  # the default search (full length), trained the same way
        arch = json.loads((runs_dir / "default_s0" / "arch.json").read_text())
        scores = json.loads(default.read_text())["mean"]
        rows.append({"strategy": "cooperative, default settings", "seed": 0, "psnr": round(scores["psnr"], 3),
                     "ssim": round(scores["ssim"], 4), "params": arch["params"], "search_s": arch["seconds"],
                     "iem": " ".join(arch["iem"]), "nrm": " ".join(arch["nrm"])})
    out = ROOT / csv_path
    with out.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=FIELDS, restval="")
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {out}")
    print("| strategy | seed | PSNR | SSIM | params |")
    for row in rows:
        print(f"| {row['strategy']} | {row['seed']} | {row['psnr']} | {row['ssim']} | {row['params']} |")
    print("\n| strategy | n | median PSNR (spread) | median SSIM (spread) | median params (range) |")
    for strategy in STRATEGIES:
        scored = [r for r in rows if r["strategy"] == strategy and r["psnr"] != ""]
        if not scored:
            continue
        psnr = [r["psnr"] for r in scored]
        ssim = [r["ssim"] for r in scored]
        params = [r["params"] for r in scored]
        print(f"| {strategy} | {len(scored)} | {statistics.median(psnr):.3f} ({max(psnr) - min(psnr):.3f}) | "
              f"{statistics.median(ssim):.4f} ({max(ssim) - min(ssim):.4f}) | "
              f"{statistics.median(params):.0f} ({min(params)}-{max(params)}) |")
    full_rows = [r for r in rows if "psnr_full50" in r]
    if full_rows:
        print("\ntrained with train's defaults, all 50 lol_val pairs:")
        print("| strategy | n | median PSNR (spread) | median SSIM (spread) |")
        for strategy in STRATEGIES:
            scored = [r for r in full_rows if r["strategy"] == strategy]
            if scored:
                psnr = [r["psnr_full50"] for r in scored]
                ssim = [r["ssim_full50"] for r in scored]
                print(f"| {strategy} | {len(scored)} | {statistics.median(psnr):.3f} ({max(psnr) - min(psnr):.3f}) | "
                      f"{statistics.median(ssim):.4f} ({max(ssim) - min(ssim):.4f}) |")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:4]) if len(sys.argv) > 1 else main("runs/comparison"))
