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

import yaml
from nni.experiment import AlgorithmConfig, Experiment, RemoteConfig, RemoteMachineConfig

from ..base.config import load_config
from ..base.errors import UsageError
from ..search.config import STRATEGIES, load_search_config
from ..training.config import load_train_config
from ..training.datasets import scan_folders
from .launch import _experiment_dir, _quiet_nni_logging, check_no_overlap, check_paired_data, check_port_free
from .settings import TrialSettings

__all__ = [
    "STRATEGIES",
    "CompareConfig",
    "load_compare_config",
    "check_compare_inputs",
    "compare_search_space",
    "trial_settings",
    "trial_command",
    "remote_training_service",
    "compare_experiment",
    "read_machine_list",
    "ASSESSORS",
]


ASSESSORS = {"medianstop": "Medianstop", "curvefitting": "Curvefitting"}
"""NNI assessors a comparison can use (they judge the intermediate PSNR of every search epoch)."""


@dataclass
class CompareConfig(TrialSettings):
    """The strategy comparison: the settings every trial shares (:class:`TrialSettings`, with its
    defaults) plus the experiment's own keys. Keys of ``ruas-nni compare --config YAML``; flags
    override them."""

    repeats: int = field(default=1, metadata={"min": 1, "help": "seeds per strategy (0 .. repeats-1)"})
    port: int = field(default=8080, metadata={"min": 1, "max": 65535, "help": "port of the NNI manager and web UI"})
    concurrency: int = field(default=1, metadata={"min": 1, "help": "trials running at the same time"})
    gpus_per_trial: int = field(default=0, metadata={"min": 0, "help": "GPUs per trial (0: CPU)"})
    max_trial_duration: str | None = field(default=None, metadata={"help": "e.g. '2h'; longer trials are stopped"})
    assessor: str | None = field(default=None, metadata={
        "choices": tuple(ASSESSORS), "help": "NNI assessor that stops trials whose intermediate PSNR lags"})
    assessor_start_step: int = field(default=2, metadata={"min": 0, "help": "epochs before the assessor judges"})
    machines: list[dict] | None = field(default=None, metadata={
        "help": "NNI machineList: run the trials on these machines over SSH (remote training service)"})
    nni_manager_ip: str | None = field(default=None, metadata={"help": "address of this machine the machines reach"})
    experiment_dir: str = field(default="~/nni-experiments", metadata={"help": "NNI's experiment working directory"})
    name: str = field(default="ruas-compare", metadata={"help": "experiment name on the web UI"})

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


def trial_settings(config: CompareConfig) -> TrialSettings:
    """What the comparison's trials run with: the config's :class:`TrialSettings` with absolute paths,
    the device (cpu, or auto when trials get GPUs) and one CPU thread per trial."""
    settings = config.trial_settings()
    settings.data = [str(Path(folder).resolve()) for folder in config.data]
    settings.eval_data = str(Path(config.eval_data or "").resolve())
    for key in ("search_config", "train_config"):
        if getattr(settings, key):
            setattr(settings, key, str(Path(getattr(settings, key)).resolve()))
    if settings.device is None:
        settings.device = "auto" if config.gpus_per_trial > 0 else "cpu"
    if settings.threads is None and config.gpus_per_trial == 0 and not config.machines:
        settings.threads = 1  # one thread per trial: the fastest on shared cores (docs/speed.md#threads)
    return settings


def trial_command(config: CompareConfig, python: str | None = None) -> str:
    """The shell command each trial runs: ``python -m ruas_nni.experiments.trial`` with the shared
    settings (:meth:`TrialSettings.to_argv`). On remote machines ``python`` is the one on the PATH
    that NNI sets from the machine's ``pythonPath``."""
    if python is None:
        python = "python3" if config.machines else sys.executable
    return shlex.join([python, "-m", "ruas_nni.experiments.trial", *trial_settings(config).to_argv()])


def read_machine_list(path: str | os.PathLike[str]) -> list[dict]:
    """The machines of a ``--machines`` YAML file: NNI's ``machineList`` form, either the list itself
    or a mapping with ``machineList`` (as in an NNI experiment config's ``trainingService``)."""
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise UsageError(f"`machines` {path}: cannot read ({exc.__class__.__name__}: {str(exc).splitlines()[0]})",
                         keys=("machines",)) from None
    if isinstance(data, dict):
        data = data.get("machineList", data.get("machine_list"))
    if not isinstance(data, list) or not data or not all(isinstance(m, dict) for m in data):
        raise UsageError(f"`machines` {path}: expected a list of machines (host, user, sshKeyFile, pythonPath, ...)",
                     keys=("machines",))
    return data


def code_directory() -> Path:
    """The trial code directory: the folder that holds the ``ruas_nni`` package in use, so that a
    trial (here, or on a remote machine, which gets a copy of it) runs the same code as ``compare``."""
    return Path(__file__).resolve().parents[2]


def remote_training_service(machines: Sequence[Mapping[str, Any]], use_active_gpu: bool) -> Any:
    """NNI's remote (SSH) training service over ``machines``, each an entry of NNI's ``machineList``
    (``host``, ``port``, ``user``, ``sshKeyFile`` or ``password``, ``pythonPath``, ...; camelCase or
    snake_case keys)."""
    entries = []
    for index, machine in enumerate(machines):
        if not isinstance(machine, Mapping):
            raise ValueError(f"'machines' entry {index + 1} must be a mapping (host, user, sshKeyFile, ...)")
        try:
            entry = RemoteMachineConfig(**{_snake(k): v for k, v in machine.items()})
        except (TypeError, ValueError, AttributeError) as exc:
            raise ValueError(f"'machines' entry {index + 1}: {exc}") from None
        if entry.use_active_gpu is None:
            entry.use_active_gpu = use_active_gpu
        entries.append(entry)
    return RemoteConfig(machine_list=entries, reuse_mode=False)  # NNI 3.0's own remote service (remote_v3)


def _snake(key: str) -> str:
    return "".join("_" + c.lower() if c.isupper() else c for c in str(key))


def compare_experiment(config: CompareConfig) -> Any:
    """The :class:`nni.experiment.Experiment` of a comparison (not started)."""
    _quiet_nni_logging()
    experiment = Experiment("remote" if config.machines else "local")
    nni_config = experiment.config
    nni_config.experiment_name = config.name
    nni_config.search_space = compare_search_space(config.strategies, config.seeds)
    nni_config.tuner.name = "GridSearch"
    nni_config.trial_command = trial_command(config)
    nni_config.trial_code_directory = str(code_directory())
    nni_config.trial_concurrency = config.concurrency
    nni_config.max_trial_number = config.trial_count
    nni_config.trial_gpu_number = config.gpus_per_trial
    if config.max_trial_duration:
        nni_config.max_trial_duration = config.max_trial_duration
    nni_config.experiment_working_directory = _experiment_dir(config.experiment_dir)
    if config.assessor:
        nni_config.assessor = AlgorithmConfig(name=ASSESSORS[config.assessor], class_args={
            "optimize_mode": "maximize", "start_step": config.assessor_start_step})
    if config.machines:
        nni_config.training_service = remote_training_service(config.machines, config.gpus_per_trial > 0)
        hosts = {str(m.get("host", "")) for m in config.machines}
        if config.nni_manager_ip:
            nni_config.nni_manager_ip = config.nni_manager_ip
        elif hosts <= {"127.0.0.1", "localhost", "::1"}:  # SSH to this machine: trials report to loopback
            nni_config.nni_manager_ip = "127.0.0.1"
    else:
        nni_config.training_service.use_active_gpu = config.gpus_per_trial > 0
    try:
        nni_config.validate()
    except (ValueError, TypeError, AssertionError) as exc:
        raise UsageError(f"NNI rejects the experiment config: {exc}") from None
    return experiment
