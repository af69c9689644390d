"""``ruas-nni demo``: the main job end to end on the built-in demo data (what ``make demo`` runs).

Search (the paper's cooperative bilevel search, Algorithm 1) -> train the winner with the
reference-free losses -> enhance the evaluation inputs -> score them against their ground truth,
all on low-light images synthesised from scikit-image's photographs (:mod:`ruas_nni.training.demo_data`),
so it needs nothing but the installed package. Settings are scaled down (small crops, few steps)
to finish in a few minutes on two CPU cores; ``--quick`` is a smoke test of the same pipeline.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

ORDER = 10
HELP = "run the whole pipeline on built-in demo data (what `make demo` does)"

DESCRIPTION = """\
Synthesise low-light images from scikit-image's sample photographs (a documented camera model with a
fixed seed, see ruas_nni/training/demo_data.py) into OUT/data, then run the main job on them:

  1. cooperative architecture search (paper Algorithm 1) on the unpaired training images -> OUT/search/arch.json
  2. training of the searched network with the reference-free losses        -> OUT/train/model.pt
  3. enhancement of the evaluation inputs                                   -> OUT/enhanced/*.png
  4. scoring against the ground truth (PSNR / SSIM as `ruas-nni evaluate`)  -> OUT/scores.json,
     and side-by-side pictures input | ours | reference (labelled)          -> OUT/side_by_side/*.png

The settings are scaled down to finish in a few minutes on 2 CPU cores; --quick runs a much shorter
version (a smoke test). The real recipe is in docs/training.md.
"""


@dataclass(frozen=True)
class DemoSettings:
    """How long each stage runs."""

    search_epochs: int
    search_steps: int
    search_crop: int
    train_steps: int
    train_crop: int
    checkpoint_every: int


FULL = DemoSettings(search_epochs=20, search_steps=30, search_crop=128, train_steps=300, train_crop=160,
                    checkpoint_every=100)
QUICK = DemoSettings(search_epochs=1, search_steps=4, search_crop=32, train_steps=30, train_crop=64,
                     checkpoint_every=30)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo", help=HELP, description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", default="demo-run",
                        help="folder for data and results (default: demo-run; an earlier demo's results there are replaced)")
    parser.add_argument("--quick", action="store_true", help="a much shorter run (smoke test, well under a minute)")
    parser.add_argument("--seed", type=int, default=0, help="seed of search and training (default 0)")
    parser.add_argument("--threads", type=int, default=None, metavar="N",
                        help="CPU threads of torch (default 1: fastest on shared cores, see docs/speed.md)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars (bars are drawn only on a terminal)")
    parser.set_defaults(func=run)


def _search(train_dir, out, settings: DemoSettings, seed: int, progress: bool, threads: int):
    """The cooperative search; returns (arch.json path, a one-line description of what ran)."""
    import dataclasses

    from ruas_nni.search.config import load_search_config
    from ruas_nni.search.runner import run_search

    config = load_search_config(None, {
        "data": [str(train_dir)], "strategy": "cooperative", "epochs": settings.search_epochs,
        "steps": settings.search_steps, "crop": settings.search_crop, "seed": seed, "device": "cpu",
        "progress": progress, "threads": threads,
    })
    # the demo's search is the one it always ran (the authors' objective and pace, a budget), so that its
    # length stays about two minutes: the recommended objective of ``ruas-nni search`` steps the NRM on
    # every batch and costs several times more per batch
    config = dataclasses.replace(config, objective="reference", exposure=None, exposure_gamma=1.0, nrm_period=10,
                                 arch_lr=3e-4, warmup_epochs=0, budget_weight=1.0)
    result = run_search(config, out)
    return result.arch_path, (f"cooperative search, {settings.search_epochs} epoch(s) x {result.steps_per_epoch} "
                              f"step(s): {result.train_images} images train the weights, {result.val_images} "
                              "the architecture")


def run(args: argparse.Namespace) -> int:
    import json
    import logging
    import shutil
    import sys
    import time
    from pathlib import Path

    from ruas_nni.base.errors import UsageError
    from ruas_nni.base.images import read_image, write_png
    from ruas_nni.base.quiet import show_progress
    from ruas_nni.base.threads import set_torch_threads
    from ruas_nni.inference.enhance import Enhancer
    from ruas_nni.inference.evaluation import PANEL_LABELS, EvaluationResult, find_pairs, format_table, side_by_side
    from ruas_nni.inference.metrics import score_image
    from ruas_nni.model.genotype import Genotype
    from ruas_nni.search.nni_compat import set_nni_log_level
    from ruas_nni.training.config import TrainConfig
    from ruas_nni.training.demo_data import make_demo_data
    from ruas_nni.training.run import prepare_training, train

    threads = set_torch_threads(args.threads)
    settings = QUICK if args.quick else FULL
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not (out / "data" / "manifest.json").is_file():
        raise UsageError(f"--out {out}: exists, is not empty and holds no earlier demo (no data/manifest.json); "
                         "choose another --out")
    stages = ["search", "train", "enhanced", "side_by_side", "scores.json"]
    leftovers = [name for name in stages if (out / name).exists()]
    if leftovers:
        print(f"replacing the results of an earlier demo in {out}")
    for name in leftovers:
        path = out / name
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    set_nni_log_level(logging.WARNING)
    progress = show_progress(args.quiet)
    started = time.monotonic()

    def say(message: str) -> None:
        print(f"[{time.monotonic() - started:6.1f} s] {message}", flush=True)

    data = make_demo_data(out / "data")
    train_images = sorted(p.name for p in data.train.iterdir() if p.suffix == ".png")
    pairs = find_pairs(data.eval)
    say(f"demo data: {len(train_images)} unpaired low-light images in {data.train}, {len(pairs)} pairs in {data.eval}")

    say("1/4 cooperative architecture search ...")
    arch_path, how = _search(data.train, out / "search", settings, args.seed, show_progress(args.quiet, sys.stdout),
                             threads)
    genotype = Genotype.from_any(json.loads(Path(arch_path).read_text()))
    say(f"    searched genotype ({how}):\n      IEM {', '.join(genotype.iem)}\n      NRM {', '.join(genotype.nrm or [])}")

    say("2/4 training the searched network ...")
    config = TrainConfig(arch=str(arch_path), data=[str(data.train)], steps=settings.train_steps,
                         crop=settings.train_crop, seed=args.seed, checkpoint_every=settings.checkpoint_every,
                         sample_every=settings.checkpoint_every)
    result = train(prepare_training(config, out / "train"), device="cpu", progress=progress, threads=threads)
    say(f"    {result.steps} steps in {result.seconds:.1f} s -> {result.model_path}")

    say("3/4 enhancing the evaluation inputs, 4/4 scoring ...")
    scores, baseline = EvaluationResult(), EvaluationResult()
    with Enhancer(result.checkpoint, device="cpu") as enhancer:
        for pair in pairs:
            low, high = read_image(pair.low).rgb, read_image(pair.high).rgb
            enhanced = enhancer(low)
            write_png(out / "enhanced" / f"{Path(pair.name).stem}.png", enhanced)
            picture = side_by_side([low, enhanced, high], labels=PANEL_LABELS)
            write_png(out / "side_by_side" / f"{Path(pair.name).stem}.png", picture)
            scores.per_image[pair.name] = score_image(enhanced, high)
            baseline.per_image[pair.name] = score_image(low, high)
    summary = scores.to_dict()
    summary["input_as_is"] = baseline.to_dict()
    summary["genotype"] = genotype.to_dict()
    summary["seconds"] = round(time.monotonic() - started, 1)
    (out / "scores.json").write_text(json.dumps(summary, indent=2) + "\n")

    mean, dark = scores.mean, baseline.mean
    print(f"\n{format_table(scores)}\n(the dark inputs themselves: {dark.psnr:.3f} dB / {dark.ssim:.4f})\n")
    first = Path(pairs[0].name).stem
    print("Outputs:")
    print(f"  search:        {arch_path}")
    print(f"  model:         {result.model_path}  (TensorBoard logs: {out / 'train' / 'tensorboard'})")
    print(f"  enhanced:      {out / 'enhanced'}/")
    print(f"  side by side:  {out / 'side_by_side' / (first + '.png')}  (input | ours | reference; one per image)")
    print(f"  scores:        {out / 'scores.json'}")
    print(f"  mean scores:   PSNR {mean.psnr:.3f} dB, SSIM {mean.ssim:.4f} on {len(pairs)} demo pairs")
    print(f"demo finished in {time.monotonic() - started:.0f} s: wrote a searched architecture, a trained model, "
          f"{len(pairs)} enhanced images, {len(pairs)} side-by-side pictures and scores.json under {out}/")
    sys.stdout.flush()
    return 0
