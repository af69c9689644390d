"""The RUAS architecture search: a typed configuration and :func:`run_search`, used by
``ruas-nni search`` and by NNI experiments.

A search builds :class:`search_spaces.RUASSpace`, the reference-free evaluator of
:mod:`search_spaces.evaluator` over folders of unpaired low-light images, and one of these NNI
one-shot strategies (:data:`~ruas_nni.search.config.STRATEGIES`):

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

The configuration is :mod:`ruas_nni.search.config`, the strategy :mod:`ruas_nni.search.strategies`,
the callbacks :mod:`ruas_nni.search.callbacks`; this module runs them and writes the results.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

# ``nni.nas.strategy`` must be imported before ``nni.nas.oneshot`` (see strategies/cooperative.py).
import nni.nas.strategy  # noqa: F401, I001
import numpy as np
import torch
import yaml
from nni.nas.evaluator.pytorch import Trainer
from nni.nas.execution import SequentialExecutionEngine
from nni.nas.space import RawFormatModelSpace
from nni.nas.strategy import Strategy
from pytorch_lightning.loggers import TensorBoardLogger

from search_spaces import RUASSpace
from search_spaces.evaluator import UnpairedSearchData, search_evaluator
from strategies import NonFiniteSearchError

from ..base.atomic import atomic_write
from ..base.config import to_yaml_dict
from ..base.errors import RuasError, UsageError
from ..base.quiet import show_progress
from ..base.threads import set_torch_threads
from ..model.genotype import Genotype
from ..model.ops import OPERATION_NAMES
from ..training.plumbing import AtomicCheckpointIO, lightning_trainer, resolve_accelerator, resume_mismatch
from .callbacks import CHECKPOINT_NAME, search_callbacks
from .config import SearchConfig
from .probabilities import architecture_probabilities
from .strategies import build_strategy, count_parameters, genotype_within_budget, random_genotype

__all__ = ["SearchResult", "SearchDivergedError", "AtomicCheckpointIO", "RESUME_MAY_CHANGE", "prepare_search", "run_search"]

_log = logging.getLogger(__name__)

RESUME_MAY_CHANGE = frozenset({"device", "progress", "threads"})
"""Settings that may differ between an interrupted search and its resumption (everything else must match)."""


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
    steps_per_epoch: int | None = None
    """Batches per search epoch actually run: ``steps`` or the training images' batches, the fewer."""
    train_images: int | None = None
    """Images in the training (lower-level) split; the others validate (the upper level)."""
    val_images: int | None = None


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _check_output(out: Path, config: SearchConfig, resume: bool) -> Path | None:
    """The checkpoint to resume from (``None``: start afresh); refuse to mix two searches."""
    checkpoint = out / "checkpoints" / CHECKPOINT_NAME
    saved_config = out / "search_config.yaml"
    if out.exists() and not out.is_dir():
        raise UsageError(f"`out` {out}: exists and is not a folder", keys=("out",))
    if not resume:
        if checkpoint.exists() or (out / "arch.json").exists():
            raise UsageError(f"`out` {out} already holds a search; pass `resume` to continue it or choose another `out`",
                             keys=("out", "resume"))
        return None
    if not checkpoint.exists():
        _log.warning("resuming: no checkpoint in %s yet; starting the search from the beginning", out)
        return None
    mismatch = resume_mismatch(saved_config, to_yaml_dict(config), RESUME_MAY_CHANGE)
    if mismatch is not None:
        raise UsageError(f"`resume`: {mismatch.key} is {mismatch.current!r} but the interrupted search in {out} used "
                         f"{mismatch.saved!r}; use the same settings or another `out`", keys=("resume", "out"))
    return checkpoint


def prepare_search(config: SearchConfig) -> tuple[torch.nn.Module, Strategy]:
    """Seed every generator, build the ``RUASSpace`` and the strategy of ``config``: what a search
    starts from (the strategy's ``mutate_model`` then draws the alphas, ``1e-3 * randn``)."""
    _seed_everything(config.seed)
    space = RUASSpace(iem_stages=config.iem_stages, nrm_cells=config.nrm_cells, nrm_channels=config.nrm_channels,
                      gamma=config.gamma, warm_start=config.warm_start, exposure=config.exposure,
                      exposure_gamma=config.exposure_gamma, tone=config.tone_options())
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


def run_search(config: SearchConfig, out: str | os.PathLike[str] | None = None, *, resume: bool = False,
               callbacks: Sequence[Any] = ()) -> SearchResult:
    """Run the search ``config`` describes and write ``arch.json``, TensorBoard logs and the checkpoint.

    ``out`` overrides ``config.out``. With ``resume=True`` the search continues from
    ``out/checkpoints/last.ckpt`` (and must have the same settings); the result equals that of an
    uninterrupted run with the same seed. ``callbacks`` (Lightning callbacks) join the search's own
    on its trainer, after them (e.g. a per-epoch report of an NNI trial). Bad data or settings raise :class:`UsageError` before
    anything starts; a search whose losses stop being finite raises :class:`SearchDivergedError` and
    keeps its last good checkpoint.
    """
    started = time.time()
    out_dir = Path(out if out is not None else (config.out or ""))
    if not str(out_dir):
        raise UsageError("`out`: give a folder for the search results", keys=("out",))
    config = dataclasses.replace(config, out=str(out_dir))
    if not config.data:
        raise UsageError("`data`: give at least one folder of low-light images", keys=("data",))
    accelerator = resolve_accelerator(config.device)
    resume_from = _check_output(out_dir, config, resume)
    if config.threads is not None:
        set_torch_threads(config.threads)

    data = UnpairedSearchData(config.data, crop=config.crop, val_fraction=config.val_fraction, seed=config.seed,
                              batch_size=config.batch_size, flip=config.flip)
    data.setup("fit")  # up-front: empty folders, unreadable images, a crop larger than every image

    out_dir.mkdir(parents=True, exist_ok=True)
    config_yaml = yaml.safe_dump(to_yaml_dict(config), sort_keys=False).encode("utf-8")
    with atomic_write(out_dir / "search_config.yaml") as handle:
        handle.write(config_yaml)

    if config.strategy == "random":
        return _random_search(config, out_dir, data, started)

    space, strategy = prepare_search(config)
    if accelerator == "gpu":
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
    logger = TensorBoardLogger(str(out_dir), name="tensorboard", version="", default_hp_metric=False)
    checkpoint_dir = out_dir / "checkpoints"
    trainer = lightning_trainer(
        out_dir, accelerator, logger=logger, callbacks=[*search_callbacks(config, checkpoint_dir), *callbacks],
        trainer_class=Trainer,  # NNI's traced Lightning trainer, which its Lightning evaluator needs
        max_epochs=config.epochs,
        limit_train_batches=config.steps if config.steps is not None else 1.0,
        devices=1,
        enable_progress_bar=config.progress and show_progress(stream=sys.stdout),  # Lightning's bar: stdout
    )
    evaluator = search_evaluator(data, trainer, learning_rate=config.weight_lr, learning_rate_min=config.weight_lr_min,
                                 momentum=config.weight_momentum, weight_decay=config.weight_decay,
                                 **config.loss_options())
    strategy.initialize(RawFormatModelSpace(space, evaluator), SequentialExecutionEngine())
    if resume_from is not None:
        strategy.load_state_dict({"ckpt_path": str(resume_from)})
    try:  # dependencies' warnings are filtered by ruas_nni.base.quiet (the commands call it)
        strategy.run()
    except NonFiniteSearchError as exc:
        kept = f"; the last good checkpoint is {resume_from or checkpoint_dir / CHECKPOINT_NAME}"
        raise SearchDivergedError(f"search stopped: {exc}{kept}") from None

    model = next(strategy.list_models())
    argmax = Genotype.from_sample(model.sample)
    probs = architecture_probabilities(space)
    # the most probable genotype within param_budget (the plain argmax when that fits)
    genotype = argmax
    if argmax.nrm is not None and config.param_budget is not None and count_parameters(argmax, config) > config.param_budget:
        genotype = genotype_within_budget(probs, config)
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
    arch["params"] = count_parameters(genotype, config)
    if genotype != argmax:
        arch["argmax"] = {**argmax.to_dict(), "params": count_parameters(argmax, config)}
    arch_path = out_dir / "arch.json"
    _write_json(arch_path, arch)
    checkpoint = checkpoint_dir / CHECKPOINT_NAME
    batches = -(-len(data.train_set) // config.batch_size)  # type: ignore[arg-type]
    per_epoch = min(batches, config.steps) if config.steps is not None else batches
    return SearchResult(arch, out_dir, arch_path, checkpoint if checkpoint.exists() else None,
                        out_dir / "tensorboard", seconds, per_epoch, len(data.train_set), len(data.val_set))


def _random_search(config: SearchConfig, out_dir: Path, data: UnpairedSearchData, started: float) -> SearchResult:
    """The ``random`` strategy: :func:`~ruas_nni.search.strategies.random_genotype`, no training;
    ``probs`` are uniform (nothing was learned)."""
    genotype, params, draws = random_genotype(config)
    uniform = [[1.0 / len(OPERATION_NAMES)] * len(OPERATION_NAMES) for _ in range(7)]
    seconds = time.time() - started
    arch: dict[str, Any] = {
        **genotype.to_dict(),
        "probs": {"iem": uniform, "nrm": uniform},
        "operations": list(OPERATION_NAMES),
        "strategy": config.strategy,
        "seed": config.seed,
        "epochs": 0,
        "steps": 0,
        "crop": config.crop,
        "seconds": round(seconds, 3),
        "data": [str(Path(d)) for d in config.data],
        "network": config.network_options(),
        "resumed": False,
        "params": params,
        "draws": draws,
    }
    arch_path = out_dir / "arch.json"
    _write_json(arch_path, arch)
    return SearchResult(arch, out_dir, arch_path, None, out_dir / "tensorboard", seconds, 0,
                        len(data.train_set), len(data.val_set))  # type: ignore[arg-type]
