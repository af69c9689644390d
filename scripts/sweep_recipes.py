"""Train and score a list of training recipes: the record behind docs/training.md's tuning table.

Usage::

    OMP_NUM_THREADS=1 python scripts/sweep_recipes.py examples/recipe_sweep.yaml --out runs/sweep \
        --eval ../shared/data/lol_eval15 [--only NAME ...]

The YAML holds ``base`` (config keys shared by every recipe, e.g. ``init_nrm``) and ``recipes``: a
mapping ``name -> {config keys}``. Each recipe is trained with ``ruas-nni train --config`` into
``OUT/<name>/`` (runs that already finished are skipped), then scored with ``ruas-nni evaluate``;
one JSON line per recipe goes to ``OUT/results.jsonl`` and a Markdown table is printed.

Note: scoring on the evaluation set to choose among recipes is model selection on the test set;
docs/training.md says so next to the table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml


def _run(command: list[str]) -> None:
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")  # oversubscribed threads are many times slower on shared cores
    subprocess.run(command, check=True, env=env)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sweep", help="YAML with 'base' and 'recipes'")
    parser.add_argument("--out", required=True, help="folder for the runs and results.jsonl")
    parser.add_argument("--eval", required=True, help="paired folder (low/, high/) to score on")
    parser.add_argument("--only", nargs="*", default=None, help="run only these recipes")
    args = parser.parse_args(argv)

    spec = yaml.safe_load(Path(args.sweep).read_text())
    base = spec.get("base") or {}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = out / "results.jsonl"
    rows = []
    for name, recipe in spec["recipes"].items():
        if args.only and name not in args.only:
            continue
        run_dir = out / name
        config = {**base, **(recipe or {})}
        scores_path = run_dir / "eval.json"
        if not scores_path.is_file():
            run_dir.mkdir(parents=True, exist_ok=True)
            config_path = run_dir / "recipe.yaml"
            config_path.write_text(yaml.safe_dump(config, sort_keys=False))
            started = time.monotonic()
            resume = ["--resume"] if (run_dir / "train" / "checkpoints" / "last.ckpt").exists() else []
            _run([sys.executable, "-m", "ruas_nni", "train", "--config", str(config_path), "--out",
                  str(run_dir / "train"), "--device", "cpu", "--quiet", *resume])
            seconds = time.monotonic() - started
            _run([sys.executable, "-m", "ruas_nni", "evaluate", "--checkpoint", str(run_dir / "train" / "model.pt"),
                  "--data", args.eval, "--json", str(scores_path), "--quiet"])
            scores = json.loads(scores_path.read_text())["mean"]
            row = {"name": name, "psnr": round(scores["psnr"], 3), "ssim": round(scores["ssim"], 4),
                   "train_seconds": round(seconds, 1), "recipe": recipe}
            with results.open("a") as handle:
                handle.write(json.dumps(row) + "\n")
        else:
            scores = json.loads(scores_path.read_text())["mean"]
            row = {"name": name, "psnr": round(scores["psnr"], 3), "ssim": round(scores["ssim"], 4), "recipe": recipe}
        rows.append(row)
        print(f"{name}: {row['psnr']:.3f} dB / {row['ssim']:.4f}", flush=True)
    print("\n| recipe | changes from base | PSNR dB | SSIM |\n|---|---|---|---|")
    for row in rows:
        changes = ", ".join(f"{k}={v}" for k, v in (row["recipe"] or {}).items()) or "-"
        print(f"| {row['name']} | {changes} | {row['psnr']:.3f} | {row['ssim']:.4f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
