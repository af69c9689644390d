"""Training an exported RUAS network with the reference-free losses (paper Sec. 3.2; spec Sec. 4).

The engine behind ``ruas-nni train``: a PyTorch Lightning module and data module, so the same code
runs on a CPU, one GPU or several GPUs through Lightning's accelerators, strategies and precisions.
NNI is never imported here: this trains the plain-PyTorch network of :func:`ruas_nni.model.export.export`.

**The reference recipe** (the defaults of :class:`TrainConfig`): 800 steps of batch 1, random
320 x 320 crops of low-light images only; IEM and NRM each have their own SGD (IEM lr 0.015, NRM lr
0.001, momentum 0.9, weight decay 3e-4, gradient norm clipped to 5); the IEM steps every step on
``L_t = 0.5 MSE(t_K, y) + R(g, t_K)``, the NRM every 50th step on ``L_n = 1e-7 MSE(x, u_K) + TV(x)``;
the NRM starts from the authors' ``denoise.pt`` when given. Every knob of the paper is a field of
:class:`TrainConfig` (gamma, warm start, loss weights, smoothness sigma and guide, crop, steps, lrs,
NRM period).

The spec's pitfall: the authors back-propagated the NRM loss through the forward pass whose IEM
weights their IEM optimiser had just updated in place. Here the NRM step runs a fresh forward pass
(IEM without gradients, with its updated weights), so nothing is differentiated through modified
weights.

**Reproducible and resumable.** The crop of step ``s`` is a pure function of ``(seed, s)``
(:class:`StepSamples`), the weights start from ``torch.manual_seed(seed)``, and data loading is in
the main process by default, so the same seed gives the same weights on a CPU. Training runs in
chunks of ``checkpoint_every`` steps (Lightning epochs); after each, the full training state (weights,
optimiser momenta, counters) is written atomically to ``OUT/checkpoints/last.ckpt`` and the weights
to ``OUT/model.pt``. A run that is killed and restarted with ``resume`` continues from the last chunk
and ends with the same weights as an uninterrupted run.

**Non-finite losses** skip the step with a warning; after ``max_bad_steps`` of them in a row,
training stops with :class:`TrainingDiverged`, leaving the last good checkpoint in place.
"""

from __future__ import annotations

import datetime as _dt
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn.functional as F
import yaml
from pytorch_lightning.loggers import TensorBoardLogger

from .. import __version__
from ..base.atomic import atomic_write
from ..base.config import to_yaml_dict
from ..base.errors import RuasError, UsageError
from ..base.threads import set_torch_threads
from ..model.checkpoint import Checkpoint, CheckpointError, load_checkpoint, load_nrm_init, save_checkpoint
from ..model.export import export
from ..model.genotype import Genotype
from ..model.network import RUASNet
from ..model.nrm_start import identity_start, lowpass_start
from .callbacks import ChunkEnd, StepProgressBar
from .config import TrainConfig, resolve_arch, with_arch_shape
from .data import StepProgress, UnpairedDataModule
from .datasets import UnpairedImages, scan_folders
from .module import RUASTrainingModule, TrainingDiverged
from .plumbing import lightning_trainer, resolve_accelerator, resume_mismatch

__all__ = ["TrainingRun", "TrainResult", "prepare_training", "build_network", "train"]

_log = logging.getLogger(__name__)

STATE_DIR = "checkpoints"
STATE_FILE = "last.ckpt"
MODEL_FILE = "model.pt"
CONFIG_FILE = "train_config.yaml"
TENSORBOARD_DIR = "tensorboard"

RESUME_MAY_CHANGE = frozenset({"steps", "num_workers", "log_every", "sample_every"})
"""Config keys that may differ between a run and its resumption (everything else must match)."""

PREVIEW_SIDE = 256
"""Longer side of the preview image whose enhancement is logged to TensorBoard."""


# --------------------------------------------------------------------------------------------
# the run: validated inputs, then training


@dataclass
class TrainResult:
    """What a finished :func:`train` left behind."""

    model_path: Path
    checkpoint: Checkpoint
    steps: int
    seconds: float
    skipped_steps: int
    is_global_zero: bool = True
    """False in the other processes of a multi-device run (they write and print nothing)."""


@dataclass
class TrainingRun:
    """A validated training job: everything was checked before any work starts."""

    config: TrainConfig
    out: Path
    genotype: Genotype
    arch_source: str
    files: list[Path]
    images: UnpairedImages
    nrm_init: dict[str, torch.Tensor] | None
    resume: bool

    @property
    def state_path(self) -> Path:
        return self.out / STATE_DIR / STATE_FILE

    @property
    def model_path(self) -> Path:
        return self.out / MODEL_FILE

    def metadata(self, steps_done: int, complete: bool) -> dict[str, Any]:
        counts: dict[str, int] = {}
        for folder in self.config.data:
            root = Path(folder).resolve()
            counts[folder] = sum(1 for f in self.images.files if Path(f).resolve().is_relative_to(root))
        return {
            "made_by": f"ruas-nni {__version__} train",
            "arch": self.arch_source,
            "data": list(self.config.data),
            "images_used": counts,
            "init_nrm": Path(self.config.init_nrm).name if self.config.init_nrm else None,
            "recipe": to_yaml_dict(self.config),
            "seed": self.config.seed,
            "steps": steps_done,
            "complete": complete,
            "time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "torch": torch.__version__,
        }

    def write_model(self, network: RUASNet, steps_done: int, complete: bool, extra: Mapping[str, Any] | None = None) -> Path:
        metadata = self.metadata(steps_done, complete)
        metadata.update(extra or {})
        checkpoint = Checkpoint.from_network(network, self.genotype, self.config.network_options(), metadata)
        return save_checkpoint(checkpoint, self.model_path)


def _check_resumable(out: Path, config: TrainConfig) -> None:
    """Refuse to resume the run in ``out`` with another recipe (keys of :data:`RESUME_MAY_CHANGE` aside)."""
    mismatch = resume_mismatch(out / CONFIG_FILE, to_yaml_dict(config), RESUME_MAY_CHANGE)
    if mismatch is not None:
        key = mismatch.key
        raise UsageError(
            f"`resume`: {out} was trained with {key}={mismatch.saved!r}, now {key}={mismatch.current!r}; "
            "a run resumes only with the same recipe (steps may grow)", keys=("resume",)
        )


def prepare_training(config: TrainConfig, out: str | os.PathLike[str], resume: bool = False) -> TrainingRun:
    """Check everything a training run needs, before any training: architecture, data folders and
    image sizes, NRM initial weights, output folder. Problems raise :class:`UsageError` (one line),
    naming the key of ``config`` or the argument (``out``, ``resume``) at fault."""
    out = Path(out)
    genotype, arch_source, shape = resolve_arch(config.arch)
    config = with_arch_shape(config, shape)
    try:
        config.network_options()
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    files = scan_folders(config.data, "data")
    if out.exists() and not out.is_dir():
        raise UsageError(f"`out` {out}: exists and is not a folder", keys=("out",))
    state = out / STATE_DIR / STATE_FILE
    if state.exists() and not resume:
        raise UsageError(f"`out` {out} already holds a training run; pass `resume` to continue it, or choose another `out`",
                         keys=("out", "resume"))
    if resume:
        _check_resumable(out, config)
    nrm_init = None
    if config.init_nrm is None and config.nrm_start == "lowpass" and config.nrm_channels < 3:
        raise UsageError(f"`nrm_start` lowpass needs `nrm_channels` >= 3 (got {config.nrm_channels}); "
                         "use nrm_start identity", keys=("nrm_start", "nrm_channels"))
    if config.init_nrm is not None:
        if genotype.nrm is None:
            raise UsageError(f"`init_nrm` {config.init_nrm}: the architecture has no NRM", keys=("init_nrm",))
        try:
            nrm_init = load_nrm_init(config.init_nrm)
        except CheckpointError as exc:
            raise UsageError(f"`init_nrm` {exc}", keys=("init_nrm", *exc.keys)) from None
        probe = export(genotype, config.network_options())
        try:
            probe.nrm.load_state_dict(nrm_init)
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()[0]
            raise UsageError(f"`init_nrm` {config.init_nrm}: weights do not fit this NRM ({first[:160]})",
                             keys=("init_nrm",)) from None
    images = UnpairedImages(files, crop=config.crop, flip=config.flip, seed=config.seed)
    return TrainingRun(config, out, genotype, arch_source, files, images, nrm_init, resume)


def _preview(images: UnpairedImages) -> torch.Tensor:
    """The first training image, scaled so its longer side is :data:`PREVIEW_SIDE` pixels."""
    image = torch.from_numpy(images.images[0]).float().div(255.0).unsqueeze(0)
    h, w = image.shape[-2:]
    scale = min(1.0, PREVIEW_SIDE / max(h, w))
    if scale < 1.0:
        image = F.interpolate(image, size=(max(1, round(h * scale)), max(1, round(w * scale))), mode="area")
    return image[0]


def build_network(run: TrainingRun) -> RUASNet:
    """The freshly initialised network of a run (seeded), with the NRM's initial weights."""
    torch.manual_seed(run.config.seed)
    network = export(run.genotype, run.config.network_options())
    if network.nrm is not None:
        if run.nrm_init is not None:
            network.nrm.load_state_dict(run.nrm_init)
        elif run.config.nrm_start == "identity":
            identity_start(network.nrm)
        elif run.config.nrm_start == "lowpass":
            lowpass_start(network.nrm)
    return network


def _strategy(strategy: str) -> str:
    # Steps that update only the IEM leave the NRM's parameters without gradients: DDP must know.
    return "ddp_find_unused_parameters_true" if strategy == "ddp" else strategy


def train(run: TrainingRun, *, device: str = "auto", devices: int | str = 1, strategy: str = "auto",
          precision: str = "32-true", progress: bool = True, threads: int | None = None) -> TrainResult:
    """Train the run's network (continuing from its last checkpoint when ``run.resume``) and write
    ``model.pt``, resumable state and TensorBoard logs (with sample enhancements) under ``run.out``.

    ``threads`` sets torch's CPU threads (on shared cores, fewer threads than cores is often much
    faster; bit-identical results need the same thread count)."""
    config = run.config
    accelerator = resolve_accelerator(device)
    if threads is not None:
        set_torch_threads(threads)
    run.out.mkdir(parents=True, exist_ok=True)
    with atomic_write(run.out / CONFIG_FILE) as handle:
        handle.write(yaml.safe_dump(to_yaml_dict(config), sort_keys=False).encode())

    progress_state = StepProgress()
    module = RUASTrainingModule(build_network(run), config, progress_state, _preview(run.images))
    data = UnpairedDataModule(run.images, config, progress_state)
    logger = TensorBoardLogger(save_dir=str(run.out), name=TENSORBOARD_DIR, version="", default_hp_metric=False)
    chunks = math.ceil(config.steps / config.checkpoint_every)
    try:
        trainer = lightning_trainer(
            run.out, accelerator, logger=logger, callbacks=[ChunkEnd(run), StepProgressBar(config.steps, progress)],
            devices=devices, strategy=_strategy(strategy), precision=precision, max_epochs=chunks,
            enable_checkpointing=False, enable_progress_bar=False, use_distributed_sampler=False,
        )
    except (ValueError, TypeError, RuntimeError) as exc:
        raise UsageError(f"cannot set up training on `device` {device} `devices` {devices} `precision` {precision}: "
                         f"{str(exc).strip().splitlines()[0]}", keys=("device", "devices", "precision")) from None
    resume_from = str(run.state_path) if run.resume and run.state_path.is_file() else None
    started = time.monotonic()
    try:  # dependencies' warnings are filtered by ruas_nni.base.quiet (the commands call it)
        trainer.fit(module, datamodule=data, ckpt_path=resume_from)
    except TrainingDiverged as exc:
        kept = f"{run.model_path} (step {_steps_in(run.model_path)})" if run.model_path.is_file() else "none yet"
        raise TrainingDiverged(f"{exc}: {kept}") from None
    seconds = time.monotonic() - started
    if trainer.interrupted:
        raise RuasError(f"training interrupted; continue with `resume` `out` {run.out}", keys=("resume", "out"))
    steps_done = module.progress.steps_done
    extra = {"seconds": round(seconds, 1), "skipped_steps": module.skipped_steps,
             "device": f"{accelerator} x{devices}", "precision": str(precision)}
    if trainer.is_global_zero:  # with several devices every process holds the same weights; one writes them
        run.write_model(module.net, steps_done, complete=steps_done >= config.steps, extra=extra)
    checkpoint = Checkpoint.from_network(module.net, run.genotype, config.network_options(),
                                         run.metadata(steps_done, steps_done >= config.steps) | extra)
    return TrainResult(run.model_path, checkpoint, steps_done, seconds, module.skipped_steps,
                       is_global_zero=trainer.is_global_zero)


def _steps_in(model_path: Path) -> Any:
    try:
        return load_checkpoint(model_path).metadata.get("steps", "?")
    except CheckpointError:
        return "?"
