"""``ruas-nni compare``: the search strategies as trials of a real NNI experiment, on NNI's web UI."""

from __future__ import annotations

import argparse

from ruas_nni.cli._arguments import add_experiment_arguments

ORDER = 70
HELP = "compare search strategies as NNI trials (NNI manager + web UI on localhost)"

DESCRIPTION = """\
Start an NNI experiment with one trial per strategy and seed: each trial searches an architecture
on --data (unpaired low-light images), trains it for --train-steps steps and scores it on
--eval-data (low/ and high/ with the same file names). After every search epoch a trial reports
{default: PSNR, psnr, ssim, val_loss, ...}: PSNR (dB) and SSIM on --eval-data of the network the
search would derive at that point; the final result is {default: PSNR, psnr, ssim, params, flops,
search_seconds, strategy, genotype} of the trained network. --assessor medianstop (or curvefitting)
lets NNI stop trials whose PSNR curve lags. TensorBoard logs are where the web UI's TensorBoard
button finds them.

Strategies: cooperative (RUAS, paper Algorithm 1), separate and joint (the paper's Fig. 9
ablations), darts and gumbel-darts (NNI's DARTS and GumbelDARTS).

--machines FILE (a YAML list in NNI's machineList form: host, port, user, sshKeyFile, pythonPath)
runs the trials on those machines over SSH with NNI's remote training service; they need the data
at the same paths and ruas-nni installed in pythonPath's environment.

The NNI manager and its web UI listen on every network interface, without authentication; keep
the port local (firewall, SSH tunnel; docs/experiments.md). A trial takes every path and setting
from its command line and accepts from the manager only a known strategy and an integer seed.

Defaults are a quick comparison (4 search epochs, 128-pixel crops, 200 training steps): every
trial is a whole search plus training. The paper's settings are --epochs 20 --crop 320
--train-steps 800 (examples/compare.yaml); give them a GPU.

Prints the experiment id and the web UI address. Without --detach it waits for the trials, then
keeps the web UI up until Ctrl-C. With --detach it returns at once; `nnictl stop --port PORT` stops
the experiment. `ruas-nni report EXPERIMENT_ID` writes tables and plots afterwards.

--config YAML holds the same keys as the flags (strategies, data, eval_data, repeats, epochs, steps,
crop, train_steps, arch_lr, port, concurrency, gpus_per_trial, max_trial_duration, assessor,
assessor_start_step, machines, nni_manager_ip, experiment_dir, name);
flags override it. examples/compare_experiment.yaml is the same experiment for `nnictl create`.
"""


def _strategies(value: str) -> list[str]:
    return [s.strip() for s in value.split(",") if s.strip()]


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "compare", help=HELP, description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--strategies", type=_strategies, default=None, metavar="S1,S2,...",
                        help="comma-separated: cooperative,separate,joint,darts,gumbel-darts (default: all)")
    parser.add_argument("--data", action="append", default=None, metavar="DIR",
                        help="folder of unpaired low-light images for search and training (repeat for several)")
    parser.add_argument("--eval-data", default=None, metavar="PAIRED_DIR",
                        help="folder with low/ and high/ to score each trial's network on (never trained on)")
    parser.add_argument("--repeats", type=int, default=None, metavar="N", help="seeds per strategy (default 1)")
    parser.add_argument("--epochs", type=int, default=None, metavar="N", help="search epochs (default 4; the paper: 20)")
    parser.add_argument("--steps", type=int, default=None, metavar="N",
                        help="search steps per epoch (default: one pass over the images)")
    parser.add_argument("--crop", type=int, default=None, metavar="N", help="crop side (default 128; the paper: 320)")
    parser.add_argument("--train-steps", type=int, default=None, metavar="N", help="training steps (default 200; the paper: 800)")
    parser.add_argument("--arch-lr", type=float, default=None, metavar="LR",
                        help="learning rate of the architecture weights (default 0.1, for short searches; the paper: 3e-4)")
    parser.add_argument("--assessor", choices=("medianstop", "curvefitting"), default=None,
                        help="NNI assessor: stop trials whose intermediate PSNR lags (default: none)")
    parser.add_argument("--machines", default=None, metavar="FILE",
                        help="YAML machine list (NNI machineList form): run the trials there over SSH")
    add_experiment_arguments(parser)
    parser.add_argument("--detach", action="store_true", help="return once the experiment has started")
    parser.add_argument("--config", default=None, metavar="YAML", help="comparison settings; flags override them")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ruas_nni.experiments.compare import (
        check_compare_inputs,
        compare_experiment,
        load_compare_config,
        read_machine_list,
    )
    from ruas_nni.experiments.launch import run_attached, start_experiment, web_ui_url

    overrides = {"strategies": args.strategies, "data": args.data, "eval_data": args.eval_data,
                 "repeats": args.repeats, "epochs": args.epochs, "steps": args.steps, "crop": args.crop,
                 "train_steps": args.train_steps, "port": args.port, "concurrency": args.concurrency,
                 "experiment_dir": args.experiment_dir, "arch_lr": args.arch_lr, "assessor": args.assessor,
                 "machines": read_machine_list(args.machines) if args.machines else None}
    config = load_compare_config(args.config, overrides)
    counts = check_compare_inputs(config)
    experiment = compare_experiment(config)
    print(f"comparing {', '.join(config.strategies)} x seeds {config.seeds} ({config.trial_count} trials, "
          f"{config.concurrency} at a time): search {config.epochs} epochs"
          f"{f' x {config.steps} steps' if config.steps else ''} on {counts['images']} images, "
          f"crop {config.crop}, train {config.train_steps} steps, score on {counts['pairs']} pairs", flush=True)
    start_experiment(experiment, config.port, detach=args.detach)
    print(f"experiment id: {experiment.id}")
    print(f"web UI: {web_ui_url(config.port)}", flush=True)
    print(f"note: the NNI manager answers on port {config.port} of every network interface, without "
          f"authentication (anyone who reaches it can add trials or stop the experiment); keep it local with a "
          f"firewall or an SSH tunnel (docs/experiments.md)", flush=True)
    if args.detach:
        print(f"stop it with: nnictl stop --port {config.port}")
        print(f"report: ruas-nni report {experiment.id}")
        return 0
    trials = run_attached(experiment, config.port)
    print(f"report: ruas-nni report {experiment.id}")
    return 0 if trials and all(t.status == "SUCCEEDED" for t in trials) else 1
