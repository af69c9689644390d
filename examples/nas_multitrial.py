"""Multi-trial NAS on RUASSpace with NNI's own API: every sampled architecture is a trial on the web UI.

    ruas-nni demo --out demo-run
    python examples/nas_multitrial.py --data demo-run/data/train --val-data demo-run/data/eval --trials 8

is what ``ruas-nni nas`` does, spelled out: the model space, a function evaluator that trains each
sampled architecture briefly and reports its PSNR on a paired validation folder (not your test set),
NNI's ``RegularizedEvolution`` strategy, and a ``NasExperiment`` on the local training service. The
web UI (http://localhost:8080) shows the search space (the 14 edges and their 7 operations) and
every trial with its architecture and metrics.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from nni.nas.evaluator import FunctionalEvaluator
from nni.nas.experiment import NasExperiment
from nni.nas.strategy import RegularizedEvolution

from ruas_nni.experiments.nas import train_and_score
from ruas_nni.model.genotype import Genotype
from search_spaces import RUASSpace
from search_spaces.ruas import shape_of


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", action="append", required=True, help="unpaired low-light images (repeatable)")
    parser.add_argument("--val-data", required=True, help="paired folder (low/, high/) scoring each architecture")
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--train-steps", type=int, default=100)
    parser.add_argument("--crop", type=int, default=128)
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--keep-ui", action="store_true", help="keep the web UI up until Ctrl-C at the end")
    parser.add_argument("--scalable", action="store_true",
                        help="search the shape too: RUASSpace.scalable() (IEM stages, NRM cells, NRM width)")
    args = parser.parse_args()

    # 1. The search space: RUASNet with a LayerChoice on each of the 7 edges of the IEM and NRM cells.
    #    With --scalable, three more NNI choices (nni.choice) fix the shape: iem/stages, nrm/cells, nrm/width.
    space = RUASSpace.scalable() if args.scalable else RUASSpace()
    # 2. How a sampled architecture is scored: trained briefly, then PSNR on the validation pairs (the
    #    function reports {"default": psnr, "psnr", "ssim", "params", "flops", "genotype"} to NNI).
    evaluator = FunctionalEvaluator(
        train_and_score, data=[str(Path(d).resolve()) for d in args.data], val_data=str(Path(args.val_data).resolve()),
        train_steps=args.train_steps, crop=args.crop, seed=0,
    )
    # 3. An NNI multi-trial strategy: regularized evolution (Random, TPE, ... work the same way).
    strategy = RegularizedEvolution(population_size=4, sample_size=2, seed=0)
    # 4. The experiment: NNI manager + web UI, trials on the local training service.
    experiment = NasExperiment(space, evaluator, strategy)
    experiment.config.max_trial_number = args.trials
    experiment.config.trial_concurrency = 1
    experiment.run(port=args.port)

    for rank, sample in enumerate(experiment.export_top_models(top_k=3, formatter="dict"), start=1):
        genotype = Genotype.from_sample(sample)
        shape = "".join(f"{key} {value}  " for key, value in shape_of(sample).items())  # scalable: the shape
        print(f"#{rank}: {shape}IEM {', '.join(genotype.iem)} | NRM {', '.join(genotype.nrm or [])}")
    if args.keep_ui:
        print(f"web UI: http://localhost:{args.port} (Ctrl-C to stop)")
        try:
            while True:
                time.sleep(10)
        except KeyboardInterrupt:
            pass
    experiment.stop()


if __name__ == "__main__":
    main()
