"""The RUAS architecture search: a typed configuration and :func:`run_search`, used by
``ruas-nni search`` and by NNI experiments.

A search builds :class:`search_spaces.RUASSpace`, the reference-free evaluator of
:mod:`search_spaces.evaluator` over folders of unpaired low-light images, and one of these NNI
one-shot strategies (:data:`STRATEGIES`):

* ``cooperative``: :class:`strategies.CooperativeBilevel`, the paper's Algorithm 1;
* ``separate``: :class:`strategies.SeparateSearch`, IEM to the end, then NRM (paper Fig. 9);
* ``joint``: :class:`strategies.JointDARTS`, one second-order DARTS on the summed loss;
* ``darts`` / ``gumbel-darts``: NNI's own :class:`~nni.nas.strategy.DARTS` and
  :class:`~nni.nas.strategy.GumbelDARTS`, unchanged.

It writes into its output folder:

* ``arch.json``: ``{"iem": [7 op names, e1..e7], "nrm": [...], "probs": {"iem": 7 x 7, "nrm": 7 x 7},
  "strategy", "seed", "epochs", "steps", "crop", "seconds", "data", "network", ...}``; ``probs`` rows
  are edges e1..e7, columns the operations in :data:`ruas_nni.model.ops.OPERATION_NAMES` order, each row
  the softmax of that edge's architecture weights;
* ``search_config.yaml``: the configuration (a resumed run must match it);
* ``checkpoints/last.ckpt``: a Lightning checkpoint, written atomically every ``checkpoint_every``
  batches, that ``resume=True`` continues from;
* ``tensorboard/``: losses, choice probabilities, and per epoch a heatmap of each module's 7 x 7
  softmax (the paper's Fig. 9) and its current genotype.

This module imports NNI and Lightning inside functions only; importing it is cheap.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np
import torch

from ..base.atomic import atomic_write
from ..base.config import ConfigError, load_config, read_yaml, to_yaml_dict
from ..base.errors import RuasError, UsageError
from ..model.network import EDGE_NAMES, WARM_STARTS
from ..model.ops import OPERATION_NAMES

if TYPE_CHECKING:  # pragma: no cover
    from nni.nas.strategy import Strategy

__all__ = [
    "STRATEGIES",
    "SearchConfig",
    "SearchResult",
    "SearchDivergedError",
    "load_search_config",
    "build_strategy",
    "prepare_search",
    "architecture_probabilities",
    "run_search",
]

_log = logging.getLogger(__name__)

STRATEGIES = ("cooperative", "separate", "joint", "darts", "gumbel-darts")
"""Search strategies by name: the paper's, its two ablations and NNI's two DARTS baselines."""

MODULES = ("iem", "nrm")
CHECKPOINT_NAME = "last.ckpt"

# Keys that may change between an interrupted run and its resumption.
_RESUMABLE_CHANGES = frozenset({"device", "progress", "threads"})


@dataclass
class SearchConfig:
    """Everything a search depends on. Defaults are the reference settings (spec Sec. 3)."""

    # data
    data: list[str] = field(default_factory=list, metadata={"help": "folders of unpaired low-light images"})
    crop: int = field(default=320, metadata={"min": 8, "help": "side of the random square crops"})
    val_fraction: float = field(default=0.5, metadata={"min": 0.0, "max": 0.95,
                                                      "help": "share of the images for the upper level"})
    batch_size: int = field(default=1, metadata={"min": 1})
    flip: bool = True
    # schedule
    strategy: str = field(default="cooperative", metadata={"choices": STRATEGIES})
    epochs: int = field(default=20, metadata={"min": 1})
    steps: int | None = field(default=None, metadata={"min": 1, "help": "at most this many batches per epoch"})
    seed: int = 0
    # cooperative search (Algorithm 1)
    beta: float = field(default=1.0, metadata={"help": "weight of L_val^n in the IEM's architecture loss"})
    unrolled: bool = field(default=True, metadata={"help": "second-order (unrolled) hypergradient"})
    nrm_period: int = field(default=10, metadata={"min": 1, "help": "step the NRM group every N-th batch"})
    iem_inner_steps: int = field(default=1, metadata={"min": 1})
    nrm_inner_steps: int = field(default=1, metadata={"min": 1})
    finite_difference_r: float = field(default=0.01, metadata={"min": 1e-12})
    # optimisers
    weight_lr: float = field(default=0.005, metadata={"min": 0.0})
    weight_lr_min: float = field(default=0.001, metadata={"min": 0.0})
    weight_momentum: float = field(default=0.9, metadata={"min": 0.0, "max": 1.0})
    weight_decay: float = field(default=3e-4, metadata={"min": 0.0})
    grad_clip: float | None = field(default=5.0, metadata={"min": 0.0})
    arch_lr: float = field(default=3e-4, metadata={"min": 0.0})
    arch_betas: list[float] = field(default_factory=lambda: [0.5, 0.999])
    arch_weight_decay: float = field(default=1e-3, metadata={"min": 0.0})
    gumbel_temperature: list[float] = field(default_factory=lambda: [1.0, 0.33],
                                            metadata={"help": "gumbel-darts: initial and final temperature"})
    # losses
    smooth_sigma: float | None = field(default=None, metadata={"help": "null: the authors' coefficient"})
    smooth_guide: str = field(default="rgb", metadata={"choices": ("rgb", "ycbcr")})
    # network
    iem_stages: int = field(default=3, metadata={"min": 1})
    nrm_cells: int = field(default=3, metadata={"min": 1})
    nrm_channels: int = field(default=6, metadata={"min": 1})
    gamma: float = 0.5
    warm_start: str = field(default="rectified", metadata={"choices": WARM_STARTS})
    # running
    checkpoint_every: int = field(default=10, metadata={"min": 1, "help": "write the checkpoint every N batches"})
    max_nonfinite_steps: int = field(default=5, metadata={"min": 1})
    device: str = field(default="auto", metadata={"choices": ("auto", "cpu", "cuda")})
    threads: int | None = field(default=None, metadata={"min": 1, "help": "CPU threads for torch"})
    progress: bool = True
    out: str | None = None

    def __post_init__(self) -> None:
        if len(self.arch_betas) != 2 or not all(0.0 <= b < 1.0 for b in self.arch_betas):
            raise ValueError(f"'arch_betas' must be two numbers in [0, 1), got {self.arch_betas}")
        if len(self.gumbel_temperature) != 2 or not self.gumbel_temperature[0] >= self.gumbel_temperature[1] >= 0:
            raise ValueError(f"'gumbel_temperature' must be [initial, final] with initial >= final >= 0, "
                             f"got {self.gumbel_temperature}")
        if self.weight_lr_min > self.weight_lr:
            raise ValueError(f"'weight_lr_min' ({self.weight_lr_min}) is larger than 'weight_lr' ({self.weight_lr})")

    def network_options(self) -> dict[str, Any]:
        """The :class:`ruas_nni.model.export.NetworkOptions` of the searched network."""
        return {"iem_stages": self.iem_stages, "nrm_cells": self.nrm_cells, "iem_channels": 3,
                "nrm_channels": self.nrm_channels, "gamma": self.gamma, "warm_start": self.warm_start}


class SearchDivergedError(RuasError):
    """The search stopped because its losses stopped being finite."""

    exit_code = 1


@dataclass
class SearchResult:
    """What :func:`run_search` produced."""

    arch: dict[str, Any]
    """The content of ``arch.json``."""
    out: Path
    arch_path: Path
    checkpoint: Path | None
    tensorboard: Path
    seconds: float


def load_search_config(yaml_path: str | os.PathLike[str] | None = None,
                       overrides: Mapping[str, Any] | None = None) -> SearchConfig:
    """Defaults, then the YAML file, then ``overrides`` (command-line flags; ``None`` = not given)."""
    return load_config(SearchConfig, yaml_path, overrides)


# ------------------------------------------------------------------------------------ strategy
def build_strategy(config: SearchConfig) -> Strategy:
    """The NNI strategy named by ``config.strategy`` with the configuration's settings."""
    from strategies import CooperativeBilevel, JointDARTS, SeparateSearch, ruas_groups  # imports NNI in a safe order

    from nni.nas.strategy import DARTS, GumbelDARTS  # isort: skip

    common = {"arc_learning_rate": config.arch_lr, "gradient_clip_val": config.grad_clip}
    if config.strategy in ("darts", "gumbel-darts"):
        if config.strategy == "darts":
            return DARTS(**common)
        return GumbelDARTS(temperature=(float(config.gumbel_temperature[0]), float(config.gumbel_temperature[1])), **common)
    options = dict(common, beta=config.beta, unrolled=config.unrolled, finite_difference_r=config.finite_difference_r,
                   arc_betas=tuple(config.arch_betas), arc_weight_decay=config.arch_weight_decay,
                   max_nonfinite_steps=config.max_nonfinite_steps)
    groups = ruas_groups(config.nrm_period, config.iem_inner_steps, config.nrm_inner_steps)
    if config.strategy == "cooperative":
        return CooperativeBilevel(groups=groups, **options)
    if config.strategy == "separate":
        return SeparateSearch(groups=groups, **options)
    return JointDARTS(**options)


# ------------------------------------------------------------------------------- architecture
def _mixed_layers(module: torch.nn.Module):
    from nni.nas.oneshot.pytorch.supermodule.differentiable import DifferentiableMixedLayer

    seen: set[str] = set()
    for sub in module.modules():
        if isinstance(sub, DifferentiableMixedLayer) and sub.label not in seen:
            seen.add(sub.label)
            yield sub


def architecture_probabilities(supernet: torch.nn.Module) -> dict[str, list[list[float]] | None]:
    """``{"iem": 7 x 7, "nrm": 7 x 7 or None}``: per edge e1..e7 the softmax of its architecture
    weights over :data:`OPERATION_NAMES` (0 for operations that are not candidates). A plain softmax,
    also for Gumbel DARTS (whose ``export_probs`` samples)."""
    rows: dict[str, dict[str, float]] = {}
    for layer in _mixed_layers(supernet):
        probs = torch.softmax(layer._arch_alpha.detach().double().cpu(), dim=-1).tolist()
        rows[layer.label] = dict(zip(layer.names, probs))
    result: dict[str, list[list[float]] | None] = {}
    for module in MODULES:
        labels = [f"{module}/{edge}" for edge in EDGE_NAMES]
        if all(label in rows for label in labels):
            result[module] = [[float(rows[label].get(op, 0.0)) for op in OPERATION_NAMES] for label in labels]
        else:
            result[module] = None
    return result


def _heatmap(matrix: list[list[float]], cell: int = 24) -> np.ndarray:
    """A ``3 x H x W`` float image of a 7 x 7 probability matrix (paper Fig. 9): one ``cell`` x ``cell``
    square per edge (row) and operation (column), white grid lines. Each row is scaled from its least
    (dark blue) to its most likely operation (yellow), so the ranking on every edge shows even while
    the probabilities are still close to uniform; the values themselves are logged as scalars."""
    values = np.asarray(matrix, dtype=np.float64)
    low_end = values.min(axis=1, keepdims=True)
    spread = values.max(axis=1, keepdims=True) - low_end
    scale = np.where(spread > 0, (values - low_end) / np.where(spread > 0, spread, 1.0), 0.5)
    low, mid, high = np.array([0.07, 0.04, 0.33]), np.array([0.13, 0.57, 0.55]), np.array([0.99, 0.91, 0.14])
    s = scale[..., None]
    colours = np.where(s < 0.5, low + (mid - low) * (s / 0.5), mid + (high - mid) * ((s - 0.5) / 0.5))
    image = np.kron(colours, np.ones((cell, cell, 1)))
    image[::cell, :, :] = 1.0
    image[:, ::cell, :] = 1.0
    return np.ascontiguousarray(image.transpose(2, 0, 1)).astype(np.float32)


def _callbacks(config: SearchConfig, checkpoint_dir: Path) -> list[Any]:
    """Checkpointing, random-state, heatmap and divergence callbacks of a search."""
    import pytorch_lightning as pl
    from pytorch_lightning.callbacks import ModelCheckpoint

    from strategies import NonFiniteSearchError

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
        """Per epoch, each module's 7 x 7 softmax as an image (paper Fig. 9) and its genotype."""

        def _write(self, trainer: pl.Trainer, pl_module: pl.LightningModule, step: int) -> None:
            experiment = getattr(trainer.logger, "experiment", None)
            if experiment is None or not hasattr(experiment, "add_image"):
                return
            probs = architecture_probabilities(pl_module)
            for module, matrix in probs.items():
                if matrix is None:
                    continue
                experiment.add_image(f"alpha/{module}", _heatmap(matrix), global_step=step)
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

    callbacks: list[Any] = [PeriodicCheckpoint(checkpoint_dir, config.checkpoint_every), RandomState(), AlphaHeatmaps()]
    if config.strategy in ("darts", "gumbel-darts"):
        callbacks.append(NonFiniteGuard(config.max_nonfinite_steps))
    return callbacks


def _checkpoint_io():
    """Lightning checkpoint I/O that writes through :func:`ruas_nni.base.atomic.atomic_write` (a file is
    complete or absent, never truncated by a kill) and reads our own checkpoints in full."""
    from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO

    class AtomicCheckpointIO(TorchCheckpointIO):
        def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
            with atomic_write(path) as handle:
                torch.save(checkpoint, handle)

        def load_checkpoint(self, path: Any, map_location: Any = None, weights_only: bool | None = None) -> dict[str, Any]:
            return torch.load(path, map_location=map_location or "cpu", weights_only=False)

    return AtomicCheckpointIO()


def _accelerator(device: str) -> str:
    if device == "auto":
        return "gpu" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        if not torch.cuda.is_available():
            raise UsageError("--device cuda: no CUDA GPU is available here; use --device cpu or auto")
        return "gpu"
    return "cpu"


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _check_output(out: Path, config: SearchConfig, resume: bool) -> Path | None:
    """The checkpoint to resume from (``None``: start afresh); refuse to mix two searches."""
    checkpoint = out / "checkpoints" / CHECKPOINT_NAME
    saved_config = out / "search_config.yaml"
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out}: exists and is not a folder")
    if not resume:
        if checkpoint.exists() or (out / "arch.json").exists():
            raise UsageError(f"--out {out} already holds a search; pass --resume to continue it or choose another --out")
        return None
    if not checkpoint.exists():
        _log.warning("--resume: no checkpoint in %s yet; starting the search from the beginning", out)
        return None
    if saved_config.exists():
        try:
            previous = read_yaml(saved_config)
        except ConfigError:
            previous = {}
        current = to_yaml_dict(config)
        for key, value in current.items():
            if key in _RESUMABLE_CHANGES or key not in previous:
                continue
            if previous[key] != value:
                raise UsageError(f"--resume: {key} is {value!r} but the interrupted search in {out} used "
                                 f"{previous[key]!r}; use the same settings or another --out")
    return checkpoint


def prepare_search(config: SearchConfig) -> tuple[torch.nn.Module, Strategy]:
    """Seed every generator, build the ``RUASSpace`` and the strategy of ``config``: what a search
    starts from (the strategy's ``mutate_model`` then draws the alphas, ``1e-3 * randn``)."""
    from search_spaces import RUASSpace

    _seed_everything(config.seed)
    space = RUASSpace(iem_stages=config.iem_stages, nrm_cells=config.nrm_cells, nrm_channels=config.nrm_channels,
                      gamma=config.gamma, warm_start=config.warm_start)
    return space, build_strategy(config)


def _write_json(path: Path, data: dict[str, Any]) -> None:
    """``arch.json``: indented, with each probability row on one line."""
    rows: dict[str, str] = {}

    def compact(value: Any) -> Any:
        if isinstance(value, list) and value and all(isinstance(v, list) for v in value):
            key = f"@@{len(rows)}@@"
            rows[key] = "[\n      " + ",\n      ".join(json.dumps(row) for row in value) + "\n    ]"
            return key
        return value

    data = dict(data)
    if isinstance(data.get("probs"), dict):
        data["probs"] = {k: compact(v) for k, v in data["probs"].items()}
    text = json.dumps(data, indent=2)
    for key, row_text in rows.items():
        text = text.replace(f'"{key}"', row_text)
    with atomic_write(path) as handle:
        handle.write((text + "\n").encode("utf-8"))


def run_search(config: SearchConfig, out: str | os.PathLike[str] | None = None, *, resume: bool = False) -> SearchResult:
    """Run the search ``config`` describes and write ``arch.json``, TensorBoard logs and the checkpoint.

    ``out`` overrides ``config.out``. With ``resume=True`` the search continues from
    ``out/checkpoints/last.ckpt`` (and must have the same settings); the result equals that of an
    uninterrupted run with the same seed. Bad data or settings raise :class:`UsageError` before
    anything starts; a search whose losses stop being finite raises :class:`SearchDivergedError` and
    keeps its last good checkpoint.
    """
    import warnings

    import yaml

    started = time.time()
    out_dir = Path(out if out is not None else (config.out or ""))
    if not str(out_dir):
        raise UsageError("--out: give a folder for the search results")
    config = dataclasses.replace(config, out=str(out_dir))
    if not config.data:
        raise UsageError("--data: give at least one folder of low-light images")
    accelerator = _accelerator(config.device)
    resume_from = _check_output(out_dir, config, resume)
    if config.threads is not None:
        torch.set_num_threads(config.threads)

    from nni.nas.evaluator.pytorch import Trainer
    from nni.nas.execution import SequentialExecutionEngine
    from nni.nas.space import RawFormatModelSpace
    from pytorch_lightning.loggers import TensorBoardLogger

    from search_spaces.evaluator import UnpairedSearchData, search_evaluator
    from strategies import NonFiniteSearchError

    data = UnpairedSearchData(config.data, crop=config.crop, val_fraction=config.val_fraction, seed=config.seed,
                              batch_size=config.batch_size, flip=config.flip)
    data.setup("fit")  # up-front: empty folders, unreadable images, a crop larger than every image

    out_dir.mkdir(parents=True, exist_ok=True)
    config_yaml = yaml.safe_dump(to_yaml_dict(config), sort_keys=False).encode("utf-8")
    with atomic_write(out_dir / "search_config.yaml") as handle:
        handle.write(config_yaml)

    space, strategy = prepare_search(config)
    if accelerator == "gpu":
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
    logger = TensorBoardLogger(str(out_dir), name="tensorboard", version="", default_hp_metric=False)
    checkpoint_dir = out_dir / "checkpoints"
    trainer = Trainer(
        max_epochs=config.epochs,
        limit_train_batches=config.steps if config.steps is not None else 1.0,
        accelerator=accelerator,
        devices=1,
        logger=logger,
        callbacks=_callbacks(config, checkpoint_dir),
        plugins=[_checkpoint_io()],
        enable_progress_bar=config.progress,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        log_every_n_steps=1,
        default_root_dir=str(out_dir),
    )
    evaluator = search_evaluator(data, trainer, learning_rate=config.weight_lr, learning_rate_min=config.weight_lr_min,
                                 momentum=config.weight_momentum, weight_decay=config.weight_decay,
                                 smooth_sigma=config.smooth_sigma, smooth_guide=config.smooth_guide)
    strategy.initialize(RawFormatModelSpace(space, evaluator), SequentialExecutionEngine())
    if resume_from is not None:
        strategy.load_state_dict({"ckpt_path": str(resume_from)})
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        warnings.filterwarnings("ignore", message=".*is found to be not a nn.Module.*")
        warnings.filterwarnings("ignore", message=".*Checkpoint directory .* exists and is not empty.*")
        try:
            strategy.run()
        except NonFiniteSearchError as exc:
            kept = f"; the last good checkpoint is {resume_from or checkpoint_dir / CHECKPOINT_NAME}"
            raise SearchDivergedError(f"search stopped: {exc}{kept}") from None

    model = next(strategy.list_models())
    from ..model.genotype import Genotype

    genotype = Genotype.from_sample(model.sample)
    probs = architecture_probabilities(space)
    seconds = time.time() - started
    arch: dict[str, Any] = {
        **genotype.to_dict(),
        "probs": probs,
        "operations": list(OPERATION_NAMES),
        "strategy": config.strategy,
        "seed": config.seed,
        "epochs": config.epochs,
        "steps": config.steps,
        "crop": config.crop,
        "seconds": round(seconds, 3),
        "data": [str(Path(d)) for d in config.data],
        "network": config.network_options(),
        "resumed": resume_from is not None,
    }
    arch_path = out_dir / "arch.json"
    _write_json(arch_path, arch)
    checkpoint = checkpoint_dir / CHECKPOINT_NAME
    return SearchResult(arch, out_dir, arch_path, checkpoint if checkpoint.exists() else None,
                        out_dir / "tensorboard", seconds)
