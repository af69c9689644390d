"""The Lightning callbacks of a search: periodic atomic checkpoints, random state in checkpoints, the
architecture heatmaps per epoch, and a non-finite-loss guard for NNI's own DARTS strategies."""

from __future__ import annotations

import math
import os
import random
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint

from strategies import NonFiniteSearchError

from ..model.ops import OPERATION_NAMES
from .config import SearchConfig
from .figures import alpha_heatmaps
from .probabilities import architecture_probabilities

__all__ = ["CHECKPOINT_NAME", "PeriodicCheckpoint", "RandomState", "AlphaHeatmaps", "NonFiniteGuard", "search_callbacks"]

CHECKPOINT_NAME = "last.ckpt"


class PeriodicCheckpoint(ModelCheckpoint):
    """``checkpoints/last.ckpt`` every ``every`` batches and at every epoch's end (only there)."""

    def __init__(self, dirpath: Path, every: int) -> None:
        super().__init__(dirpath=str(dirpath), save_top_k=0, save_last=False, enable_version_counter=False)
        self.every = every

    def _write(self, trainer: pl.Trainer) -> None:
        path = os.path.join(str(self.dirpath), CHECKPOINT_NAME)
        trainer.save_checkpoint(path)
        self.last_model_path = path

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        per_epoch = trainer.num_training_batches
        done = trainer.current_epoch * int(per_epoch) + batch_idx + 1 if not math.isinf(per_epoch) else batch_idx + 1
        if done % self.every == 0 or batch_idx + 1 >= per_epoch:
            self._write(trainer)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        pass

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        pass

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        pass

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        pass  # keep the last good checkpoint


class RandomState(pl.Callback):
    """Put the random generators' state into checkpoints, so a resumed Gumbel DARTS draws the
    same noise as an uninterrupted one."""

    def state_dict(self) -> dict[str, Any]:
        numpy_state = np.random.get_state()
        return {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "numpy": [numpy_state[0], numpy_state[1].tolist(), *numpy_state[2:]],
            "python": random.getstate(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        torch.set_rng_state(state["torch"])
        if state.get("cuda") and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])
        kind, keys, *rest = state["numpy"]
        np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), *rest))
        random.setstate(tuple(x if not isinstance(x, list) else tuple(x) for x in state["python"]))


class AlphaHeatmaps(pl.Callback):
    """At the start and after every epoch, each module's 7 x 7 softmax as a figure (paper Fig. 9,
    drawn by :func:`~ruas_nni.search.figures.alpha_heatmaps`, logged with ``add_figure``) and its
    genotype as text."""

    def _write(self, trainer: pl.Trainer, pl_module: pl.LightningModule, step: int) -> None:
        experiment = getattr(trainer.logger, "experiment", None)
        if experiment is None or not hasattr(experiment, "add_figure"):
            return
        probs = architecture_probabilities(pl_module)
        when = "at the start" if step == 0 else f"after epoch {step}"
        for module, matrix in probs.items():
            if matrix is None:
                continue
            figure = alpha_heatmaps([(f"architecture probabilities {when}; ringed: most probable", {module: matrix})])
            experiment.add_figure(f"alpha/{module}", figure, global_step=step)
            genotype = [OPERATION_NAMES[int(np.argmax(row))] for row in matrix]
            experiment.add_text(f"genotype/{module}", ", ".join(genotype), global_step=step)
        experiment.flush()

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.current_epoch == 0 and trainer.fit_loop.epoch_loop.batch_progress.total.completed == 0:
            self._write(trainer, pl_module, 0)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._write(trainer, pl_module, trainer.current_epoch + 1)


class NonFiniteGuard(pl.Callback):
    """For NNI's own DARTS strategies (which cannot skip a step): stop after ``limit`` batches in a
    row whose loss is not finite."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.in_a_row = 0

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        loss = outputs.get("loss") if isinstance(outputs, Mapping) else outputs
        finite = loss is None or bool(torch.isfinite(torch.as_tensor(loss)).all())
        self.in_a_row = 0 if finite else self.in_a_row + 1
        if self.in_a_row >= self.limit:
            raise NonFiniteSearchError(f"{self.in_a_row} batches in a row had a non-finite loss "
                                       f"(last at epoch {trainer.current_epoch}, batch {batch_idx})")


def search_callbacks(config: SearchConfig, checkpoint_dir: Path) -> list[Any]:
    """Checkpointing, random-state, heatmap and divergence callbacks of a search."""
    callbacks: list[Any] = [PeriodicCheckpoint(checkpoint_dir, config.checkpoint_every), RandomState(), AlphaHeatmaps()]
    if config.strategy in ("darts", "gumbel-darts"):
        callbacks.append(NonFiniteGuard(config.max_nonfinite_steps))
    return callbacks
