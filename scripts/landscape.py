#!/usr/bin/env python
"""A landscape of the RUAS search space: train many genotypes briefly, score each on a paired set.

    python scripts/landscape.py run --csv runs/landscape/landscape.csv --workdir runs/landscape \\
        --setup reference examples/landscape_reference.yaml /work/wt-landscape \\
        --setup exposure_denoise runs/recipe_ed.yaml /work/wt-quality \\
        --paper --arch runs/search/arch.json --random 30 --seed 0 --steps 100 --crop 160 \\
        --val /work/shared/data/lol_val
    python scripts/landscape.py report --csv runs/landscape/landscape.csv --out docs/landscape

``run`` lists the genotypes (the paper's with ``--paper``, every ``--arch`` file, ``--random N``
uniform samples drawn with ``--seed``), and for each genotype and each ``--setup NAME RECIPE
PYTHONPATH`` runs, one at a time, one child process of ``--python`` with that ``PYTHONPATH`` (so the
code under test is whatever that path holds, either package layout) which

* trains through the command line's own entry point (``ruas_nni.cli.main(["train", "--config",
  RECIPE, "--arch", A, "--steps", N, "--crop", C, "--threads", "1", ...])``, i.e. ``python -m
  ruas_nni train``),
* scores the model with ``ruas_nni.cli.main(["evaluate", ...])`` on ``--val`` (or on every k-th pair
  of it with ``--val-every k``),
* recomputes the recipe's two reference-free losses (the IEM's and the NRM's, as the training step
  defines them, including the objective chosen by the recipe) on fixed unpaired crops: centre crops
  of every ``len/--loss-images``-th image of the recipe's ``data`` folders. Their sum is the
  *objective* column: what a loss-driven search minimises,
* counts parameters and FLOPs (``count_parameters``, ``count_flops`` at 600x400, LOL's size).

One CSV row per (setup, genotype), written atomically (temporary file + rename) after each; rows
already in the CSV are skipped, so an interrupted run continues where it stopped (a child that
finished after its driver stopped left ``result.json``, which is recorded without rerunning; a
trained model whose ``done.json`` matches ``--steps`` is scored without retraining). Use a new
``--workdir`` when changing ``--steps``, ``--crop`` or the recipe. Children run with
``OMP_NUM_THREADS=1`` under ``nice -n 10`` (``--nice``).

``report`` writes ``landscape.png`` (PSNR against parameters and against the objective, one colour
per setup) and ``summary.md`` with Kendall's tau-b between objective and PSNR per setup.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PAPER = "paper"
COLUMNS = ["setup", "genotype", "source", "iem", "nrm", "status", "psnr", "ssim", "psnr_matched", "ssim_matched",
           "loss_iem", "loss_nrm", "objective", "params", "params_iem", "params_nrm", "macs_600x400",
           "steps", "crop", "val_images", "train_s", "wall_s", "recipe", "pythonpath"]

# ---------------------------------------------------------------------------------------------
# the child: runs with the PYTHONPATH of the code under test; imports tolerate both package layouts

_OPS_SNIPPET = """
try:
    from ruas_nni.model.ops import OPERATION_NAMES
except ImportError:
    from ruas_nni.ops import OPERATION_NAMES
print(" ".join(OPERATION_NAMES))
"""


def _imports():
    try:  # layer folders (main)
        from ruas_nni.base.images import read_image
        from ruas_nni.inference.benchmark import count_flops, count_parameters
        from ruas_nni.model.checkpoint import load_checkpoint
        from ruas_nni.training.config import load_train_config
        from ruas_nni.training.module import RUASTrainingModule
    except ImportError:  # the flat layout
        from ruas_nni.benchmark import count_flops, count_parameters
        from ruas_nni.checkpoint import load_checkpoint
        from ruas_nni.data import read_image

        from ruas_nni.training import RUASTrainingModule, load_train_config
    return count_flops, count_parameters, load_checkpoint, load_train_config, RUASTrainingModule, read_image


def _loss_crops(data: list[str], n_images: int, crop: int, read_image):
    files = sorted(p for d in data for p in Path(d).iterdir()
                   if p.suffix.lower() in {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"})
    step = max(1, len(files) // n_images)
    crops = []
    for path in files[::step][:n_images]:
        t = read_image(path).rgb  # 3 x H x W in [0, 1]
        h, w = t.shape[-2:]
        s = min(crop, h, w)
        top, left = (h - s) // 2, (w - s) // 2
        crops.append(t[:, top:top + s, left:left + s].unsqueeze(0))
    return crops


def child(args: argparse.Namespace) -> int:
    import inspect

    import torch

    from ruas_nni.cli import main as cli

    torch.set_num_threads(1)
    out = Path(args.out)
    result: dict = {"status": "ok"}
    start = time.perf_counter()
    train_argv = ["train", "--config", args.recipe, "--arch", args.arch, "--out", str(out / "run"),
                  "--threads", "1", "--steps", str(args.steps), "--crop", str(args.crop), "--quiet", "--device", "cpu"]
    model = out / "run" / "model.pt"
    if not model.exists() or json.loads((out / "run" / "done.json").read_text() if (out / "run" / "done.json").exists()
                                        else "{}").get("steps") != args.steps:
        rc = cli(train_argv)
        if rc == 1:
            result["status"] = "diverged"
        elif rc != 0 or not model.exists():
            result["status"] = f"train-failed-{rc}"
            (out / "result.json").write_text(json.dumps(result))
            return 0
        (out / "run" / "done.json").write_text(json.dumps({"steps": args.steps}))
    result["train_s"] = time.perf_counter() - start
    scores = out / "val.json"
    rc = cli(["evaluate", "--checkpoint", str(model), "--data", args.val, "--json", str(scores), "--quiet"])
    if rc != 0:
        result["status"] = f"evaluate-failed-{rc}"
    else:
        s = json.loads(scores.read_text())
        result.update(psnr=s["mean"]["psnr"], ssim=s["mean"]["ssim"], val_images=len(s.get("per_image", {})))
        matched = s.get("exposure_matched") or {}
        matched = matched.get("mean", matched)
        if isinstance(matched, dict) and "psnr" in matched:
            result.update(psnr_matched=matched["psnr"], ssim_matched=matched.get("ssim"))

    count_flops, count_parameters, load_checkpoint, load_train_config, Module, read_image = _imports()
    net = load_checkpoint(model).build()
    params = count_parameters(net)
    result.update(params=params["whole"], params_iem=params["iem"], params_nrm=params["nrm"])
    result["macs_600x400"] = count_flops(net, 600, 400)["whole"]["macs"]
    config = load_train_config(out / "run" / "train_config.yaml", {})
    module = Module(net, config)
    noise_takes_step = "step" in inspect.signature(module._noise_loss).parameters
    iem_losses, nrm_losses = [], []
    with torch.no_grad():
        for y in _loss_crops(list(config.data), args.loss_images, args.loss_crop, read_image):
            iem_losses.append(float(module._illumination_loss(y)))
            if net.nrm is not None:
                nrm_losses.append(float(module._noise_loss(y, 0) if noise_takes_step else module._noise_loss(y)))
    result["loss_iem"] = sum(iem_losses) / len(iem_losses)
    result["loss_nrm"] = sum(nrm_losses) / len(nrm_losses) if nrm_losses else 0.0
    result["objective"] = result["loss_iem"] + result["loss_nrm"]
    (out / "result.json").write_text(json.dumps(result))
    return 0


# ---------------------------------------------------------------------------------------------
# the driver


def read_rows(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def write_rows(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    with os.fdopen(fd, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def operation_names(python: str, pythonpath: str) -> list[str]:
    env = dict(os.environ, PYTHONPATH=pythonpath)
    text = subprocess.run([python, "-c", _OPS_SNIPPET], env=env, check=True, capture_output=True, text=True).stdout
    return text.split()


def genotypes(args: argparse.Namespace, ops: list[str]) -> list[tuple[str, str, dict | None]]:
    """(name, source, genotype dict or None for the paper's) in the order they are run."""
    out: list[tuple[str, str, dict | None]] = []
    if args.paper:
        out.append((PAPER, "paper", None))
    for path in args.arch or []:
        data = json.loads(Path(path).read_text())
        out.append((f"arch-{Path(path).parent.name}-{Path(path).stem}" if args.arch_name_parent else
                    f"arch-{Path(path).stem}", str(path), {"iem": data["iem"], "nrm": data.get("nrm")}))
    rng = random.Random(args.seed)
    for i in range(args.random):
        out.append((f"random-s{args.seed}-{i:03d}", f"random seed {args.seed}",
                    {"iem": [rng.choice(ops) for _ in range(7)], "nrm": [rng.choice(ops) for _ in range(7)]}))
    return out


def run(args: argparse.Namespace) -> int:
    csv_path, workdir = Path(args.csv), Path(args.workdir)
    setups = [(name, str(Path(recipe).resolve()), str(Path(pp).resolve())) for name, recipe, pp in args.setup]
    ops = operation_names(args.python, setups[0][2])
    todo = genotypes(args, ops)
    val = args.val
    if args.val_every > 1:  # a fixed subset: every k-th pair in file-name order
        sub = workdir / f"val_every{args.val_every}"
        for part in ("low", "high"):
            (sub / part).mkdir(parents=True, exist_ok=True)
            for f in sorted(os.listdir(Path(val) / "low"))[::args.val_every]:
                link = sub / part / f
                if not link.exists():
                    link.symlink_to(Path(val).resolve() / part / f)
        val = str(sub)
    print(f"{len(todo)} genotypes x {len(setups)} setups, scored on {val}", flush=True)
    for name, source, genotype in todo:
        for setup, recipe, pythonpath in setups:
            rows = read_rows(csv_path)
            if any(r["setup"] == setup and r["genotype"] == name for r in rows):
                continue
            out = workdir / setup / name
            out.mkdir(parents=True, exist_ok=True)
            if genotype is None:
                arch = PAPER
                from_paper = True
            else:
                arch = str(out / "arch.json")
                Path(arch).write_text(json.dumps(genotype))
                from_paper = False
            env = dict(os.environ, PYTHONPATH=pythonpath, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
            command = ["nice", "-n", str(args.nice), args.python, str(Path(__file__).resolve()), "_child",
                       "--out", str(out), "--recipe", recipe, "--arch", arch, "--steps", str(args.steps),
                       "--crop", str(args.crop), "--val", val, "--loss-images", str(args.loss_images),
                       "--loss-crop", str(args.loss_crop)]
            start = time.perf_counter()
            result_file = out / "result.json"
            if result_file.exists():  # finished by a child whose driver was stopped: record it as it is
                rc, wall = 0, float("nan")
            else:
                with open(out / "log.txt", "w") as log:
                    rc = subprocess.run(command, env=env, stdout=log, stderr=subprocess.STDOUT).returncode
                wall = time.perf_counter() - start
            result = json.loads(result_file.read_text()) if rc == 0 and result_file.exists() else {
                "status": f"child-failed-{rc}"}
            if from_paper:
                meta_genotype = _paper_genotype(args.python, pythonpath)
            else:
                meta_genotype = genotype
            row = {"setup": setup, "genotype": name, "source": source,
                   "iem": " ".join(meta_genotype["iem"]), "nrm": " ".join(meta_genotype["nrm"] or []),
                   "steps": args.steps, "crop": args.crop, "wall_s": round(wall, 1), "recipe": recipe,
                   "pythonpath": pythonpath, **result}
            for key, value in list(row.items()):
                if isinstance(value, float):
                    row[key] = round(value, 6)
            rows = read_rows(csv_path)
            rows.append(row)
            write_rows(csv_path, rows)
            print(f"[{len(rows)}] {setup} {name}: {row.get('status')} PSNR {row.get('psnr')} SSIM {row.get('ssim')} "
                  f"objective {row.get('objective')} params {row.get('params')} ({wall:.0f} s)", flush=True)
    return 0


def _paper_genotype(python: str, pythonpath: str) -> dict:
    snippet = ("import json\ntry:\n    from ruas_nni.model.genotype import PAPER_GENOTYPE as G\n"
               "except ImportError:\n    from ruas_nni.genotype import PAPER_GENOTYPE as G\n"
               "print(json.dumps({'iem': list(G.iem), 'nrm': list(G.nrm)}))")
    env = dict(os.environ, PYTHONPATH=pythonpath)
    return json.loads(subprocess.run([python, "-c", snippet], env=env, check=True, capture_output=True,
                                     text=True).stdout)


# ---------------------------------------------------------------------------------------------
# the report


def kendall_tau_b(x: list[float], y: list[float]) -> float:
    """Kendall's tau-b (ties in either variable are neither concordant nor discordant)."""
    n = len(x)
    concordant = discordant = ties_x = ties_y = 0
    for i in range(n):
        for j in range(i + 1, n):
            dx, dy = x[i] - x[j], y[i] - y[j]
            if dx == 0 and dy == 0:
                continue
            if dx == 0:
                ties_x += 1
            elif dy == 0:
                ties_y += 1
            elif (dx > 0) == (dy > 0):
                concordant += 1
            else:
                discordant += 1
    denominator = math.sqrt((concordant + discordant + ties_x) * (concordant + discordant + ties_y))
    return (concordant - discordant) / denominator if denominator else float("nan")


def _float(row: dict, key: str) -> float | None:
    try:
        value = float(row[key])
    except (KeyError, TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def report(args: argparse.Namespace) -> int:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in read_rows(Path(args.csv)) if _float(r, "psnr") is not None]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    setups = sorted({r["setup"] for r in rows})
    lines = ["| setup | genotypes | PSNR median (min-max) | paper's PSNR | tau(objective, PSNR) | "
             "tau(loss_iem, PSNR) | tau(loss_nrm, PSNR) | tau(params, PSNR) |", "|---|---|---|---|---|---|---|---|"]
    fig, axes = plt.subplots(1, 1 + len(setups), figsize=(5 * (1 + len(setups)), 4.2))
    colours = dict(zip(setups, ["tab:blue", "tab:orange", "tab:green", "tab:red"]))
    for setup in setups:
        sub = [r for r in rows if r["setup"] == setup and _float(r, "objective") is not None]
        psnr = [_float(r, "psnr") for r in sub]
        taus = [kendall_tau_b([_float(r, key) for r in sub], psnr)
                for key in ("objective", "loss_iem", "loss_nrm", "params")]
        paper = [_float(r, "psnr") for r in sub if r["genotype"] == PAPER]
        ordered = sorted(psnr)
        paper_text = f"{paper[0]:.2f}" if paper else "-"
        lines.append(f"| {setup} | {len(sub)} | {ordered[len(ordered) // 2]:.2f} ({ordered[0]:.2f}-{ordered[-1]:.2f}) | "
                     f"{paper_text} | ")
        lines[-1] += " | ".join(f"{t:+.3f}" for t in taus) + " |"
        params = [_float(r, "params") for r in sub]
        axes[0].scatter(params, psnr, s=14, c=colours[setup], label=setup, alpha=0.8)
        ax = axes[1 + setups.index(setup)]
        objective = [_float(r, "objective") for r in sub]
        ax.scatter(objective, psnr, s=14, c=colours[setup], alpha=0.8)
        for r in sub:
            if r["genotype"] == PAPER or not r["genotype"].startswith("random"):
                ax.annotate(r["genotype"].replace("arch-", ""), (_float(r, "objective"), _float(r, "psnr")), fontsize=7)
        ax.set_xlabel("objective on fixed unpaired crops (IEM + NRM loss)")
        ax.set_ylabel("lol_val PSNR (dB)")
        ax.set_title(f"{setup}: Kendall tau {taus[0]:+.2f}")
        ax.grid(alpha=0.3)
    for r in rows:
        if r["genotype"] == PAPER:
            axes[0].scatter([_float(r, "params")], [_float(r, "psnr")], s=60, facecolors="none",
                            edgecolors=colours[r["setup"]])
    axes[0].set_xscale("log")
    axes[0].set_xlabel("parameters (log; circled: the paper's genotype)")
    axes[0].set_ylabel("lol_val PSNR (dB)")
    axes[0].legend(fontsize=8)
    axes[0].grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "landscape.png", dpi=110)
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    r = commands.add_parser("run", help="train and score genotypes (resumable)")
    r.add_argument("--csv", required=True)
    r.add_argument("--workdir", required=True)
    r.add_argument("--setup", nargs=3, action="append", required=True, metavar=("NAME", "RECIPE", "PYTHONPATH"),
                   help="a recipe YAML and the code (PYTHONPATH) to train it with; repeat for several")
    r.add_argument("--python", default=sys.executable, help="interpreter of the children")
    r.add_argument("--paper", action="store_true", help="include the paper's genotype")
    r.add_argument("--arch", action="append", help="an arch.json (e.g. a search's winner); repeat")
    r.add_argument("--arch-name-parent", action="store_true", help="name arch rows after their folder too")
    r.add_argument("--random", type=int, default=0, help="uniform random genotypes")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--steps", type=int, default=100)
    r.add_argument("--crop", type=int, default=160)
    r.add_argument("--val", default="/work/shared/data/lol_val")
    r.add_argument("--val-every", type=int, default=1, help="score on every k-th pair only (fixed subset)")
    r.add_argument("--loss-images", type=int, default=12)
    r.add_argument("--loss-crop", type=int, default=256)
    r.add_argument("--nice", type=int, default=10)
    r.set_defaults(func=run)
    p = commands.add_parser("report", help="figure and Kendall's tau from the CSV")
    p.add_argument("--csv", required=True)
    p.add_argument("--out", required=True)
    p.set_defaults(func=report)
    c = commands.add_parser("_child")
    for name in ("--out", "--recipe", "--arch", "--val"):
        c.add_argument(name, required=True)
    for name in ("--steps", "--crop", "--loss-images", "--loss-crop"):
        c.add_argument(name, type=int, required=True)
    c.set_defaults(func=child)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
