"""NNI experiments around RUAS: the strategy comparison as NNI trials, and multi-trial NAS on ``RUASSpace``.

**Strategy comparison** (``ruas-nni compare``). One-shot searches run inside one process and never
show on NNI's web UI, so the comparison is an NNI experiment of its own: the search space
``{"strategy": choice, "seed": choice}``, the ``GridSearch`` tuner (one trial per strategy and seed),
the local training service, and the trial command ``python -m ruas_nni.experiments.trial ...`` (see
:mod:`ruas_nni.experiments.trial`: search -> train -> evaluate, intermediate validation losses, final PSNR /
SSIM / parameters / FLOPs / search time / genotype). :func:`compare_experiment` builds it,
:func:`start_experiment` starts the NNI manager and its web UI on a localhost port.

**Multi-trial NAS** (``ruas-nni nas``). ``RUASSpace`` with NNI's multi-trial strategies (``Random``,
``RegularizedEvolution``, ``TPE``) through :class:`~nni.nas.experiment.NasExperiment`; each trial
trains one sampled architecture briefly and reports its PSNR on a paired *validation* folder
(:func:`train_and_score`, wrapped in a :class:`~nni.nas.evaluator.FunctionalEvaluator`). The search
space and every sampled architecture show on the web UI.

Both run on NNI's local training service; ``examples/remote_training_service.yaml`` and
``examples/kubernetes_training_service.yaml`` show the same trials fanned out over machines.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shlex
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

from ..base.config import load_config
from ..base.errors import UsageError
from .trial import STRATEGIES

__all__ = [
    "STRATEGIES",
    "NAS_STRATEGIES",
    "CompareConfig",
    "NasConfig",
    "check_port_free",
    "check_compare_inputs",
    "compare_search_space",
    "trial_command",
    "compare_experiment",
    "nas_experiment",
    "start_experiment",
    "TrialStatus",
    "trial_statuses",
    "wait_for_trials",
    "keep_web_ui_until_interrupted",
    "train_and_score",
    "run_nas",
    "run_attached",
    "web_ui_url",
]

NAS_STRATEGIES = ("random", "evolution", "tpe")
"""NNI multi-trial strategies offered by ``ruas-nni nas``: ``Random``, ``RegularizedEvolution``, ``TPE``."""

FINISHED_STATUSES = frozenset({"SUCCEEDED", "FAILED", "USER_CANCELED", "SYS_CANCELED", "EARLY_STOPPED"})
"""Trial job statuses after which a trial does nothing more."""

EXPERIMENT_ENDED = frozenset({"DONE", "STOPPED", "ERROR"})
"""Experiment statuses after which no trial will start."""


# --------------------------------------------------------------------------------------------
# configuration


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


@dataclass
class NasConfig:
    """Multi-trial NAS on ``RUASSpace``. Keys of ``ruas-nni nas --config YAML``; flags override them."""

    strategy: str = field(default="evolution", metadata={"choices": NAS_STRATEGIES, "help": "NNI multi-trial strategy"})
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


def load_compare_config(path: str | os.PathLike[str] | None, overrides: Mapping[str, Any]) -> CompareConfig:
    """Defaults, then the ``--config`` YAML, then flags (``None``: not given)."""
    return load_config(CompareConfig, path, overrides)


def load_nas_config(path: str | os.PathLike[str] | None, overrides: Mapping[str, Any]) -> NasConfig:
    return load_config(NasConfig, path, overrides)


# --------------------------------------------------------------------------------------------
# checks done before anything starts


def check_port_free(port: int, flag: str = "--port") -> None:
    """Raise :class:`UsageError` when something listens on ``localhost:port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(1.0)
        if sock.connect_ex(("127.0.0.1", port)) == 0:
            raise UsageError(f"{flag} {port}: the port is in use (another NNI experiment? stop it with "
                             f"`nnictl stop --port {port}`), or choose another port")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the NNI manager (Node) listens
        try:
            sock.bind(("", port))
        except OSError as exc:
            raise UsageError(f"{flag} {port}: cannot listen on this port ({exc.strerror or exc})") from None


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def check_paired_data(folder: str | None, flag: str) -> int:
    """Number of pairs in a paired folder (``low/``, ``high/``); one-line errors otherwise."""
    from ..inference.evaluation import find_pairs

    if not folder:
        raise UsageError(f"{flag}: give a folder with low/ and high/ sub-folders (the same file names in both)")
    return len(find_pairs(folder, flag))


def check_no_overlap(data: Sequence[str], paired: str, paired_flag: str) -> None:
    """Refuse training folders that contain, or lie inside, the paired evaluation folder."""
    paired_path = Path(paired).resolve()
    for folder in data:
        path = Path(folder).resolve()
        if _inside(path, paired_path) or _inside(paired_path, path):
            raise UsageError(f"--data {folder} overlaps {paired_flag} {paired}: never search or train on the "
                             "evaluation pairs")


def check_compare_inputs(config: CompareConfig, *, check_port: bool = True) -> dict[str, int]:
    """Check everything a comparison needs before starting it; return counts for the user."""
    from ..training.datasets import scan_folders

    images = len(scan_folders(list(config.data)))
    pairs = check_paired_data(config.eval_data, "--eval-data")
    check_no_overlap(config.data, config.eval_data or "", "--eval-data")
    if config.search_config:
        from ..search.config import load_search_config

        load_search_config(config.search_config, {"data": list(config.data)})
    if config.train_config:
        from ..training.config import load_train_config

        load_train_config(config.train_config, {"data": list(config.data)})
    if check_port:
        check_port_free(config.port)
    return {"images": images, "pairs": pairs}


def check_nas_inputs(config: NasConfig, *, check_port: bool = True) -> dict[str, int]:
    from ..training.datasets import scan_folders

    images = len(scan_folders(list(config.data)))
    pairs = check_paired_data(config.val_data, "--val-data")
    check_no_overlap(config.data, config.val_data or "", "--val-data")
    if Path(config.val_data or "").resolve().name == "lol_eval15":
        raise UsageError(f"--val-data {config.val_data}: lol_eval15 is the LOL test split; picking architectures by "
                         "their score on it is searching on it. Use a validation set.")
    if check_port:
        check_port_free(config.port)
    return {"images": images, "pairs": pairs}


# --------------------------------------------------------------------------------------------
# the comparison experiment


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


def _quiet_nni_logging() -> None:
    """NNI prints its own (coloured) log lines; keep them from reaching the root logger a second time."""
    import logging

    logging.getLogger("nni").propagate = False


def _experiment_dir(path: str) -> str:
    return str(Path(path).expanduser().resolve())


def compare_experiment(config: CompareConfig) -> Any:
    """The :class:`nni.experiment.Experiment` of a comparison (not started)."""
    from nni.experiment import Experiment

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


# --------------------------------------------------------------------------------------------
# multi-trial NAS


def _nni_output_dir() -> Path:
    import tempfile

    out = os.environ.get("NNI_OUTPUT_DIR")
    return Path(out) if out else Path(tempfile.mkdtemp(prefix="ruas-nas-trial-"))


def train_and_score(model: Any, *, data: Sequence[str], val_data: str, train_steps: int, crop: int, seed: int,
                    device: str = "cpu") -> dict[str, Any]:
    """NNI function evaluator of multi-trial NAS: train the sampled architecture briefly with the
    reference-free losses, score it on ``val_data`` and report ``{"default": psnr, "psnr", "ssim",
    "params", "flops", "train_seconds", "genotype"}`` as the trial's final result.

    ``model`` is the frozen ``RUASSpace``; its architecture (NNI's sample) becomes a genotype, which
    is exported to the plain-PyTorch network and trained exactly as ``ruas-nni train`` trains it.
    """
    import nni

    from ..base.atomic import atomic_write
    from ..inference.evaluation import find_pairs
    from ..model.genotype import Genotype
    from ..training.config import TrainConfig
    from ..training.run import prepare_training, train
    from .trial import (
        TENSORBOARD_DIR,
        _link_dir,
        adopt_manager_parameters,
        link_tensorboard_for_web_ui,
        score_checkpoint,
    )

    adopt_manager_parameters()  # NNI 3.0 may have handed this trial another trial's architecture
    current = nni.get_current_parameter()
    sample = getattr(current, "sample", None)
    if sample is None:
        raise RuntimeError("train_and_score runs inside an NNI NAS trial (or Evaluator.mock_runtime)")
    genotype = Genotype.from_sample(sample)
    out = _nni_output_dir()
    link_tensorboard_for_web_ui(out, os.environ.get("NNI_TRIAL_JOB_ID"))
    arch_path = out / "arch.json"
    with atomic_write(arch_path) as handle:
        handle.write((json.dumps(genotype.to_dict(), indent=2) + "\n").encode())
    train_config = TrainConfig(arch=str(arch_path), data=list(data), steps=train_steps, crop=crop, seed=seed,
                               checkpoint_every=train_steps)
    training_run = prepare_training(train_config, out / "train")
    _link_dir(out / "train" / TENSORBOARD_DIR, out / TENSORBOARD_DIR / "train")
    trained = train(training_run, device=device, progress=False)
    measured = score_checkpoint(trained.checkpoint, find_pairs(val_data, "--val-data"))
    metrics = {
        "default": measured["psnr"], **measured, "train_seconds": round(trained.seconds, 3),
        "genotype": json.dumps(genotype.to_dict(), separators=(",", ":")),
    }
    nni.report_final_result(metrics)
    return metrics


def _nas_strategy(config: NasConfig) -> Any:
    from nni.nas import strategy

    if config.strategy == "random":
        return strategy.Random(dedup=True, seed=config.seed)
    if config.strategy == "evolution":
        return strategy.RegularizedEvolution(population_size=config.population_size, sample_size=config.sample_size,
                                             seed=config.seed)
    if config.strategy == "tpe":
        return strategy.TPE()
    raise UsageError(f"unknown NAS strategy {config.strategy!r}; expected one of {', '.join(NAS_STRATEGIES)}")


def nas_experiment(config: NasConfig, model_space: Any | None = None) -> Any:
    """The :class:`~nni.nas.experiment.NasExperiment` of multi-trial NAS on ``RUASSpace`` (not started)."""
    import warnings

    from nni.nas.evaluator import FunctionalEvaluator
    from nni.nas.experiment import NasExperiment

    from search_spaces import RUASSpace

    _quiet_nni_logging()
    with warnings.catch_warnings():  # NNI's module scan trips over torch's newer non-module classes
        warnings.filterwarnings("ignore", message=".*is found to be not a nn.Module.*")
        space = model_space if model_space is not None else RUASSpace()
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


# --------------------------------------------------------------------------------------------
# running an experiment


def web_ui_url(port: int) -> str:
    return f"http://localhost:{port}"


def _tools_on_path() -> None:
    """Put this Python's ``bin`` folder first on ``PATH``: the NNI manager starts ``tensorboard`` (the web
    UI's TensorBoard button) by name, which must be the one installed beside NNI."""
    bin_dir = str(Path(sys.executable).parent)
    parts = os.environ.get("PATH", "").split(os.pathsep)
    if not parts or parts[0] != bin_dir:
        os.environ["PATH"] = os.pathsep.join([bin_dir, *[p for p in parts if p != bin_dir]])


def start_experiment(experiment: Any, port: int, *, detach: bool) -> None:
    """Start the NNI manager (and web UI) of ``experiment`` on ``port``. Detached, it outlives this
    process (stop it with ``nnictl stop --port PORT``); otherwise it stops when this process exits."""
    from nni.experiment import RunMode

    _tools_on_path()
    _quiet_nni_logging()
    try:
        experiment.start(port, run_mode=RunMode.Detach if detach else RunMode.Background)
    except RuntimeError as exc:
        raise UsageError(f"cannot start the NNI experiment on port {port}: {exc}") from None


@dataclass(frozen=True)
class TrialStatus:
    """One trial as NNI's REST API reports it."""

    trial_id: str
    status: str
    parameters: dict[str, Any]
    final: dict[str, Any] | None
    log_path: str | None


def _decode_metric(data: Any) -> Any:
    """NNI stores metrics as a JSON string of a JSON string."""
    value = data
    for _ in range(2):
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except ValueError:
                break
    return value


def trial_statuses(port: int) -> list[TrialStatus]:
    """Every trial of the experiment on ``port`` (REST API ``/api/v1/nni/trial-jobs``)."""
    from nni.experiment import rest

    jobs = rest.get(port, "/trial-jobs") or []
    result = []
    for job in jobs:
        parameters: dict[str, Any] = {}
        for text in job.get("hyperParameters") or []:
            with contextlib.suppress(ValueError, TypeError):
                parameters = json.loads(text).get("parameters", {}) or {}
        finals = job.get("finalMetricData") or []
        final = _decode_metric(finals[-1]["data"]) if finals else None
        if final is not None and not isinstance(final, dict):
            final = {"default": final}
        result.append(TrialStatus(job["trialJobId"], job.get("status", "UNKNOWN"),
                                  parameters if isinstance(parameters, dict) else {}, final, job.get("logPath")))
    return sorted(result, key=lambda t: t.trial_id)


def describe_trial(trial: TrialStatus) -> str:
    """``<id> cooperative seed 0: SUCCEEDED  PSNR 14.2 dB  SSIM 0.51``."""
    what = " ".join(f"{k} {v}" for k, v in trial.parameters.items()) if trial.parameters else "architecture"
    line = f"trial {trial.trial_id} ({what}): {trial.status}"
    if trial.final and "psnr" in trial.final:
        line += f"  PSNR {float(trial.final['psnr']):.3f} dB  SSIM {float(trial.final.get('ssim', float('nan'))):.4f}"
    if trial.status == "FAILED" and trial.log_path:
        line += f"  (log: {Path(trial.log_path) / 'trial.log'})"
    return line


@contextlib.contextmanager
def _signals_as_interrupt() -> Iterator[None]:
    """Turn SIGTERM and SIGHUP into ``KeyboardInterrupt`` so that the experiment is stopped cleanly."""
    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = {}
    for name in ("SIGTERM", "SIGHUP"):
        signum = getattr(signal, name, None)
        if signum is not None:
            with contextlib.suppress(ValueError, OSError):
                previous[signum] = signal.signal(signum, handler)
    try:
        yield
    finally:
        for signum, old in previous.items():
            with contextlib.suppress(ValueError, OSError):
                signal.signal(signum, old)


def wait_for_trials(experiment: Any, port: int, print_line: Callable[[str], None] = print,
                    poll_seconds: float = 3.0) -> list[TrialStatus]:
    """Wait until the experiment on ``port`` has no trial left to run, printing every trial's status
    changes. Returns the trials; raises ``ConnectionError`` when the manager went away."""
    seen: dict[str, str] = {}
    while True:
        try:
            status = experiment.get_status()
            trials = trial_statuses(port)
        except Exception as exc:  # the manager stopped (nnictl stop) or crashed
            raise ConnectionError(f"the NNI manager on port {port} is not answering ({exc})") from None
        for trial in trials:
            if seen.get(trial.trial_id) != trial.status:
                seen[trial.trial_id] = trial.status
                print_line(describe_trial(trial))
        running = [t for t in trials if t.status not in FINISHED_STATUSES]
        if status in EXPERIMENT_ENDED and not running:
            return trials
        time.sleep(poll_seconds)


def _forget(experiment: Any) -> None:
    """The manager was stopped from outside (``nnictl stop``): nothing is left for this process to stop
    at exit (NNI would try, and log a traceback)."""
    import atexit

    atexit.unregister(experiment.stop)


def keep_web_ui_until_interrupted(experiment: Any, port: int, print_line: Callable[[str], None] = print) -> None:
    """Keep the manager (and web UI) up until Ctrl-C, SIGTERM or ``nnictl stop``; then stop it."""
    from nni.experiment import rest

    print_line(f"web UI stays up at {web_ui_url(port)}; press Ctrl-C (or run `nnictl stop --port {port}`) to stop")
    try:
        with _signals_as_interrupt():
            while True:
                try:
                    rest.get(port, "/check-status")
                except Exception:
                    print_line("the NNI manager has stopped")
                    _forget(experiment)
                    return
                time.sleep(2.0)
    except KeyboardInterrupt:
        print_line("stopping the experiment ...")
    experiment.stop()
    print_line("experiment stopped")


def run_nas(experiment: Any, port: int, top_k: int = 3) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """Run a multi-trial NAS experiment to the end (the strategy runs in this process); return the
    ``top_k`` architectures (NNI sample, final metrics) by PSNR, from the trials' own reports."""
    from ..model.genotype import Genotype

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
        genotype = Genotype.from_any(json.loads(trial.final["genotype"]))  # type: ignore[index]
        result.append((genotype.to_sample(), dict(trial.final)))  # type: ignore[arg-type]
    return result


def run_attached(experiment: Any, port: int, print_line: Callable[[str], None] = print) -> list[TrialStatus]:
    """Wait for the trials, then keep the web UI up until interrupted; stop the experiment on any exit."""
    trials: list[TrialStatus] = []
    try:
        with _signals_as_interrupt():
            trials = wait_for_trials(experiment, port, print_line)
    except KeyboardInterrupt:
        print_line("interrupted: stopping the experiment ...")
        experiment.stop()
        print_line("experiment stopped")
        raise
    except ConnectionError as exc:
        print_line(str(exc))
        _forget(experiment)
        return trials
    succeeded = sum(t.status == "SUCCEEDED" for t in trials)
    print_line(f"all trials finished: {succeeded} of {len(trials)} succeeded")
    keep_web_ui_until_interrupted(experiment, port, print_line)
    return trials
