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

from ruas_nni.base.rank_correlation import kendall_tau

PAPER = "paper"
COLUMNS = ["setup", "genotype", "source", "iem", "nrm", "status", "psnr", "ssim", "psnr_half", "ssim_half",
           "psnr_matched", "ssim_matched",
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
        per_image = s.get("per_image", {})
        result.update(psnr=s["mean"]["psnr"], ssim=s["mean"]["ssim"], val_images=len(per_image))
        # scored on the whole set: also every 2nd pair in file-name order (the pairs --val-every 2 scores),
        # comparable with runs scored on that subset
        half = [per_image[name] for name in sorted(per_image)[::2]]
        if half and not Path(args.val).name.startswith("val_every"):
            result.update(psnr_half=sum(h["psnr"] for h in half) / len(half),
                          ssim_half=sum(h["ssim"] for h in half) / len(half))
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
    if getattr(args, "uniform", False):  # one operation on every edge of both cells
        for op in ops:
            out.append((f"uniform-{op}", "uniform", {"iem": [op] * 7, "nrm": [op] * 7}))
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


kendall_tau_b = kendall_tau
"""Kendall's tau-b: :func:`ruas_nni.base.rank_correlation.kendall_tau` (NaN when one side is constant)."""


def _float(row: dict, key: str) -> float | None:
    try:
        value = float(row[key])
    except (KeyError, TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def kendall(x: list[float], y: list[float]) -> tuple[float, float]:
    """Kendall's tau-b and its two-sided p-value: scipy's when scipy is installed, else
    :func:`kendall_tau_b` (the same tau-b) without a p-value (nan)."""
    try:
        from scipy.stats import kendalltau
    except ImportError:
        return kendall_tau_b(x, y), float("nan")
    result = kendalltau(x, y, variant="b")
    return float(result.statistic), float(result.pvalue)


TAU_KEYS = ("objective", "loss_iem", "loss_nrm", "params", "macs_600x400")
CONCLUSIONS = "<!-- conclusions: written by hand; `report` keeps everything from this line on -->"


def _psnr25(row: dict) -> float | None:
    """PSNR on the 25 pairs of ``--val-every 2``: ``psnr`` of a row scored on them, else ``psnr_half``."""
    return _float(row, "psnr") if str(row.get("val_images")) == "25" else _float(row, "psnr_half")


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    n = len(ordered)
    return ordered[n // 2] if n % 2 else (ordered[n // 2 - 1] + ordered[n // 2]) / 2


def _tau_row(label: str, sub: list[dict], score: str) -> str:
    values = [_float(r, score) for r in sub]
    cells = []
    for key in TAU_KEYS:
        tau, p = kendall([_float(r, key) for r in sub], values)
        cells.append(f"{tau:+.3f}" + (f" (p {p:.1g})" if key == "objective" and math.isfinite(p) else ""))
    paper = [_float(r, score) for r in sub if r["genotype"] == PAPER]
    if paper:
        rank = 1 + sum(v > paper[0] for v in values)
        paper_text = f"{paper[0]:.2f} (rank {rank} of {len(values)})"
    else:
        paper_text = "-"
    return (f"| {label} | {len(sub)} | {_median(values):.2f} ({min(values):.2f}-{max(values):.2f}) | {paper_text} | "
            + " | ".join(cells) + " |")


def report(args: argparse.Namespace) -> int:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in read_rows(Path(args.csv)) if _float(r, "psnr") is not None and _float(r, "objective") is not None]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    setups = sorted({r["setup"] for r in rows}, key=lambda s: (-sum(r["setup"] == s for r in rows), s))
    main_setups = [s for s in setups if sum(r["setup"] == s for r in rows) >= 3]
    lines = ["# Landscape summary (written by `scripts/landscape.py report`)", "",
             f"From `{Path(args.csv).name}`. Kendall's tau-b of each column against `lol_val` PSNR of the same genotypes "
             "(negative for a loss = lower loss, higher PSNR; p: two-sided, scipy). PSNR in dB.", "",
             "| setup (scored pairs) | genotypes | PSNR median (min-max) | paper genotype | tau(objective, PSNR) | "
             "tau(loss_iem, PSNR) | tau(loss_nrm, PSNR) | tau(params, PSNR) | tau(MACs, PSNR) |",
             "|---|---|---|---|---|---|---|---|---|"]
    by_setup, duplicates = {}, []
    for setup in main_setups:  # a genotype listed twice (e.g. a search winner that is also a random sample) counts once
        seen: dict[tuple[str, str], str] = {}
        by_setup[setup] = []
        for r in rows:
            if r["setup"] == setup:
                key = (r["iem"], r["nrm"])
                if key in seen:
                    duplicates.append(f"{setup}: {r['genotype']} = {seen[key]}")
                else:
                    seen[key] = r["genotype"]
                    by_setup[setup].append(r)
    for setup, sub in by_setup.items():
        pairs = sorted({r.get("val_images") for r in sub})
        lines.append(_tau_row(f"{setup} ({'/'.join(map(str, pairs))})", sub, "psnr"))
        if pairs != ["25"] and all(_psnr25(r) is not None for r in sub):
            lines.append(_tau_row(f"{setup} (the 25 of every 2nd pair)", [dict(r, psnr=_psnr25(r)) for r in sub], "psnr"))
    if duplicates:
        lines += ["", "Counted once (the same genotype as an earlier row): " + "; ".join(duplicates) + "."]
    lines += ["", "Other pairings (same rows):", ""]
    for setup, sub in by_setup.items():
        for key, score in (("objective", "ssim"), ("loss_iem", "ssim"), ("loss_nrm", "ssim"),
                           ("objective", "psnr_matched"), ("objective", "ssim_matched")):
            if all(_float(r, score) is not None for r in sub):
                tau, p = kendall([_float(r, key) for r in sub], [_float(r, score) for r in sub])
                lines.append(f"* {setup}: tau({key}, {score}) = {tau:+.3f} (p {p:.1g})")
    if len(main_setups) >= 2:
        a, b = main_setups[:2]
        common = sorted({r["genotype"] for r in by_setup[a]} & {r["genotype"] for r in by_setup[b]})
        if len(common) >= 3:
            pa = {r["genotype"]: _psnr25(r) for r in by_setup[a]}
            pb = {r["genotype"]: _psnr25(r) for r in by_setup[b]}
            common = [g for g in common if pa[g] is not None and pb[g] is not None]
            tau, p = kendall([pa[g] for g in common], [pb[g] for g in common])
            lines.append(f"* {len(common)} genotypes trained with both: tau(PSNR with {a}, PSNR with {b}) = {tau:+.3f} "
                         f"(p {p:.1g}), on the 25 pairs both were scored on")
    for setup, sub in by_setup.items():  # what a search that minimises the objective would pick
        ranked = sorted(sub, key=lambda r: _float(r, "objective"))
        psnr_sorted = sorted((_float(r, "psnr") for r in sub), reverse=True)
        picks = ", ".join(f"{r['genotype']} ({_float(r, 'objective'):.4f}: {_float(r, 'psnr'):.2f} dB, PSNR rank "
                          f"{1 + psnr_sorted.index(_float(r, 'psnr'))})" for r in ranked[:3])
        lines.append(f"* {setup}: the 3 lowest objectives (of {len(sub)}): {picks}")
    for setup in setups:
        if setup not in main_setups:
            for r in [r for r in rows if r["setup"] == setup]:
                lines.append(f"* control `{setup}`, {r['genotype']}: PSNR {_float(r, 'psnr'):.3f}, SSIM "
                             f"{_float(r, 'ssim'):.4f}, objective {_float(r, 'objective'):.5f}")
    for setup, sub in by_setup.items():
        paper = [r for r in sub if r["genotype"] == PAPER]
        lines += ["", f"Best {min(8, len(sub))} genotypes, {setup} (paper genotype: "
                  + (f"{_float(paper[0], 'psnr'):.3f} dB, SSIM {_float(paper[0], 'ssim'):.4f}, "
                     f"{int(_float(paper[0], 'params'))} parameters" if paper else "not run") + "):", "",
                  "| genotype | PSNR | SSIM | objective | params | MACs 600x400 (G) | IEM | NRM |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in sorted(sub, key=lambda r: -_float(r, "psnr"))[:8]:
            lines.append(f"| {r['genotype']} | {_float(r, 'psnr'):.3f} | {_float(r, 'ssim'):.4f} | "
                         f"{_float(r, 'objective'):.5f} | {int(_float(r, 'params'))} | "
                         f"{_float(r, 'macs_600x400') / 1e9:.3f} | {r['iem']} | {r['nrm']} |")

    # the figure: PSNR against parameters (both setups, on the 25 pairs both were scored on) and
    # against each setup's objective
    colours = dict(zip(main_setups, ["tab:blue", "tab:orange", "tab:green", "tab:red"]))
    fig, axes = plt.subplots(1, 1 + len(main_setups), figsize=(5.2 * (1 + len(main_setups)), 4.4))
    axes = list(axes) if len(main_setups) else [axes]
    for setup, sub in by_setup.items():
        half = [r for r in sub if _psnr25(r) is not None]
        axes[0].scatter([_float(r, "params") for r in half], [_psnr25(r) for r in half], s=14,
                        c=colours[setup], label=setup, alpha=0.75)
        for r in half:
            if r["genotype"] == PAPER:
                axes[0].scatter([_float(r, "params")], [_psnr25(r)], s=90, facecolors="none",
                                edgecolors="black", linewidths=1.2)
        ax = axes[1 + main_setups.index(setup)]
        tau, _ = kendall([_float(r, "objective") for r in sub], [_float(r, "psnr") for r in sub])
        ax.scatter([_float(r, "objective") for r in sub], [_float(r, "psnr") for r in sub], s=14, c=colours[setup],
                   alpha=0.75)
        for r in sub:
            if r["genotype"] == PAPER or not r["genotype"].startswith("random"):
                ax.annotate(r["genotype"].replace("arch-", "").replace("uniform-", "all-"),
                            (_float(r, "objective"), _float(r, "psnr")), fontsize=6)
                if r["genotype"] == PAPER:
                    ax.scatter([_float(r, "objective")], [_float(r, "psnr")], s=90, facecolors="none",
                               edgecolors="black", linewidths=1.2)
        pairs = "/".join(sorted({r.get("val_images") for r in sub}))
        ax.set_xlabel(f"search objective of {setup} (IEM + NRM loss, fixed lol_low crops)")
        ax.set_ylabel(f"lol_val PSNR, {pairs} pairs (dB)")
        ax.set_title(f"{setup}: Kendall tau {tau:+.2f}", fontsize=10)
        ax.grid(alpha=0.3)
    axes[0].set_xscale("log")
    axes[0].set_xlabel("parameters (log; circled: the paper's genotype)")
    axes[0].set_ylabel("lol_val PSNR, 25 pairs (every 2nd) (dB)")
    axes[0].legend(fontsize=8)
    axes[0].grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "landscape.png", dpi=110)
    summary = out / "summary.md"
    kept = ""
    if summary.exists() and CONCLUSIONS in summary.read_text():
        kept = summary.read_text()[summary.read_text().index(CONCLUSIONS):]
    summary.write_text("\n".join(lines) + "\n\n" + (kept or CONCLUSIONS + "\n"))
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
    r.add_argument("--uniform", action="store_true",
                   help="the structured genotypes: each operation on all 7 edges of both cells")
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
