"""The strategy comparison as an NNI experiment (``ruas-nni compare``).

One-shot searches run inside one process and never show on NNI's web UI, so the comparison is an
NNI experiment of its own: the search space ``{"strategy": choice, "seed": choice}``, the
``GridSearch`` tuner (one trial per strategy and seed), the local training service, and the trial
command ``python -m ruas_nni.experiments.trial ...`` (see :mod:`ruas_nni.experiments.trial`: search ->
train -> evaluate, intermediate validation losses, final PSNR / SSIM / parameters / FLOPs / search
time / genotype). :func:`compare_experiment` builds it; :func:`ruas_nni.experiments.launch.start_experiment`
starts the NNI manager and its web UI on a localhost port.

It runs on NNI's local training service; ``examples/remote_training_service.yaml`` and
``examples/kubernetes_training_service.yaml`` show the same trials fanned out over machines.
"""

from __future__ import annotations

import os
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from nni.experiment import Experiment

from ..base.config import load_config
from ..base.errors import UsageError
from ..search.config import STRATEGIES, load_search_config
from ..training.config import load_train_config
from ..training.datasets import scan_folders
from .launch import _experiment_dir, _quiet_nni_logging, check_no_overlap, check_paired_data, check_port_free

__all__ = [
    "STRATEGIES",
    "CompareConfig",
    "load_compare_config",
    "check_compare_inputs",
    "compare_search_space",
    "trial_command",
    "compare_experiment",
]


@dataclass
class CompareConfig:
    """The strategy comparison: which strategies and seeds, on which data, with which budget.
    Keys of ``ruas-nni compare --config YAML``; flags override them."""

    strategies: list[str] = field(default_factory=lambda: list(STRATEGIES), metadata={
        "choices": STRATEGIES, "help": "strategies to compare"})
    data: list[str] = field(default_factory=list, metadata={"help": "folders of unpaired low-light images"})
    eval_data: str | None = field(default=None, metadata={"help": "paired folder (low/, high/) to score on"})
    repeats: int = field(default=1, metadata={"min": 1, "help": "seeds per strategy (0 .. repeats-1)"})
    # A quick comparison by default (a trial is a whole search plus training); the paper's settings
    # are epochs 20, crop 320, train_steps 800 (examples/compare.yaml).
    epochs: int = field(default=4, metadata={"min": 1, "help": "search epochs"})
    steps: int | None = field(default=None, metadata={"min": 1, "help": "search steps per epoch (null: all)"})
    crop: int = field(default=128, metadata={"min": 8, "help": "crop side of search and training"})
    train_steps: int = field(default=200, metadata={"min": 1, "help": "training steps of each searched network"})
    port: int = field(default=8080, metadata={"min": 1, "max": 65535, "help": "port of the NNI manager and web UI"})
    concurrency: int = field(default=1, metadata={"min": 1, "help": "trials running at the same time"})
    gpus_per_trial: int = field(default=0, metadata={"min": 0, "help": "GPUs per trial (0: CPU)"})
    max_trial_duration: str | None = field(default=None, metadata={"help": "e.g. '2h'; longer trials are stopped"})
    search_config: str | None = field(default=None, metadata={"help": "YAML of `ruas-nni search` for other settings"})
    train_config: str | None = field(default=None, metadata={"help": "YAML of `ruas-nni train` for other settings"})
    experiment_dir: str = field(default="~/nni-experiments", metadata={"help": "NNI's experiment working directory"})
    name: str = field(default="ruas-compare", metadata={"help": "experiment name on the web UI"})

    def __post_init__(self) -> None:
        if not self.strategies:
            raise ValueError("'strategies' needs at least one strategy")
        duplicated = sorted({s for s in self.strategies if self.strategies.count(s) > 1})
        if duplicated:
            raise ValueError(f"'strategies' lists {duplicated[0]!r} twice")

    @property
    def seeds(self) -> list[int]:
        return list(range(self.repeats))

    @property
    def trial_count(self) -> int:
        return len(self.strategies) * self.repeats


def load_compare_config(path: str | os.PathLike[str] | None, overrides: Mapping[str, Any]) -> CompareConfig:
    """Defaults, then the ``--config`` YAML, then flags (``None``: not given)."""
    return load_config(CompareConfig, path, overrides)


def check_compare_inputs(config: CompareConfig, *, check_port: bool = True) -> dict[str, int]:
    """Check everything a comparison needs before starting it; return counts for the user."""
    images = len(scan_folders(list(config.data)))
    pairs = check_paired_data(config.eval_data, "eval_data")
    check_no_overlap(config.data, config.eval_data or "", "eval_data")
    if config.search_config:
        load_search_config(config.search_config, {"data": list(config.data)})
    if config.train_config:
        load_train_config(config.train_config, {"data": list(config.data)})
    if check_port:
        check_port_free(config.port)
    return {"images": images, "pairs": pairs}


def compare_search_space(strategies: Sequence[str], seeds: Sequence[int]) -> dict[str, Any]:
    """NNI search space of the comparison: every strategy with every seed (GridSearch runs each once)."""
    return {
        "strategy": {"_type": "choice", "_value": list(strategies)},
        "seed": {"_type": "choice", "_value": list(seeds)},
    }


def trial_command(config: CompareConfig, python: str | None = None) -> str:
    """The shell command each trial runs: ``python -m ruas_nni.experiments.trial`` with the shared settings."""
    words = [python or sys.executable, "-m", "ruas_nni.experiments.trial"]
    for folder in config.data:
        words += ["--data", str(Path(folder).resolve())]
    words += ["--eval-data", str(Path(config.eval_data or "").resolve()),
              "--epochs", str(config.epochs), "--crop", str(config.crop), "--train-steps", str(config.train_steps),
              "--device", "auto" if config.gpus_per_trial > 0 else "cpu"]
    if config.steps is not None:
        words += ["--steps", str(config.steps)]
    if config.gpus_per_trial == 0:  # share the cores between the trials that run at the same time
        words += ["--threads", str(max(1, (os.cpu_count() or 1) // config.concurrency))]
    if config.search_config:
        words += ["--search-config", str(Path(config.search_config).resolve())]
    if config.train_config:
        words += ["--train-config", str(Path(config.train_config).resolve())]
    return shlex.join(words)


def compare_experiment(config: CompareConfig) -> Any:
    """The :class:`nni.experiment.Experiment` of a comparison (not started)."""
    _quiet_nni_logging()
    experiment = Experiment("local")
    nni_config = experiment.config
    nni_config.experiment_name = config.name
    nni_config.search_space = compare_search_space(config.strategies, config.seeds)
    nni_config.tuner.name = "GridSearch"
    nni_config.trial_command = trial_command(config)
    nni_config.trial_code_directory = str(Path.cwd())
    nni_config.trial_concurrency = config.concurrency
    nni_config.max_trial_number = config.trial_count
    nni_config.trial_gpu_number = config.gpus_per_trial
    if config.max_trial_duration:
        nni_config.max_trial_duration = config.max_trial_duration
    nni_config.experiment_working_directory = _experiment_dir(config.experiment_dir)
    nni_config.training_service.use_active_gpu = config.gpus_per_trial > 0
    try:
        nni_config.validate()
    except (ValueError, TypeError, AssertionError) as exc:
        raise UsageError(f"NNI rejects the experiment config: {exc}") from None
    return experiment
