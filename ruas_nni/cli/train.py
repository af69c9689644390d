"""``ruas-nni train``: train an exported genotype with reference-free losses (recommended recipe or spec Sec. 4)."""

from __future__ import annotations

import argparse

ORDER = 30
HELP = "train a searched (or the paper's) network on unpaired low-light images"

DESCRIPTION = """\
Train the plain-PyTorch RUAS network of ARCH (a search's arch.json, or `paper` for the paper's
genotype) on unpaired low-light images, without ground truth.

Defaults are the project's recommended recipe, chosen on real LOL pairs (docs/objectives.md): 400
steps of 256x256 crops; the IEM learns with the authors' loss L_t plus the Retinex
bound t >= y (`bound_weight` 10: its output must not clip); between IEM and NRM the image is
brought to mean brightness 0.45 through the tone curve u ** 0.5 (one gain per image: `exposure`,
`exposure_gamma`); the NRM starts as a 5x5 low-pass filter (`nrm_start: lowpass`) and learns on every
step as a self-supervised denoiser (Neighbor2Neighbor without its regulariser, plus 0.1 TV). The
authors' recipe (spec Sec. 4: 800 steps of 320x320 crops, L_n = 1e-7 MSE + TV, NRM every 50th step,
--init-nrm their denoise.pt) is one file away: --config examples/paper_train.yaml. Every knob (gamma,
warm start, loss weights, smoothness, learning rates, exposure, flips ...) is a key of the --config
YAML; see examples/train.yaml and docs/training.md.

Writes OUT/model.pt (load it with `ruas-nni enhance --checkpoint`), OUT/train_config.yaml,
TensorBoard logs with losses and sample enhancements in OUT/tensorboard, and resumable state in
OUT/checkpoints/last.ckpt every `checkpoint_every` steps: after an interruption, run the same command
with --resume and the result equals an uninterrupted run's.

On a GPU: --device cuda (or auto), several GPUs with --devices N (--dist-strategy ddp), --precision
bf16-mixed etc. CPU threads: --threads (default 1, the fastest on shared cores; docs/speed.md).
Exit status: 0 done; 1 training diverged (the last good model.pt is kept); 2 bad flags or data.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train", help=HELP, description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--arch", metavar="ARCH", default=None, help="a search's arch.json, or 'paper' (default: paper)")
    parser.add_argument("--data", metavar="DIR", action="append", default=None,
                        help="folder of unpaired low-light images (repeat for several)")
    parser.add_argument("--steps", type=int, default=None, help="training steps (default 400)")
    parser.add_argument("--crop", type=int, default=None, help="side of the random square crops (default 256)")
    parser.add_argument("--seed", type=int, default=None, help="seed of weights and crops (default 0)")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder")
    parser.add_argument("--init-nrm", metavar="PATH", default=None,
                        help="NRM initial weights: the authors' denoise.pt (or any checkpoint with an NRM)")
    parser.add_argument("--config", metavar="YAML", default=None, help="recipe file; flags override its keys")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    parser.add_argument("--device", default="auto", help="auto (GPU when present, default), cpu, cuda")
    parser.add_argument("--devices", default="1", help="how many devices (default 1; 'auto' for all)")
    parser.add_argument("--dist-strategy", default="auto", metavar="NAME",
                        help="Lightning's distributed strategy for several devices (auto, ddp, ...)")
    parser.add_argument("--strategy", dest="old_strategy", default=None, metavar="NAME",
                        help="refused: the old spelling of --dist-strategy (search strategies belong to "
                             "`ruas-nni search --strategy`)")
    parser.add_argument("--precision", default="32-true",
                        help="Lightning precision: 32-true (default), bf16-mixed, 16-mixed (GPU)")
    parser.add_argument("--threads", type=int, default=None, metavar="N",
                        help="CPU threads of torch (default 1: fastest on shared cores, see docs/speed.md)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar (bars are drawn only on a terminal)")
    parser.set_defaults(func=run)


def _devices(value: str):
    from ruas_nni.base.errors import UsageError

    if value == "auto":
        return "auto"
    try:
        number = int(value)
    except ValueError:
        raise UsageError(f"--devices must be a positive integer or 'auto', got {value!r}") from None
    if number < 1:
        raise UsageError(f"--devices must be a positive integer or 'auto', got {value!r}")
    return number


def run(args: argparse.Namespace) -> int:
    import os

    from ruas_nni.base.errors import UsageError
    from ruas_nni.base.quiet import show_progress
    from ruas_nni.base.threads import set_torch_threads

    if args.old_strategy is not None:
        raise UsageError(f"--strategy {args.old_strategy}: in `train` Lightning's distributed strategy is now "
                         f"--dist-strategy (auto, ddp, ...); search strategies such as cooperative belong to "
                         "`ruas-nni search --strategy`")
    devices = _devices(args.devices)
    threads = set_torch_threads(args.threads)

    from pytorch_lightning.strategies import StrategyRegistry

    from ruas_nni.training.config import load_train_config
    from ruas_nni.training.run import prepare_training, train

    known = ["auto", *StrategyRegistry.available_strategies()]
    if args.dist_strategy not in known:
        raise UsageError(f"--dist-strategy {args.dist_strategy}: not one of Lightning's strategies "
                         f"({', '.join(s for s in known if s in ('auto', 'ddp', 'ddp_spawn', 'fsdp', 'deepspeed'))}, ...)")
    overrides = {"arch": args.arch, "data": args.data, "steps": args.steps, "crop": args.crop, "seed": args.seed,
                 "init_nrm": args.init_nrm}
    config = load_train_config(args.config, overrides)
    training_run = prepare_training(config, args.out, resume=args.resume)
    first_process = os.environ.get("LOCAL_RANK", "0") == "0" and os.environ.get("NODE_RANK", "0") == "0"
    if first_process:  # Lightning re-runs this command for the other devices of a multi-device run
        print(f"training {training_run.arch_source} on {len(training_run.images.files)} images from "
              f"{', '.join(config.data)}: {config.steps} steps of {config.batch_size} x {config.crop}x{config.crop} crops, "
              f"seed {config.seed}" + (" (resuming)" if args.resume else ""))
    result = train(training_run, device=args.device, devices=devices, strategy=args.dist_strategy,
                   precision=args.precision, progress=show_progress(args.quiet), threads=threads)
    if not result.is_global_zero:
        return 0
    skipped = f", {result.skipped_steps} non-finite step(s) skipped" if result.skipped_steps else ""
    print(f"TensorBoard: tensorboard --logdir {training_run.out / 'tensorboard'}")
    print(f"model: {result.model_path} ({result.steps} steps, {result.seconds:.1f} s{skipped}; "
          f"resumable state in {training_run.out / 'checkpoints'})")
    return 0
