"""Deterministic, resumable training data: the crop of every step is a pure function of ``(seed, step)``."""

from __future__ import annotations

import sys
from typing import Iterator

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from .config import TrainConfig
from .datasets import UnpairedImages

__all__ = ["StepSamples", "StepProgress", "StepSampler", "UnpairedDataModule"]


class StepSamples(Dataset):
    """Item ``i`` is sample ``i`` of the whole run: image ``order(pass)[i mod n]`` of pass
    ``i // n`` over the ``n`` images (a seeded shuffle per pass), cropped with
    :class:`~ruas_nni.training.datasets.UnpairedImages`' crop for ``(seed, pass, image)``.

    Returns ``(image, step)`` with ``step = i // samples_per_step``."""

    def __init__(self, images: UnpairedImages, samples_per_step: int, seed: int) -> None:
        self.images = images
        self.samples_per_step = samples_per_step
        self.seed = seed
        self._orders: dict[int, np.ndarray] = {}

    def __len__(self) -> int:  # unbounded in principle; the sampler decides what is drawn
        return sys.maxsize

    def image_index(self, index: int) -> tuple[int, int]:
        """``(pass, image index)`` of sample ``index``."""
        count = len(self.images.images)
        pass_number, position = divmod(index, count)
        order = self._orders.get(pass_number)
        if order is None:
            order = np.random.default_rng([self.seed, pass_number, 11]).permutation(count)
            self._orders = {pass_number: order}
        return pass_number, int(order[position])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        pass_number, image = self.image_index(index)
        self.images.set_epoch(pass_number)
        return self.images[image], index // self.samples_per_step


class StepProgress:
    """How many steps are done; shared by the training module (writer) and the sampler (reader)."""

    def __init__(self) -> None:
        self.steps_done = 0


class StepSampler(Sampler[int]):
    """The samples of the next ``chunk`` steps for this process: for step ``s``, process ``rank`` of
    ``world`` draws samples ``s * batch * world + rank * batch + j`` (``j < batch``)."""

    def __init__(self, progress: StepProgress, total_steps: int, chunk: int, batch_size: int,
                 rank: int = 0, world: int = 1) -> None:
        self.progress = progress
        self.total_steps = total_steps
        self.chunk = chunk
        self.batch_size = batch_size
        self.rank = rank
        self.world = world

    def _steps(self) -> range:
        start = self.progress.steps_done
        return range(start, min(start + self.chunk, self.total_steps))

    def __iter__(self) -> Iterator[int]:
        per_step = self.batch_size * self.world
        for step in self._steps():
            base = step * per_step + self.rank * self.batch_size
            yield from range(base, base + self.batch_size)

    def __len__(self) -> int:
        return len(self._steps()) * self.batch_size


class UnpairedDataModule(pl.LightningDataModule):
    """Unpaired low-light crops, one batch per step, in a reproducible order (see :class:`StepSamples`)."""

    def __init__(self, images: UnpairedImages, config: TrainConfig, progress: StepProgress) -> None:
        super().__init__()
        self.images = images
        self.config = config
        self.progress = progress

    def train_dataloader(self) -> DataLoader:
        trainer = self.trainer
        rank = trainer.global_rank if trainer is not None else 0
        world = trainer.world_size if trainer is not None else 1
        config = self.config
        dataset = StepSamples(self.images, config.batch_size * world, config.seed)
        sampler = StepSampler(self.progress, config.steps, config.checkpoint_every, config.batch_size, rank, world)
        return DataLoader(dataset, batch_size=config.batch_size, sampler=sampler, num_workers=config.num_workers,
                          persistent_workers=False)
