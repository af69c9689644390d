"""Lightning plumbing shared by training (:mod:`ruas_nni.training.run`) and the search
(:mod:`ruas_nni.search.runner`): the one factory of their Lightning trainers, the accelerator of a
device name, atomic checkpoint files, and the check that a resumed run has the settings of the run it
continues.

**Devices.** What a device name means (``auto`` included) is decided by
:func:`ruas_nni.base.devices.resolve_device`, as for inference; :func:`resolve_accelerator` names the
result as a Lightning accelerator. ``mps`` is used only when asked for (training only; the search's
``device`` allows ``auto``, ``cpu`` and ``cuda``).

**Mid-epoch resume** is not here; the two jobs resume differently, by design:

* training runs in chunks of ``checkpoint_every`` steps, each a Lightning epoch that ends with a
  checkpoint; its samples are a pure function of ``(seed, step)`` and its sampler starts at the
  restored step count (:class:`~ruas_nni.training.data.StepSampler`), so it never resumes mid-epoch;
* the search's epochs are NNI's DARTS epochs over a seeded shuffle of the training and validation
  images, checkpointed every ``checkpoint_every`` batches, so it resumes mid-epoch through Lightning's
  stateful data loaders (:class:`search_spaces.evaluator.ResumableLoader`).

Either mechanism would draw the other job's samples in another order, and so change its results.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Collection, Mapping, Sequence

import pytorch_lightning as pl
import torch
import yaml
from pytorch_lightning.plugins.io import TorchCheckpointIO

from ..base.atomic import atomic_write
from ..base.devices import resolve_device
from ..base.errors import UsageError

__all__ = ["DEVICES", "resolve_accelerator", "lightning_trainer", "AtomicCheckpointIO", "ResumeMismatch",
           "resume_mismatch"]

DEVICES = ("auto", "cpu", "cuda", "gpu", "mps")
"""Device names :func:`resolve_accelerator` knows (``gpu`` is ``cuda``)."""


def resolve_accelerator(device: str) -> str:
    """The Lightning accelerator (``"cpu"``, ``"gpu"`` or ``"mps"``) of a device name in :data:`DEVICES`,
    as :func:`~ruas_nni.base.devices.resolve_device` resolves it (``auto``: ``"gpu"`` when CUDA is
    available, else ``"cpu"``). Raises :class:`UsageError` naming the argument ``device`` for an
    unknown name or a CUDA device on a machine without one."""
    if device not in DEVICES:
        raise UsageError(f"`device` must be one of auto, cpu, cuda (gpu), mps; got {device!r}", keys=("device",))
    resolved = resolve_device(device)
    return "gpu" if resolved in ("cuda", "gpu") else resolved


def lightning_trainer(out: Path, accelerator: str, *, logger: Any, callbacks: Sequence[Any],
                      trainer_class: Callable[..., pl.Trainer] = pl.Trainer, **options: Any) -> pl.Trainer:
    """The Lightning trainer of a training run or a search, built here only: on ``accelerator``
    (:func:`resolve_accelerator`), rooted at ``out``, writing checkpoints through
    :class:`AtomicCheckpointIO`, logging every step to ``logger``, with no model summary and no sanity
    validation. ``options`` are the job's own (epochs, devices, progress bar, ...). The search passes
    NNI's traced ``Trainer`` as ``trainer_class`` (NNI's ``Lightning`` evaluator needs one; this
    layer never imports NNI)."""
    return trainer_class(accelerator=accelerator, logger=logger, callbacks=list(callbacks),
                         plugins=[AtomicCheckpointIO()], enable_model_summary=False, num_sanity_val_steps=0,
                         log_every_n_steps=1, default_root_dir=str(out), **options)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoint I/O that writes through :func:`ruas_nni.base.atomic.atomic_write` (a file is
    complete or absent, never truncated by a kill) and reads our own checkpoints in full, onto the CPU
    (Lightning then moves the state to the run's device)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        with atomic_write(path) as handle:
            torch.save(checkpoint, handle)

    def load_checkpoint(self, path: Any, map_location: Any = None, weights_only: bool | None = None) -> dict[str, Any]:
        return torch.load(path, map_location=map_location or "cpu", weights_only=False)


@dataclass(frozen=True)
class ResumeMismatch:
    """A setting whose value differs between a saved run and its resumption."""

    key: str
    saved: Any
    current: Any


def resume_mismatch(saved_config: Path, current: Mapping[str, Any], may_change: Collection[str]) -> ResumeMismatch | None:
    """The first setting of ``current`` (in its order) whose value differs from the YAML file
    ``saved_config`` that the interrupted run wrote, or ``None``.

    Keys in ``may_change`` are not compared, nor keys the saved file lacks (written by a version that
    did not have them). A missing or unreadable file compares as equal: there is nothing to hold the
    resumed run to."""
    try:
        saved = yaml.safe_load(saved_config.read_text(encoding="utf-8")) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    if not isinstance(saved, dict):
        return None
    for key, value in current.items():
        if key in may_change or key not in saved:
            continue
        if saved[key] != value:
            return ResumeMismatch(key, saved[key], value)
    return None
