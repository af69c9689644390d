"""Running an NNI experiment from the command line, shared by the comparison and multi-trial NAS:
checks before anything starts (port, paired data), starting the NNI manager and its web UI, following
the trials through NNI's REST API, and stopping cleanly."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from nni.experiment import RunMode

from ..base.errors import UsageError
from ..inference.evaluation import find_pairs
from ..search.nni_compat import forget_at_exit, manager_get, patient_manager_start

__all__ = [
    "FINISHED_STATUSES",
    "EXPERIMENT_ENDED",
    "check_port_free",
    "check_paired_data",
    "check_no_overlap",
    "start_experiment",
    "TrialStatus",
    "trial_statuses",
    "describe_trial",
    "wait_for_trials",
    "keep_web_ui_until_interrupted",
    "run_attached",
    "web_ui_url",
]

FINISHED_STATUSES = frozenset({"SUCCEEDED", "FAILED", "USER_CANCELED", "SYS_CANCELED", "EARLY_STOPPED"})
"""Trial job statuses after which a trial does nothing more."""

EXPERIMENT_ENDED = frozenset({"DONE", "STOPPED", "ERROR"})
"""Experiment statuses after which no trial will start."""


def check_port_free(port: int, key: str = "port") -> None:
    """Raise :class:`UsageError` (naming the argument ``key``) when something listens on ``localhost:port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(1.0)
        if sock.connect_ex(("127.0.0.1", port)) == 0:
            raise UsageError(f"`{key}` {port}: the port is in use (another NNI experiment? stop it with "
                             f"`nnictl stop --port {port}`), or choose another port", keys=(key,))
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the NNI manager (Node) listens
        try:
            sock.bind(("", port))
        except OSError as exc:
            raise UsageError(f"`{key}` {port}: cannot listen on this port ({exc.strerror or exc})", keys=(key,)) from None


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def check_paired_data(folder: str | None, key: str) -> int:
    """Number of pairs in a paired folder (``low/``, ``high/``) given by the argument ``key``; one-line
    errors naming ``key`` otherwise."""
    if not folder:
        raise UsageError(f"`{key}`: give a folder with low/ and high/ sub-folders (the same file names in both)",
                         keys=(key,))
    return len(find_pairs(folder, key))


def check_no_overlap(data: Sequence[str], paired: str, paired_key: str) -> None:
    """Refuse training folders (``data``) that contain, or lie inside, the paired evaluation folder (the
    argument ``paired_key``)."""
    paired_path = Path(paired).resolve()
    for folder in data:
        path = Path(folder).resolve()
        if _inside(path, paired_path) or _inside(paired_path, path):
            raise UsageError(f"`data` {folder} overlaps `{paired_key}` {paired}: never search or train on the "
                             "evaluation pairs", keys=("data", paired_key))


def _quiet_nni_logging() -> None:
    """NNI prints its own (coloured) log lines; keep them from reaching the root logger a second time."""
    logging.getLogger("nni").propagate = False


def _experiment_dir(path: str) -> str:
    return str(Path(path).expanduser().resolve())


def web_ui_url(port: int) -> str:
    return f"http://localhost:{port}"


def _tools_on_path() -> None:
    """Put this Python's ``bin`` folder first on ``PATH``: the NNI manager starts ``tensorboard`` (the web
    UI's TensorBoard button) by name, which must be the one installed beside NNI."""
    bin_dir = str(Path(sys.executable).parent)
    parts = os.environ.get("PATH", "").split(os.pathsep)
    if not parts or parts[0] != bin_dir:
        os.environ["PATH"] = os.pathsep.join([bin_dir, *[p for p in parts if p != bin_dir]])


MANAGER_START_SECONDS = 60.0
"""How long the NNI manager may take to answer its first REST request. NNI 3.0's launcher gives it
about 3 seconds (three tries a second apart), which a busy 2-core machine exceeds (Node.js loading
the manager): the start then failed with a urllib3 traceback
(:func:`~ruas_nni.search.nni_compat.patient_manager_start`)."""


def start_experiment(experiment: Any, port: int, *, detach: bool) -> None:
    """Start the NNI manager (and web UI) of ``experiment`` on ``port``. Detached, it outlives this
    process (stop it with ``nnictl stop --port PORT``); otherwise it stops when this process exits."""
    _tools_on_path()
    _quiet_nni_logging()
    try:
        with patient_manager_start(MANAGER_START_SECONDS):
            experiment.start(port, run_mode=RunMode.Detach if detach else RunMode.Background)
    except RuntimeError as exc:
        raise UsageError(f"cannot start the NNI experiment on port {port}: {exc}") from None
    except OSError as exc:  # requests' ConnectionError: the manager never answered
        raise UsageError(f"cannot start the NNI experiment on port {port}: the NNI manager did not answer "
                         f"within {MANAGER_START_SECONDS:.0f} s ({type(exc).__name__}); see the experiment's "
                         "log folder") from None


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
    jobs = manager_get(port, "/trial-jobs") or []
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


def keep_web_ui_until_interrupted(experiment: Any, port: int, print_line: Callable[[str], None] = print) -> None:
    """Keep the manager (and web UI) up until Ctrl-C, SIGTERM or ``nnictl stop``; then stop it."""
    print_line(f"web UI stays up at {web_ui_url(port)}; press Ctrl-C (or run `nnictl stop --port {port}`) to stop")
    try:
        with _signals_as_interrupt():
            while True:
                try:
                    manager_get(port, "/check-status")
                except Exception:
                    print_line("the NNI manager has stopped")
                    forget_at_exit(experiment)  # stopped from outside (nnictl stop): nothing left to stop
                    return
                time.sleep(2.0)
    except KeyboardInterrupt:
        print_line("stopping the experiment ...")
    experiment.stop()
    print_line("experiment stopped")


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
        forget_at_exit(experiment)
        return trials
    succeeded = sum(t.status == "SUCCEEDED" for t in trials)
    print_line(f"all trials finished: {succeeded} of {len(trials)} succeeded")
    keep_web_ui_until_interrupted(experiment, port, print_line)
    return trials
