"""Lightning callbacks of a training run: the chunk-end callback (resumable state, ``model.pt``, sample
enhancements) and a progress bar over steps. Atomic checkpoint files are :mod:`ruas_nni.training.plumbing`'s."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import pytorch_lightning as pl
from tqdm import tqdm

from .module import RUASTrainingModule

if TYPE_CHECKING:  # pragma: no cover - run.py imports this module
    from .run import TrainingRun


__all__ = ["ChunkEnd", "StepProgressBar"]


class ChunkEnd(pl.Callback):
    """After every chunk of steps: resumable state, ``model.pt``, and a sample enhancement."""

    def __init__(self, run: TrainingRun) -> None:
        self.run = run
        self.last_sample = -1

    def on_train_epoch_end(self, trainer: pl.Trainer, module: RUASTrainingModule) -> None:
        steps_done = module.progress.steps_done
        if module.bad_steps_in_a_row:
            return  # in a streak of skipped steps: keep the last checkpoint that ended on a good step
        trainer.save_checkpoint(self.run.state_path)
        if trainer.is_global_zero:
            self.run.write_model(module.net, steps_done, complete=steps_done >= self.run.config.steps)
            sample_due = steps_done // self.run.config.sample_every != self.last_sample // self.run.config.sample_every
            if module.logger is not None and (sample_due or steps_done >= self.run.config.steps):
                picture = module.preview_picture()
                if picture is not None:
                    module.logger.experiment.add_image("samples/input|iem|final", picture, steps_done)
        self.last_sample = steps_done


class StepProgressBar(pl.Callback):
    """One progress bar over all steps (Lightning's counts epochs, which here are checkpoint chunks)."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.total = total
        self.enabled = enabled
        self.bar = None

    def on_train_start(self, trainer: pl.Trainer, module: RUASTrainingModule) -> None:
        if self.enabled and trainer.is_global_zero:
            self.bar = tqdm(total=self.total, initial=module.progress.steps_done, desc="train", unit="step",
                            file=sys.stderr, dynamic_ncols=True)

    def on_train_batch_end(self, trainer, module: RUASTrainingModule, outputs, batch, batch_index) -> None:
        if self.bar is not None:
            self.bar.n = module.progress.steps_done
            self.bar.set_postfix({k.split("/")[-1]: f"{v:.4g}" for k, v in module.last_losses.items()}, refresh=False)
            self.bar.refresh()

    def _close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def on_train_end(self, trainer, module) -> None:
        self._close()

    def on_exception(self, trainer, module, exception) -> None:
        self._close()
