"""Cost of one cooperative second-order search step against one NNI first-order DARTS step.

Both strategies run on the same full ``RUASSpace`` supernet, the same reference-free evaluator and
the same crop (320 x 320 by default), through real Lightning trainers; a callback times every
batch (``on_train_batch_start`` to ``on_train_batch_end``). The two are run in alternation, a few
batches each, ``--rounds`` times, so that a busy machine slows both alike; the first batch of every
fit is dropped as warm-up. Reported: medians per batch.

The cooperative search steps the IEM group on every batch and the NRM group on every 10th
(reference): a batch is an "IEM" batch (alpha_t unrolled hypergradient + w_t step) or an "IEM + NRM"
batch (both groups). The amortised cost is ``(9 * IEM + 1 * (IEM + NRM)) / 10``.

    python benchmarks/search_step.py                       # 320 x 320, 3 rounds of 11 batches
    python benchmarks/search_step.py --crop 64 --json out.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Sequence

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def _fit(strategy_name: str, crop: int, batches: int, device: str, seed: int) -> list[tuple[int, float]]:
    """Run ``batches`` batches of one strategy; return ``(batch_idx, seconds)`` per batch."""
    import nni.nas.strategy  # noqa: F401, I001  (before nni.nas.oneshot: see strategies/cooperative.py)
    import pytorch_lightning as pl
    import torch
    from nni.nas.evaluator.pytorch import DataLoader, Lightning, Trainer
    from nni.nas.execution import SequentialExecutionEngine
    from nni.nas.space import RawFormatModelSpace
    from nni.nas.strategy import DARTS
    from torch.utils.data import TensorDataset

    from search_spaces import RUASSpace
    from search_spaces.evaluator import ReferenceFreeLosses
    from strategies import CooperativeBilevel

    cuda = device == "cuda"
    times: list[tuple[int, float]] = []

    class Timer(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if cuda:
                torch.cuda.synchronize()
            self.start = time.perf_counter()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if cuda:
                torch.cuda.synchronize()
            times.append((batch_idx, time.perf_counter() - self.start))

    torch.manual_seed(seed)
    images = torch.rand(2 * batches, 3, crop, crop) * 0.3
    train = DataLoader(TensorDataset(images[:batches]), batch_size=1)
    val = DataLoader(TensorDataset(images[batches:]), batch_size=1)
    trainer = Trainer(max_epochs=1, limit_train_batches=batches, accelerator="gpu" if cuda else "cpu", devices=1,
                      enable_progress_bar=False, logger=False, enable_checkpointing=False, enable_model_summary=False,
                      callbacks=[Timer()])
    evaluator = Lightning(ReferenceFreeLosses(), trainer, train_dataloaders=train, val_dataloaders=val)
    strategy = CooperativeBilevel() if strategy_name == "cooperative" else DARTS()
    strategy(RawFormatModelSpace(RUASSpace(), evaluator), SequentialExecutionEngine())
    return times


def measure(crop: int = 320, rounds: int = 3, batches: int = 11, device: str = "cpu", threads: int | None = None,
            nrm_period: int = 10) -> dict[str, Any]:
    """Interleaved timings; returns medians and ratios (seconds)."""
    import logging

    import torch

    for name in ("pytorch_lightning", "lightning", "lightning_fabric", "nni"):
        logging.getLogger(name).setLevel(logging.ERROR)
    if threads is not None:
        torch.set_num_threads(threads)
    darts: list[float] = []
    iem_only: list[float] = []
    both: list[float] = []
    for round_index in range(rounds):
        for name in ("darts", "cooperative"):
            for batch_idx, seconds in _fit(name, crop, batches, device, seed=round_index)[1:]:  # drop warm-up
                if name == "darts":
                    darts.append(seconds)
                elif batch_idx % nrm_period == 0:
                    both.append(seconds)
                else:
                    iem_only.append(seconds)
    result: dict[str, Any] = {
        "crop": crop, "device": device, "threads": torch.get_num_threads(), "rounds": rounds, "batches": batches,
        "darts_first_order_s": statistics.median(darts),
        "cooperative_iem_step_s": statistics.median(iem_only) if iem_only else None,
        "cooperative_iem_nrm_step_s": statistics.median(both) if both else None,
        "samples": {"darts": len(darts), "iem": len(iem_only), "iem_nrm": len(both)},
    }
    if iem_only and both:
        amortised = ((nrm_period - 1) * result["cooperative_iem_step_s"] + result["cooperative_iem_nrm_step_s"]) / nrm_period
        result["cooperative_amortised_s"] = amortised
        result["ratio_amortised"] = amortised / result["darts_first_order_s"]
        result["ratio_iem_step"] = result["cooperative_iem_step_s"] / result["darts_first_order_s"]
        result["ratio_iem_nrm_step"] = result["cooperative_iem_nrm_step_s"] / result["darts_first_order_s"]
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--crop", type=int, default=320)
    parser.add_argument("--rounds", type=int, default=3, help="alternations of the two strategies")
    parser.add_argument("--batches", type=int, default=11,
                        help="batches per fit (the first is warm-up; with 11, batch 10 steps the NRM too)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--json", default=None, help="also write the result here")
    args = parser.parse_args(argv)
    if args.batches < 2:
        parser.error("--batches must be at least 2 (the first is dropped)")
    warnings.filterwarnings("ignore")
    result = measure(args.crop, args.rounds, args.batches, args.device, args.threads)
    print(f"crop {result['crop']}, {result['device']}, {result['threads']} thread(s), "
          f"{result['rounds']} rounds x {result['batches']} batches, medians:")
    print(f"  NNI DARTS (first order) step      {result['darts_first_order_s']:.3f} s")
    if "ratio_amortised" in result:
        print(f"  cooperative IEM step (2nd order)  {result['cooperative_iem_step_s']:.3f} s"
              f"  ({result['ratio_iem_step']:.2f}x)")
        print(f"  cooperative IEM + NRM step        {result['cooperative_iem_nrm_step_s']:.3f} s"
              f"  ({result['ratio_iem_nrm_step']:.2f}x)")
        print(f"  cooperative, amortised (NRM 1/10) {result['cooperative_amortised_s']:.3f} s"
              f"  ({result['ratio_amortised']:.2f}x)")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
