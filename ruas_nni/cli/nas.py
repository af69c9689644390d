"""``ruas-nni nas``: multi-trial NAS on RUASSpace with NNI's strategies, every architecture a trial."""

from __future__ import annotations

import argparse

from ruas_nni.cli._arguments import add_experiment_arguments

ORDER = 71
HELP = "multi-trial NAS on RUASSpace (Random / RegularizedEvolution / TPE), trials on NNI's web UI"

DESCRIPTION = """\
Register RUASSpace with an NNI NasExperiment and explore it with one of NNI's multi-trial strategies:
random (Random), evolution (RegularizedEvolution, default) or tpe (TPE). With --space scalable the
number of IEM stages (1-3), NRM cells (1-3) and the NRM width (3 / 6 / 12) are NNI choices too, and
the exported arch.json carries that shape to `ruas-nni train`. Each trial trains one
sampled architecture briefly (--train-steps, the reference recipe otherwise) on --data and reports its
PSNR on --val-data, a paired folder (low/, high/) used to pick architectures: a validation set, not
your test set (the command refuses lol_eval15). The search space and every sampled architecture
with its metrics show on the web UI; the best architectures are printed and written to
--export DIR/arch_<rank>.json at the end.

The strategy runs in this process, so the command stays until the trials are done, then keeps the
web UI up until Ctrl-C (unless --no-wait-ui).
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "nas", help=HELP, description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--strategy", default=None, metavar="NAME",
                        help="NNI multi-trial strategy: random, evolution (default) or tpe")
    parser.add_argument("--space", default=None, choices=("paper", "scalable"),
                        help="paper: the edges in the paper's shape (default); scalable: the shape too (IEM stages, "
                             "NRM cells and width), so cost and quality trade (see `ruas-nni report`'s PSNR-ms front)")
    parser.add_argument("--data", action="append", default=None, metavar="DIR",
                        help="folder of unpaired low-light images for training (repeat for several)")
    parser.add_argument("--val-data", default=None, metavar="PAIRED_DIR",
                        help="low/ + high/ folder scoring each architecture (a validation set)")
    parser.add_argument("--trials", type=int, default=None, metavar="N", help="architectures to try (default 20)")
    parser.add_argument("--train-steps", type=int, default=None, metavar="N", help="training steps each (default 200)")
    parser.add_argument("--crop", type=int, default=None, metavar="N", help="training crop side (default 128)")
    add_experiment_arguments(parser)
    parser.add_argument("--export", default=None, metavar="DIR", help="write the top architectures as arch.json files")
    parser.add_argument("--top", type=int, default=3, metavar="K", help="how many to print / export (default 3)")
    parser.add_argument("--no-wait-ui", action="store_true", help="stop the experiment as soon as the trials are done")
    parser.add_argument("--config", default=None, metavar="YAML", help="NAS settings; flags override them")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from ruas_nni.base.atomic import atomic_write
    from ruas_nni.experiments.launch import keep_web_ui_until_interrupted, web_ui_url
    from ruas_nni.experiments.nas import check_nas_inputs, load_nas_config, nas_experiment, run_nas
    from ruas_nni.model.genotype import Genotype
    from search_spaces.ruas import shape_of

    overrides = {"strategy": args.strategy, "space": args.space, "data": args.data, "val_data": args.val_data,
                 "trials": args.trials,
                 "train_steps": args.train_steps, "crop": args.crop, "port": args.port,
                 "concurrency": args.concurrency, "experiment_dir": args.experiment_dir}
    config = load_nas_config(args.config, overrides)
    counts = check_nas_inputs(config)
    experiment = nas_experiment(config)
    space = "RUASSpace.scalable()" if config.space == "scalable" else "RUASSpace"
    print(f"multi-trial NAS ({config.strategy}) on {space}: {config.trials} architectures, each trained "
          f"{config.train_steps} steps on {counts['images']} images and scored on {counts['pairs']} pairs", flush=True)
    print(f"experiment id: {experiment.id}")
    print(f"web UI: {web_ui_url(config.port)}", flush=True)
    try:
        top = run_nas(experiment, config.port, args.top)
    except KeyboardInterrupt:
        print("experiment stopped")
        raise
    for rank, (sample, metrics) in enumerate(top, start=1):
        genotype, shape = Genotype.from_sample(sample), shape_of(sample)
        psnr = metrics.get("psnr") if metrics else None
        shaped = "".join(f"  {key} {value}" for key, value in shape.items())
        print(f"#{rank}: PSNR {psnr:.3f} dB{shaped}  IEM {', '.join(genotype.iem)}  NRM {', '.join(genotype.nrm or [])}"
              if psnr is not None else f"#{rank}:{shaped} IEM {', '.join(genotype.iem)}")
        if args.export:
            path = Path(args.export) / f"arch_{rank}.json"
            arch = {**genotype.to_dict(), **({"shape": shape} if shape else {}), "metrics": metrics}
            with atomic_write(path) as handle:
                handle.write((json.dumps(arch, indent=2) + "\n").encode())
            print(f"   written to {path}")
    print(f"report: ruas-nni report {experiment.id}")
    if args.export:
        print(f"wrote {len(top)} architecture(s) as arch_<rank>.json into {args.export}")
    if args.no_wait_ui:
        experiment.stop()
        return 0
    keep_web_ui_until_interrupted(experiment, config.port)
    return 0
