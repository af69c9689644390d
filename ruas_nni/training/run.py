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
import json
import logging
import math
import os
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from pytorch_lightning.plugins.io import TorchCheckpointIO
from torch.utils.data import DataLoader, Dataset, Sampler

from ..base.atomic import atomic_write
from ..base.config import ConfigError, from_mapping, load_config, to_yaml_dict
from ..base.errors import RuasError, UsageError
from ..model.checkpoint import Checkpoint, CheckpointError, load_nrm_init, save_checkpoint
from ..model.export import NetworkOptions, export
from ..model.genotype import PAPER_GENOTYPE, Genotype
from ..model.network import WARM_STARTS, RUASNet
from .datasets import UnpairedImages, scan_folders
from .losses import SMOOTH_GUIDES, illumination_loss, noise_loss

__all__ = [
    "TrainConfig",
    "TrainingDiverged",
    "TrainingRun",
    "TrainResult",
    "StepSamples",
    "StepSampler",
    "RUASTrainingModule",
    "UnpairedDataModule",
    "resolve_arch",
    "prepare_training",
    "train",
]

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


@dataclass
class TrainConfig:
    """Everything that decides what ``ruas-nni train`` learns. Defaults: the reference recipe
    (spec Sec. 4), with the authors' loss definitions (spec Sec. 2)."""

    arch: str = field(default="paper", metadata={"help": "arch.json of a search, or 'paper' for the paper's genotype"})
    data: list[str] = field(default_factory=list, metadata={"help": "folders of unpaired low-light images"})
    init_nrm: str | None = field(default=None, metadata={"help": "NRM initial weights (the authors' denoise.pt)"})
    steps: int = field(default=800, metadata={"min": 1, "help": "training steps"})
    crop: int = field(default=320, metadata={"min": 8, "help": "side of the random square crops"})
    batch_size: int = field(default=1, metadata={"min": 1, "help": "crops per step (per device)"})
    seed: int = field(default=0, metadata={"min": 0, "help": "seed of the weights' initialisation and the crops"})
    flip: bool = field(default=False, metadata={"help": "random horizontal / vertical flips (not in the reference)"})
    # optimisation
    iem_lr: float = field(default=0.015, metadata={"min": 0.0})
    nrm_lr: float = field(default=0.001, metadata={"min": 0.0})
    momentum: float = field(default=0.9, metadata={"min": 0.0, "max": 1.0})
    weight_decay: float = field(default=3e-4, metadata={"min": 0.0})
    grad_clip: float = field(default=5.0, metadata={"min": 0.0, "help": "max gradient norm per module; 0 = off"})
    nrm_period: int = field(default=50, metadata={"min": 1, "help": "the NRM steps every nrm_period-th step"})
    zero_nrm_head: bool = field(default=True, metadata={
        "help": "without init_nrm, start the NRM's last convolution at zero (x = u at first)"})
    # network (paper Sec. 3.1 and the ablations of Fig. 6)
    gamma: float = 0.5
    warm_start: str = field(default="rectified", metadata={"choices": WARM_STARTS})
    iem_stages: int = field(default=3, metadata={"min": 1})
    nrm_cells: int = field(default=3, metadata={"min": 1})
    nrm_channels: int = field(default=6, metadata={"min": 1})
    # losses (spec Sec. 2)
    fidelity_weight: float = field(default=0.5, metadata={"min": 0.0, "help": "weight of MSE(t_K, y) in L_t"})
    smooth_weight: float = field(default=1.0, metadata={"min": 0.0, "help": "weight of the smoothness R in L_t"})
    smooth_sigma: float | None = field(default=None, metadata={
        "min": 1e-6, "help": "intended sigma of R's weights exp(-|dg|^2 / 2 sigma^2); null = the reference's -0.005"})
    smooth_guide: str = field(default="ycbcr", metadata={"choices": SMOOTH_GUIDES})
    noise_fidelity_weight: float = field(default=1e-7, metadata={"min": 0.0, "help": "weight of MSE(x, u_K) in L_n"})
    tv_weight: float = field(default=1.0, metadata={"min": 0.0, "help": "weight of TV(x) in L_n"})
    # bookkeeping
    checkpoint_every: int = field(default=50, metadata={"min": 1, "help": "steps between resumable checkpoints"})
    log_every: int = field(default=10, metadata={"min": 1, "help": "steps between logged losses"})
    sample_every: int = field(default=200, metadata={"min": 1, "help": "steps between logged sample enhancements"})
    max_bad_steps: int = field(default=5, metadata={"min": 1, "help": "stop after this many non-finite steps in a row"})
    num_workers: int = field(default=0, metadata={"min": 0, "help": "data loading processes (0 = main process)"})

    def network_options(self) -> NetworkOptions:
        return NetworkOptions(iem_stages=self.iem_stages, nrm_cells=self.nrm_cells, nrm_channels=self.nrm_channels,
                              gamma=self.gamma, warm_start=self.warm_start)


class TrainingDiverged(RuasError):
    """Too many non-finite losses in a row; the last good checkpoint was kept (exit status 1)."""

    exit_code = 1


# --------------------------------------------------------------------------------------------
# data: the crop of every step is a pure function of (seed, step)


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


# --------------------------------------------------------------------------------------------
# the Lightning module


def _finite(values: Sequence[torch.Tensor]) -> bool:
    return all(bool(torch.isfinite(v).all()) for v in values)


class RUASTrainingModule(pl.LightningModule):
    """Trains :class:`~ruas_nni.model.network.RUASNet` with the reference-free losses (manual optimisation:
    two SGD optimisers on their own schedules)."""

    def __init__(self, network: RUASNet, config: TrainConfig, progress: StepProgress | None = None,
                 preview: torch.Tensor | None = None) -> None:
        super().__init__()
        self.net = network
        self.config = config
        self.progress = progress if progress is not None else StepProgress()
        self.automatic_optimization = False
        self.bad_steps_in_a_row = 0
        self.skipped_steps = 0
        self.last_losses: dict[str, float] = {}
        self.register_buffer("preview", preview if preview is not None else torch.zeros(0), persistent=False)

    # -- optimisation ---------------------------------------------------------------------------
    def configure_optimizers(self):
        config = self.config
        optimizers = [torch.optim.SGD(self.net.iem.parameters(), lr=config.iem_lr, momentum=config.momentum,
                                      weight_decay=config.weight_decay)]
        if self.net.nrm is not None:
            optimizers.append(torch.optim.SGD(self.net.nrm.parameters(), lr=config.nrm_lr, momentum=config.momentum,
                                              weight_decay=config.weight_decay))
        return optimizers

    def _illumination_loss(self, y: torch.Tensor) -> torch.Tensor:
        config = self.config
        _, illuminations = self.net.iem(y)
        return illumination_loss(y, illuminations[-1], fidelity_weight=config.fidelity_weight,
                                 smooth_weight=config.smooth_weight, smooth_sigma=config.smooth_sigma,
                                 guide=config.smooth_guide)

    def _noise_loss(self, y: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():  # fresh forward with the updated IEM: nothing is differentiated through it
            u, _ = self.net.iem(y)
        x = self.net.nrm(u)
        return noise_loss(x, u, fidelity_weight=self.config.noise_fidelity_weight, tv_weight=self.config.tv_weight)

    def _step(self, optimizer, loss: torch.Tensor, parameters: list[torch.nn.Parameter]) -> bool:
        """Backward, clip, check and step; ``False`` (nothing changed) when anything is non-finite."""
        optimizer.zero_grad(set_to_none=True)
        if not _finite([loss.detach()]):
            return False
        self.manual_backward(loss)
        if self.config.grad_clip > 0:
            self.clip_gradients(optimizer, gradient_clip_val=self.config.grad_clip, gradient_clip_algorithm="norm")
        amp_scaled = str(self.trainer.precision).startswith("16")  # the scaler skips overflowing steps itself
        if not amp_scaled and not _finite([p.grad for p in parameters if p.grad is not None]):
            optimizer.zero_grad(set_to_none=True)
            return False
        optimizer.step()
        return True

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_index: int) -> None:
        images, steps = batch
        step = int(steps[0])
        optimizers = self.optimizers()
        if not isinstance(optimizers, (list, tuple)):
            optimizers = [optimizers]
        loss_t = self._illumination_loss(images)
        ok = self._step(optimizers[0], loss_t, list(self.net.iem.parameters()))
        losses = {"loss/iem": float(loss_t.detach())}
        if ok and self.net.nrm is not None and step % self.config.nrm_period == 0:
            loss_n = self._noise_loss(images)
            ok = self._step(optimizers[1], loss_n, list(self.net.nrm.parameters()))
            losses["loss/nrm"] = float(loss_n.detach())
        self._after_step(step, ok, losses)

    def _after_step(self, step: int, ok: bool, losses: dict[str, float]) -> None:
        self.progress.steps_done = step + 1
        self.last_losses = losses
        if ok:
            self.bad_steps_in_a_row = 0
            if self.logger is not None:
                # the IEM loss every log_every steps; the NRM loss whenever the (sparser) NRM step ran
                due = {k: v for k, v in losses.items() if k != "loss/iem" or (step + 1) % self.config.log_every == 0}
                if due:
                    self.logger.log_metrics(due, step=step + 1)
            return
        self.bad_steps_in_a_row += 1
        self.skipped_steps += 1
        warnings.warn(f"step {step + 1}: non-finite loss or gradient ({', '.join(f'{k}={v:g}' for k, v in losses.items())}); "
                      "step skipped", RuntimeWarning, stacklevel=2)
        if self.bad_steps_in_a_row >= self.config.max_bad_steps:
            raise TrainingDiverged(
                f"training diverged: {self.bad_steps_in_a_row} non-finite steps in a row (steps "
                f"{step + 2 - self.bad_steps_in_a_row}-{step + 1}); stopped, the last good checkpoint is kept"
            )

    # -- resumable state ------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["ruas_nni"] = {"steps_done": self.progress.steps_done, "bad_steps_in_a_row": self.bad_steps_in_a_row,
                                  "skipped_steps": self.skipped_steps, "config": to_yaml_dict(self.config)}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get("ruas_nni", {})
        self.progress.steps_done = int(state.get("steps_done", 0))
        self.bad_steps_in_a_row = int(state.get("bad_steps_in_a_row", 0))
        self.skipped_steps = int(state.get("skipped_steps", 0))

    # -- samples for TensorBoard ----------------------------------------------------------------
    @torch.no_grad()
    def preview_picture(self) -> torch.Tensor | None:
        """``input | IEM output | final output`` of the preview image (``3 x H x 3W``), or ``None``."""
        if self.preview.numel() == 0:
            return None
        was_training = self.net.training
        self.net.eval()
        result = self.net.enhance(self.preview.unsqueeze(0).float())
        self.net.train(was_training)
        panels = [self.preview, result.iem[0], result.final[0]]
        return torch.cat([p.float().clamp(0, 1).cpu() for p in panels], dim=2)


# --------------------------------------------------------------------------------------------
# callbacks


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoints written to a temporary name and renamed: a kill never leaves half a file."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        with atomic_write(path) as handle:
            torch.save(checkpoint, handle)


class _ChunkEnd(pl.Callback):
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


class _StepProgressBar(pl.Callback):
    """One progress bar over all steps (Lightning's counts epochs, which here are checkpoint chunks)."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.total = total
        self.enabled = enabled
        self.bar = None

    def on_train_start(self, trainer: pl.Trainer, module: RUASTrainingModule) -> None:
        if self.enabled and trainer.is_global_zero:
            from tqdm import tqdm

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


# --------------------------------------------------------------------------------------------
# the run: validated inputs, then training


def resolve_arch(arch: str) -> tuple[Genotype, str]:
    """``paper`` or the path of an ``arch.json`` (search output) -> genotype and a description."""
    if arch == "paper":
        return PAPER_GENOTYPE, "paper genotype (Liu et al., CVPR 2021, Sec. 4)"
    path = Path(arch)
    if not path.is_file():
        raise UsageError(f"--arch {arch}: no such file (give a search's arch.json, or 'paper')")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise UsageError(f"--arch {arch}: not a readable JSON file ({exc})") from None
    try:
        genotype = Genotype.from_any(data)
    except ValueError as exc:
        raise UsageError(f"--arch {arch}: {exc}") from None
    return genotype, f"{path}"


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
        from .. import __version__

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
    saved_path = out / CONFIG_FILE
    if not saved_path.is_file():
        return
    try:
        saved = from_mapping(TrainConfig, _read_yaml_quiet(saved_path), str(saved_path))
    except ConfigError:
        return
    old, new = to_yaml_dict(saved), to_yaml_dict(config)
    changed = [key for key in new if key not in RESUME_MAY_CHANGE and old.get(key) != new.get(key)]
    if changed:
        key = changed[0]
        raise UsageError(
            f"--resume: {out} was trained with {key}={old.get(key)!r}, now {key}={new.get(key)!r}; "
            "a run resumes only with the same recipe (steps may grow)"
        )


def _read_yaml_quiet(path: Path) -> dict[str, Any]:
    import yaml

    return yaml.safe_load(path.read_text(encoding="utf-8")) or {}


def prepare_training(config: TrainConfig, out: str | os.PathLike[str], resume: bool = False) -> TrainingRun:
    """Check everything a training run needs, before any training: architecture, data folders and
    image sizes, NRM initial weights, output folder. Problems raise :class:`UsageError` (one line)."""
    out = Path(out)
    genotype, arch_source = resolve_arch(config.arch)
    try:
        config.network_options()
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    files = scan_folders(config.data, "--data")
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out}: exists and is not a folder")
    state = out / STATE_DIR / STATE_FILE
    if state.exists() and not resume:
        raise UsageError(f"--out {out} already holds a training run; pass --resume to continue it, or choose another --out")
    if resume:
        _check_resumable(out, config)
    nrm_init = None
    if config.init_nrm is not None:
        if genotype.nrm is None:
            raise UsageError(f"--init-nrm {config.init_nrm}: the architecture has no NRM")
        try:
            nrm_init = load_nrm_init(config.init_nrm)
        except CheckpointError as exc:
            raise UsageError(f"--init-nrm {exc}") from None
        probe = export(genotype, config.network_options())
        try:
            probe.nrm.load_state_dict(nrm_init)
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()[0]
            raise UsageError(f"--init-nrm {config.init_nrm}: weights do not fit this NRM ({first[:160]})") from None
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
        elif run.config.zero_nrm_head:
            torch.nn.init.zeros_(network.nrm.head.weight)
            torch.nn.init.zeros_(network.nrm.head.bias)
    return network


def _accelerator(device: str) -> str:
    aliases = {"cuda": "gpu", "auto": "auto", "cpu": "cpu", "gpu": "gpu", "mps": "mps"}
    if device not in aliases:
        raise UsageError(f"--device must be one of auto, cpu, cuda (gpu), mps; got {device!r}")
    if aliases[device] == "gpu" and not torch.cuda.is_available():
        raise UsageError(f"--device {device}: no CUDA GPU is available here; use --device cpu or auto")
    return aliases[device]


def _strategy(strategy: str) -> str:
    # Steps that update only the IEM leave the NRM's parameters without gradients: DDP must know.
    return "ddp_find_unused_parameters_true" if strategy == "ddp" else strategy


def train(run: TrainingRun, *, device: str = "auto", devices: int | str = 1, strategy: str = "auto",
          precision: str = "32-true", progress: bool = True, threads: int | None = None) -> TrainResult:
    """Train the run's network (continuing from its last checkpoint when ``run.resume``) and write
    ``model.pt``, resumable state and TensorBoard logs (with sample enhancements) under ``run.out``.

    ``threads`` sets torch's CPU threads (on shared cores, fewer threads than cores is often much
    faster; bit-identical results need the same thread count)."""
    from pytorch_lightning.loggers import TensorBoardLogger

    config = run.config
    accelerator = _accelerator(device)
    if threads is not None:
        if threads < 1:
            raise UsageError(f"--threads must be at least 1, got {threads}")
        torch.set_num_threads(threads)
    run.out.mkdir(parents=True, exist_ok=True)
    with atomic_write(run.out / CONFIG_FILE) as handle:
        import yaml

        handle.write(yaml.safe_dump(to_yaml_dict(config), sort_keys=False).encode())

    progress_state = StepProgress()
    module = RUASTrainingModule(build_network(run), config, progress_state, _preview(run.images))
    data = UnpairedDataModule(run.images, config, progress_state)
    logger = TensorBoardLogger(save_dir=str(run.out), name=TENSORBOARD_DIR, version="", default_hp_metric=False)
    chunks = math.ceil(config.steps / config.checkpoint_every)
    try:
        trainer = pl.Trainer(
            accelerator=accelerator, devices=devices, strategy=_strategy(strategy), precision=precision,
            max_epochs=chunks, logger=logger, enable_checkpointing=False, enable_progress_bar=False,
            enable_model_summary=False, num_sanity_val_steps=0, use_distributed_sampler=False,
            callbacks=[_ChunkEnd(run), _StepProgressBar(config.steps, progress)],
            plugins=[AtomicCheckpointIO()], default_root_dir=str(run.out), log_every_n_steps=1,
        )
    except (ValueError, TypeError, RuntimeError) as exc:
        raise UsageError(f"cannot set up training on --device {device} --devices {devices} --precision {precision}: "
                         f"{str(exc).strip().splitlines()[0]}") from None
    resume_from = str(run.state_path) if run.resume and run.state_path.is_file() else None
    started = time.monotonic()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        warnings.filterwarnings("ignore", message=".*GPU available but not used.*")
        warnings.filterwarnings("ignore", message=".*LightningModule.*has parameters that were not used.*")
        warnings.filterwarnings("ignore", message=".*`training_step` returned `None`.*")
        warnings.filterwarnings("ignore", message=".*LeafSpec.*")  # Lightning's own pytree deprecation
        try:
            trainer.fit(module, datamodule=data, ckpt_path=resume_from)
        except TrainingDiverged as exc:
            kept = f"{run.model_path} (step {_steps_in(run.model_path)})" if run.model_path.is_file() else "none yet"
            raise TrainingDiverged(f"{exc}: {kept}") from None
    seconds = time.monotonic() - started
    if trainer.interrupted:
        raise RuasError(f"training interrupted; continue with --resume --out {run.out}")
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
        from ..model.checkpoint import load_checkpoint

        return load_checkpoint(model_path).metadata.get("steps", "?")
    except CheckpointError:
        return "?"


def load_train_config(yaml_path: str | os.PathLike[str] | None, overrides: Mapping[str, Any]) -> TrainConfig:
    """The recipe: defaults, then ``--config`` YAML, then flags (``None`` = not given)."""
    return load_config(TrainConfig, yaml_path, overrides)

