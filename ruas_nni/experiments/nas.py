"""Multi-trial NAS on ``RUASSpace`` as an NNI experiment (``ruas-nni nas``).

NNI's multi-trial strategies (``Random``, ``RegularizedEvolution``, ``TPE``) run through
:class:`~nni.nas.experiment.NasExperiment`; each trial trains one sampled architecture briefly and
reports its PSNR on a paired *validation* folder (:func:`train_and_score`, wrapped in a
:class:`~nni.nas.evaluator.FunctionalEvaluator`). The search space and every sampled architecture show
on the web UI. It runs on NNI's local training service; ``examples/remote_training_service.yaml`` and
``examples/kubernetes_training_service.yaml`` show trials fanned out over machines.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import nni
from nni.nas import strategy
from nni.nas.evaluator import FunctionalEvaluator
from nni.nas.experiment import NasExperiment

from search_spaces import RUASSpace
from search_spaces.ruas import SHAPE_LABELS, shape_of

from ..base.atomic import atomic_write
from ..base.config import load_config
from ..base.errors import UsageError
from ..inference.evaluation import find_pairs
from ..model.genotype import Genotype
from ..training.config import TrainConfig
from ..training.datasets import scan_folders
from ..training.run import prepare_training, train
from .launch import (
    _experiment_dir,
    _quiet_nni_logging,
    _signals_as_interrupt,
    _tools_on_path,
    check_no_overlap,
    check_paired_data,
    check_port_free,
    trial_statuses,
)
from .trial_runner import TENSORBOARD_DIR, adopt_manager_parameters, link_dir, link_tensorboard_for_web_ui, score_checkpoint

__all__ = [
    "NAS_STRATEGIES",
    "NAS_SPACES",
    "NasConfig",
    "load_nas_config",
    "check_nas_inputs",
    "train_and_score",
    "nas_experiment",
    "run_nas",
]

NAS_STRATEGIES = ("random", "evolution", "tpe")
"""NNI multi-trial strategies offered by ``ruas-nni nas``: ``Random``, ``RegularizedEvolution``, ``TPE``."""

NAS_SPACES = ("paper", "scalable")
"""``paper``: ``RUASSpace()``, the paper's shape, edges searched; ``scalable``: ``RUASSpace.scalable()``,
the number of IEM stages, NRM cells and the NRM width searched with the edges."""


@dataclass
class NasConfig:
    """Multi-trial NAS on ``RUASSpace``. Keys of ``ruas-nni nas --config YAML``; flags override them."""

    strategy: str = field(default="evolution", metadata={"choices": NAS_STRATEGIES, "help": "NNI multi-trial strategy"})
    space: str = field(default="paper", metadata={"choices": NAS_SPACES, "help": (
        "paper: the edges of the paper's shape (3 IEM stages, 3 NRM cells of 6 channels); scalable: the shape too "
        "(1-3 stages, 1-3 cells, 3 / 6 / 12 channels), so cost and quality trade")})
    data: list[str] = field(default_factory=list, metadata={"help": "folders of unpaired low-light images"})
    val_data: str | None = field(default=None, metadata={
        "help": "paired folder (low/, high/) that scores each architecture; not your test set"})
    trials: int = field(default=20, metadata={"min": 1, "help": "architectures to train and score"})
    train_steps: int = field(default=200, metadata={"min": 1, "help": "training steps per architecture"})
    crop: int = field(default=128, metadata={"min": 8, "help": "training crop side"})
    seed: int = field(default=0, metadata={"min": 0, "help": "seed of the weights and crops of every trial"})
    population_size: int = field(default=8, metadata={"min": 2, "help": "evolution: population size"})
    sample_size: int = field(default=4, metadata={"min": 1, "help": "evolution: tournament size"})
    port: int = field(default=8080, metadata={"min": 1, "max": 65535})
    concurrency: int = field(default=1, metadata={"min": 1})
    gpus_per_trial: int = field(default=0, metadata={"min": 0})
    experiment_dir: str = field(default="~/nni-experiments")
    name: str = field(default="ruas-nas")

    def __post_init__(self) -> None:
        if self.sample_size > self.population_size:
            raise ValueError(f"'sample_size' ({self.sample_size}) must not exceed 'population_size' "
                             f"({self.population_size})")


def load_nas_config(path: str | os.PathLike[str] | None, overrides: Mapping[str, Any]) -> NasConfig:
    return load_config(NasConfig, path, overrides)


def check_nas_inputs(config: NasConfig, *, check_port: bool = True) -> dict[str, int]:
    images = len(scan_folders(list(config.data)))
    pairs = check_paired_data(config.val_data, "val_data")
    check_no_overlap(config.data, config.val_data or "", "val_data")
    if Path(config.val_data or "").resolve().name == "lol_eval15":
        raise UsageError(f"`val_data` {config.val_data}: lol_eval15 is the LOL test split; picking architectures by "
                         "their score on it is searching on it. Use a validation set.", keys=("val_data",))
    if check_port:
        check_port_free(config.port)
    return {"images": images, "pairs": pairs}


def _nni_output_dir() -> Path:
    out = os.environ.get("NNI_OUTPUT_DIR")
    return Path(out) if out else Path(tempfile.mkdtemp(prefix="ruas-nas-trial-"))


def train_and_score(model: Any, *, data: Sequence[str], val_data: str, train_steps: int, crop: int, seed: int,
                    device: str = "cpu") -> dict[str, Any]:
    """NNI function evaluator of multi-trial NAS: train the sampled architecture briefly with the
    reference-free losses, score it on ``val_data`` and report ``{"default": psnr, "psnr", "ssim",
    "params", "flops", "ms", "train_seconds", "genotype"}`` as the trial's final result (``ms``: milliseconds per
    600x400 image on the optimised engine).

    ``model`` is the frozen ``RUASSpace``; its architecture (NNI's sample) becomes a genotype and, from
    a scalable space, a shape (``arch.json``'s ``shape``), which is exported to the plain-PyTorch
    network and trained exactly as ``ruas-nni train`` trains it.
    """
    adopt_manager_parameters()  # NNI 3.0 may have handed this trial another trial's architecture
    current = nni.get_current_parameter()
    sample = getattr(current, "sample", None)
    if sample is None:
        raise RuntimeError("train_and_score runs inside an NNI NAS trial (or Evaluator.mock_runtime)")
    genotype, shape = Genotype.from_sample(sample), shape_of(sample)
    arch = {**genotype.to_dict(), **({"shape": shape} if shape else {})}
    out = _nni_output_dir()
    link_tensorboard_for_web_ui(out, os.environ.get("NNI_TRIAL_JOB_ID"))
    arch_path = out / "arch.json"
    with atomic_write(arch_path) as handle:
        handle.write((json.dumps(arch, indent=2) + "\n").encode())
    train_config = TrainConfig(arch=str(arch_path), data=list(data), steps=train_steps, crop=crop, seed=seed,
                               checkpoint_every=train_steps)
    training_run = prepare_training(train_config, out / "train")
    link_dir(out / "train" / TENSORBOARD_DIR, out / TENSORBOARD_DIR / "train")
    trained = train(training_run, device=device, progress=False)
    measured = score_checkpoint(trained.checkpoint, find_pairs(val_data, "val_data"))
    metrics = {
        "default": measured["psnr"], **measured, "train_seconds": round(trained.seconds, 3),
        "genotype": json.dumps(arch, separators=(",", ":")),
    }
    nni.report_final_result(metrics)
    return metrics


def _nas_strategy(config: NasConfig) -> Any:
    if config.strategy == "random":
        return strategy.Random(dedup=True, seed=config.seed)
    if config.strategy == "evolution":
        return strategy.RegularizedEvolution(population_size=config.population_size, sample_size=config.sample_size,
                                             seed=config.seed)
    if config.strategy == "tpe":
        return strategy.TPE()
    raise UsageError(f"unknown NAS strategy {config.strategy!r}; expected one of {', '.join(NAS_STRATEGIES)}")


def nas_experiment(config: NasConfig, model_space: Any | None = None) -> Any:
    """The :class:`~nni.nas.experiment.NasExperiment` of multi-trial NAS on ``RUASSpace`` (``config.space``;
    or ``model_space``) (not started)."""
    _quiet_nni_logging()
    with warnings.catch_warnings():  # NNI's module scan trips over torch's newer non-module classes
        warnings.filterwarnings("ignore", message=".*is found to be not a nn.Module.*")
        if model_space is not None:
            space = model_space
        else:
            space = RUASSpace.scalable() if config.space == "scalable" else RUASSpace()
    evaluator = FunctionalEvaluator(
        train_and_score, data=[str(Path(d).resolve()) for d in config.data],
        val_data=str(Path(config.val_data or "").resolve()), train_steps=config.train_steps, crop=config.crop,
        seed=config.seed, device="auto" if config.gpus_per_trial > 0 else "cpu",
    )
    experiment = NasExperiment(space, evaluator, _nas_strategy(config))
    nni_config = experiment.config
    nni_config.experiment_name = config.name
    nni_config.max_trial_number = config.trials
    nni_config.trial_concurrency = config.concurrency
    nni_config.trial_gpu_number = config.gpus_per_trial
    nni_config.experiment_working_directory = _experiment_dir(config.experiment_dir)
    nni_config.training_service.use_active_gpu = config.gpus_per_trial > 0
    return experiment


def run_nas(experiment: Any, port: int, top_k: int = 3) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """Run a multi-trial NAS experiment to the end (the strategy runs in this process); return the
    ``top_k`` architectures (NNI sample, final metrics) by PSNR, from the trials' own reports."""
    _tools_on_path()
    _quiet_nni_logging()
    with _signals_as_interrupt():
        experiment.run(port=port, wait_completion=True)
    if experiment.port is None:  # NNI caught Ctrl-C / SIGTERM and already stopped the experiment
        raise KeyboardInterrupt
    trials = [t for t in trial_statuses(port) if t.status == "SUCCEEDED" and t.final and "genotype" in t.final]
    trials.sort(key=lambda t: float(t.final.get("psnr", t.final.get("default", -math.inf))), reverse=True)  # type: ignore[union-attr]
    result = []
    for trial in trials[:top_k]:
        arch = json.loads(trial.final["genotype"])  # type: ignore[index]
        shape = {SHAPE_LABELS[key]: value for key, value in (arch.get("shape") or {}).items()}
        result.append(({**Genotype.from_any(arch).to_sample(), **shape}, dict(trial.final)))  # type: ignore[arg-type]
    return result
