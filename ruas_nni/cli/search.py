"""``ruas-nni search``: search an RUAS architecture on unpaired low-light images."""

from __future__ import annotations

import argparse
import sys

ORDER = 20
HELP = "search an architecture (cooperative bilevel NAS, its ablations or NNI's DARTS)"

DESCRIPTION = """\
Search the IEM and NRM genotypes of RUAS on folders of unpaired low-light images (no ground truth),
with an NNI one-shot strategy:

  cooperative    the paper's cooperative bilevel search (Algorithm 1): IEM, then NRM, second order
  separate       ablation: search the IEM to the end, then the NRM
  joint          ablation: one second-order DARTS over the whole network with the summed loss
  darts          NNI's DARTS (first order), unchanged
  gumbel-darts   NNI's Gumbel DARTS, unchanged
  random         a genotype drawn uniformly within the parameter budget, nothing trained (a baseline)

Defaults: the recommended objective (the default model's recipe: exposure normalisation, a
Neighbor2Neighbor NRM), a 5,000-parameter budget, 10 epochs of 20 batches of 128-pixel crops.
The authors' search is one file away: --config examples/paper.yaml.

Writes OUT/arch.json (genotype + 7x7 softmax per module), OUT/tensorboard (losses, alpha heatmaps per
epoch; `tensorboard --logdir OUT/tensorboard`) and OUT/checkpoints/last.ckpt, which --resume
continues. Every setting of --config YAML (see examples/search.yaml) can be given there; flags win.
Exit status: 0 done, 1 the search diverged (non-finite losses), 2 bad flags, config or data.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "search", help=HELP, description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", action="append", metavar="DIR", default=None,
                        help="folder of low-light images (repeat for several)")
    parser.add_argument("--strategy", default=None,
                        help="cooperative (default), separate, joint, darts, gumbel-darts or random")
    parser.add_argument("--epochs", type=int, default=None, help="search epochs (default 10)")
    parser.add_argument("--steps", type=int, default=None, help="at most this many batches per epoch")
    parser.add_argument("--crop", type=int, default=None, help="side of the random crops in pixels (default 128)")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default 0): same seed, same result")
    parser.add_argument("--out", default=None, metavar="DIR", help="folder for arch.json, logs and checkpoints")
    parser.add_argument("--config", default=None, metavar="YAML", help="settings file (flags override it)")
    parser.add_argument("--resume", action="store_true", help="continue the interrupted search in --out")
    parser.add_argument("--device", default=None, help="auto (default), cpu or cuda")
    parser.add_argument("--threads", type=int, default=None, metavar="N",
                        help="CPU threads of torch (default 1: fastest on shared cores, see docs/speed.md)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar (bars are drawn only on a terminal)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import logging

    from ruas_nni.base.quiet import show_progress
    from ruas_nni.search.config import load_search_config
    from ruas_nni.search.nni_compat import set_nni_log_level
    from ruas_nni.search.runner import run_search

    set_nni_log_level(logging.CRITICAL)  # NNI's log lines would repeat a failure reported here in one line

    overrides = {
        "data": args.data,
        "strategy": args.strategy,
        "epochs": args.epochs,
        "steps": args.steps,
        "crop": args.crop,
        "seed": args.seed,
        "out": args.out,
        "device": args.device,
        "threads": args.threads,
        # Lightning draws its bar on stdout; only on a terminal
        "progress": None if show_progress(args.quiet, sys.stdout) else False,
    }
    config = load_search_config(args.config, overrides)
    result = run_search(config, resume=args.resume)
    arch = result.arch
    print(f"iem: {', '.join(arch['iem'])}")
    if arch.get("nrm"):
        print(f"nrm: {', '.join(arch['nrm'])}")
    print(f"wrote {result.arch_path} in {result.seconds:.1f} s (TensorBoard logs: {result.tensorboard}, "
          f"resumable state: {result.out / 'checkpoints'})")
    return 0
