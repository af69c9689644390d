"""The Pareto front of quality against latency over the landscape's genotypes, and the check of the
latency table against them.

For each genotype of a landscape CSV (``docs/landscape/defaults/landscape.csv``: 60 genotypes
trained with the default recipe and scored on ``lol_val``), measure the optimised engine's ms per
600x400 image in the default search's network shape and exposure policy (3 IEM stages, 3 NRM cells,
the shoulder policy: the shape the landscape was trained in; :func:`ruas_nni.inference.latency.measure_ms`,
two networks at a time, alternated), predict it from this machine's latency table
(:func:`ruas_nni.inference.latency.table_for`: read from the cache, or measured first), and write:

* ``OUT/front.csv``: genotype, PSNR, SSIM, parameters, measured and predicted ms, on the front or not;
* ``OUT/front.json``: the rank correlations of predicted and measured ms and the front;
* ``OUT/psnr_vs_ms.png``: PSNR against measured ms with the front (the figure of ``ruas-nni report``).

    python scripts/latency_front.py --csv docs/landscape/defaults/landscape.csv --out runs/front
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

from ruas_nni.base.atomic import atomic_write
from ruas_nni.inference.latency import compare_with_measurement, table_for
from ruas_nni.model.export import NetworkOptions
from ruas_nni.model.genotype import Genotype
from ruas_nni.search.config import SearchConfig
from ruas_nni.search.figures import pareto_front, psnr_vs_ms, save_png


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--csv", required=True, help="landscape CSV (columns genotype, iem, nrm, status, psnr, ssim, params)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--runs", type=int, default=5, help="timed images per network (the fastest counts)")
    args = parser.parse_args(argv)

    options = NetworkOptions.from_dict(SearchConfig().network_options())
    with open(args.csv, newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if r["status"] == "ok"]
    if not rows:
        print(f"{args.csv}: no finished genotype", file=sys.stderr)
        return 2
    genotypes = [Genotype(tuple(r["iem"].split()), tuple(r["nrm"].split())) for r in rows]
    table, table_path = table_for(options, (600, 400))
    compared = compare_with_measurement(table, genotypes, options, args.runs,
                                        lambda done, total: print(f"measured {done}/{total}", file=sys.stderr))
    measured, predicted = compared["measured"], compared["predicted"]
    points = [(ms, float(r["psnr"])) for ms, r in zip(measured, rows)]
    front = pareto_front(points)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    lines = ["genotype,psnr,ssim,params,ms_measured,ms_predicted,on_front"]
    for r, ms, guess, point in zip(rows, measured, predicted, points):
        lines.append(f"{r['genotype']},{float(r['psnr']):.4f},{float(r['ssim']):.4f},{r['params']},{ms:.2f},{guess:.2f},"
                     f"{int(point in front)}")
    with atomic_write(out / "front.csv") as handle:
        handle.write(("\n".join(lines) + "\n").encode())
    summary = {
        "genotypes": len(rows), "csv": args.csv, "table": str(table_path), "table_base_ms": table.base,
        "machine": table.machine, "kendall_tau": compared["kendall_tau"], "spearman_rho": compared["spearman_rho"],
        "mean_abs_relative_error": compared["mean_abs_relative_error"],
        "front": [{"genotype": r["genotype"], "ms": ms, "psnr": p} for r, (ms, p) in zip(rows, points) if (ms, p) in front],
    }
    with atomic_write(out / "front.json") as handle:
        handle.write((json.dumps(summary, indent=2) + "\n").encode())
    save_png(psnr_vs_ms([("landscape genotypes", points)], "lol_val PSNR against ms per 600x400 (Pareto front)"),
             out / "psnr_vs_ms.png")
    print(f"Kendall tau {summary['kendall_tau']:.3f}, Spearman rho {summary['spearman_rho']:.3f} over {len(rows)} "
          f"genotypes; front of {len(front)}; wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
