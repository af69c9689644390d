"""The project's only access to NNI's internals (NNI 3.0: private names, undocumented modules), apart
from what the strategies need, which :mod:`strategies.nni_compat` holds (the ``strategies`` package may
not import ``ruas_nni``; the search layer reads the architecture weights through it too). Everything
else imports only NNI's public API (``tests/test_nni_compat.py`` lists it), and fails there, naming
what changed, when an NNI release renames or drops any of this.

* ``nni.trial._params``: the parameter record (``{"parameter_id", "parameters", ...}``) that
  :func:`nni.get_next_parameter` received and that every report of the trial carries. A trial that
  runs a search inside NNI's ``SequentialExecutionEngine`` (which replaces it) must keep and restore
  it, and a trial handed another trial's record must be able to replace it (microsoft/nni#5726).
* The trial command channels' raw parameter text (:func:`receive_parameter_text`): what
  :func:`nni.get_next_parameter` receives, before NNI decodes it with ``nni.load`` (whose object hooks
  would import and call what the text names). NNI 3.0's local and remote training services use
  ``TrialCommandChannelV3`` (its HTTP channel in ``_channel``); the other services use
  ``LocalLegacyTrialCommandChannel`` (``_sysdir``/``parameter.cfg``, ``_param_index``,
  ``_request_next_parameter``).
* The NNI manager's record of a trial's parameters (:func:`listed_parameter_text`), read from its REST
  API at the address of the trial's V3 command channel (``NNI_TRIAL_COMMAND_CHANNEL``).
* The trial command channel itself (``nni.runtime.trial_command_channel``), which NNI's
  ``SequentialExecutionEngine`` replaces while a one-shot search runs: :func:`current_trial` and
  :func:`as_trial` keep and restore it with the parameter record.
* NNI's experiment database, ``<experiment dir>/db/nni.sqlite``: the tables and columns the report
  reads (:data:`DATABASE_COLUMNS`), through :func:`read_experiment_database`.
* The manager's REST client (``nni.experiment.rest``, :func:`manager_get`), the launcher's start check
  (``nni.experiment.launcher._check_rest_server``, made patient by :func:`patient_manager_start`), the
  ``atexit`` hook by which ``Experiment.start`` stops the manager (:func:`forget_at_exit`), and
  nnictl's list of experiments (``nni.tools.nnictl.config_utils.Experiments``,
  :func:`registered_experiment_dir`).
* NNI's logging set-up (``nni.runtime.log``, which sets the ``nni`` logger's level on import):
  :func:`set_nni_log_level`.
* The mixed layers of NNI's DARTS supernets (``DifferentiableMixedLayer``, from
  ``nni.nas.oneshot.pytorch.supermodule``): :func:`mixed_layers` and :func:`derived_choice`.

NNI modules that only some callers need are imported inside the function that uses them, so that
importing this module costs no more than the trial API already did.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import sqlite3
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator
from urllib.parse import urlsplit

import nni.trial
from nni.runtime.trial_command_channel import get_default_trial_command_channel, set_default_trial_command_channel
from nni.runtime.trial_command_channel.local_legacy import LocalLegacyTrialCommandChannel
from nni.runtime.trial_command_channel.v3 import TrialCommandChannelV3

if TYPE_CHECKING:
    from torch import nn

__all__ = ["TRIAL_PARAMETERS", "trial_parameters", "set_trial_parameters", "TrialContext", "current_trial", "as_trial",
           "V3_HTTP_CHANNEL", "LEGACY_CHANNEL_NAMES", "UnsupportedChannel", "receive_parameter_text",
           "listed_parameter_text", "DATABASE", "DATABASE_COLUMNS", "ExperimentRows", "read_experiment_database",
           "manager_get", "patient_manager_start", "forget_at_exit", "registered_experiment_dir",
           "set_nni_log_level", "mixed_layers", "derived_choice"]

TRIAL_PARAMETERS = "_params"
"""Attribute of :mod:`nni.trial` that holds the trial's current parameter record."""


def trial_parameters() -> Any:
    """The parameter record of this trial (``None`` before :func:`nni.get_next_parameter`)."""
    return getattr(nni.trial, TRIAL_PARAMETERS, None)


def set_trial_parameters(record: Any) -> None:
    """Make ``record`` this trial's parameter record (what later reports carry)."""
    setattr(nni.trial, TRIAL_PARAMETERS, record)


@dataclass(frozen=True)
class TrialContext:
    """What NNI's trial API reports through: the trial command channel and the parameter record."""

    channel: Any
    parameters: Any


def current_trial() -> TrialContext:
    """The trial command channel and parameter record in use now."""
    return TrialContext(get_default_trial_command_channel(), trial_parameters())


@contextlib.contextmanager
def as_trial(context: TrialContext) -> Iterator[None]:
    """Report through ``context`` inside the block, whatever replaced it meanwhile (NNI's
    ``SequentialExecutionEngine`` does, while a one-shot search runs); what was in use is put back after."""
    previous = current_trial()
    set_default_trial_command_channel(context.channel)
    set_trial_parameters(context.parameters)
    try:
        yield
    finally:
        set_default_trial_command_channel(previous.channel)
        set_trial_parameters(previous.parameters)


V3_HTTP_CHANNEL = "_channel"
"""Attribute of :class:`TrialCommandChannelV3` that holds its ``HttpChannel`` (``send``/``receive``)."""

LEGACY_CHANNEL_NAMES = ("_sysdir", "_param_index", "_request_next_parameter")
"""Private names of :class:`LocalLegacyTrialCommandChannel` used to read ``parameter.cfg`` unparsed."""


class UnsupportedChannel(RuntimeError):
    """The trial command channel is of a kind whose raw parameter text cannot be read."""


def receive_parameter_text(poll: float = 1.0) -> str | None:
    """The next parameter record the NNI manager sends this trial, as raw text (what
    :func:`nni.get_next_parameter` receives, not decoded with ``nni.load``); ``None`` when the manager
    answers with no parameter. Raises :class:`UnsupportedChannel` for another kind of channel."""
    channel = get_default_trial_command_channel()
    if isinstance(channel, TrialCommandChannelV3):  # NNI 3.0's local and remote training services
        http = getattr(channel, V3_HTTP_CHANNEL)
        http.send({"type": "request_parameter"})
        response = http.receive()
        if not isinstance(response, dict) or response.get("type") != "parameter":
            return None
        return response.get("parameter")
    if isinstance(channel, LocalLegacyTrialCommandChannel):  # the other training services: parameter.cfg
        sysdir, index, request = (getattr(channel, name) for name in LEGACY_CHANNEL_NAMES)
        if index > 0:  # one parameter record per trial (NNI's non-multiphase rule)
            return None
        path = Path(sysdir) / "parameter.cfg"
        if not path.is_file():
            request()
        while not (path.is_file() and path.stat().st_size > 0):
            time.sleep(poll)
        setattr(channel, LEGACY_CHANNEL_NAMES[1], index + 1)
        return path.read_text(encoding="utf-8")
    raise UnsupportedChannel(f"unsupported NNI trial command channel {type(channel).__name__}")


def listed_parameter_text(timeout: float = 20.0) -> str | None:
    """The parameter record that the NNI manager lists for this trial (the text it sent, as its REST API
    ``/trial-jobs/<id>`` shows it), found at the address of the trial's command channel; ``None`` when
    it cannot be read within ``timeout`` seconds (or this trial has no HTTP channel)."""
    channel = os.environ.get("NNI_TRIAL_COMMAND_CHANNEL", "")
    trial_id = os.environ.get("NNI_TRIAL_JOB_ID", "")
    parts = urlsplit(channel)
    if parts.scheme not in ("http", "ws") or not parts.hostname or not parts.port or not trial_id:
        return None
    url = f"http://{parts.hostname}:{parts.port}/api/v1/nni/trial-jobs/{trial_id}"
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                job = json.loads(response.read().decode("utf-8"))
            records = job.get("hyperParameters") or []
            if records and isinstance(records[-1], str):
                return records[-1]
        except (urllib.error.URLError, OSError, ValueError):
            pass
        if time.monotonic() > deadline:
            return None
        time.sleep(0.5)


DATABASE = Path("db") / "nni.sqlite"
"""An experiment's database, relative to the experiment's folder."""

DATABASE_COLUMNS: dict[str, tuple[str, ...]] = {
    "ExperimentProfile": ("params", "id", "startTime", "endTime", "revision"),
    "TrialJobEvent": ("timestamp", "trialJobId", "event", "data", "logPath", "sequenceId"),
    "MetricData": ("timestamp", "trialJobId", "type", "sequence", "data"),
}
"""The tables of NNI's experiment database and the columns of each that are read."""


@dataclass
class ExperimentRows:
    """The raw rows of an experiment database that the report reads."""

    profile: tuple[Any, ...] | None
    """``(params, id, startTime, endTime)`` of the latest profile revision, or ``None``."""
    events: list[tuple[Any, ...]]
    """``(timestamp, trialJobId, event, data, logPath, sequenceId)`` in time order."""
    metrics: list[tuple[Any, ...]]
    """``(timestamp, trialJobId, type, sequence, data)`` in time order."""


def read_experiment_database(connection: sqlite3.Connection) -> ExperimentRows:
    """Read :class:`ExperimentRows` from an open NNI experiment database (``sqlite3.Error`` when its
    tables or columns are not NNI's)."""
    profiles = connection.execute(
        "select params, id, startTime, endTime from ExperimentProfile order by revision desc limit 1").fetchall()
    events = connection.execute(
        "select timestamp, trialJobId, event, data, logPath, sequenceId from TrialJobEvent order by timestamp, rowid"
    ).fetchall()
    metrics = connection.execute(
        "select timestamp, trialJobId, type, sequence, data from MetricData order by timestamp, rowid").fetchall()
    return ExperimentRows(profiles[0] if profiles else None, events, metrics)


# --------------------------------------------------------------------------------------------
# the NNI manager, seen from the process that starts it


def manager_get(port: int, path: str, url_prefix: str | None = None) -> Any:
    """``GET /api/v1/nni<path>`` of the NNI manager on ``port``, decoded (NNI's own REST client);
    raises when the manager does not answer."""
    from nni.experiment import rest

    return rest.get(port, path, url_prefix)


REST_CHECK = "_check_rest_server"
"""Function of ``nni.experiment.launcher`` that waits for a starting manager's first REST answer."""


@contextlib.contextmanager
def patient_manager_start(seconds: float) -> Iterator[None]:
    """While NNI starts a manager inside the block, its launcher waits up to ``seconds`` for the
    manager's first REST answer (NNI 3.0 gives it about 3 s: three tries a second apart). The
    launcher's check keeps its signature and is restored afterwards."""
    from nni.experiment import launcher

    original = getattr(launcher, REST_CHECK)

    def check(port: int, retry: int = 3, url_prefix: str | None = None) -> None:
        deadline = time.monotonic() + seconds
        while True:
            try:
                manager_get(port, "/check-status", url_prefix)
                return
            except Exception:  # noqa: BLE001 - not up yet: connection refused, reset or timed out
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.5)

    setattr(launcher, REST_CHECK, check)
    try:
        yield
    finally:
        setattr(launcher, REST_CHECK, original)


def forget_at_exit(experiment: Any) -> None:
    """Drop the hook by which ``Experiment.start`` stops the manager when this process exits (for a
    manager stopped from outside, which NNI would try to stop again, logging a traceback)."""
    atexit.unregister(experiment.stop)


def registered_experiment_dir(experiment_id: str) -> Path | None:
    """The folder that nnictl's list of experiments records for ``experiment_id``, or ``None`` (not
    listed, or the list is unreadable)."""
    try:
        from nni.tools.nnictl.config_utils import Experiments

        entry = Experiments().get_all_experiments().get(experiment_id)
    except Exception:  # noqa: BLE001 - no list, or an unreadable one
        return None
    if not entry or not entry.get("logDir"):
        return None
    return Path(entry["logDir"]).expanduser() / experiment_id


# --------------------------------------------------------------------------------------------
# logging and supernets


def set_nni_log_level(level: int) -> None:
    """Set the level of NNI's loggers. NNI sets its own level to INFO when its logging module is
    first imported, so this imports that module first (call it only where NNI is used anyway)."""
    import nni.runtime.log  # noqa: F401 - sets the "nni" logger to INFO on import

    logging.getLogger("nni").setLevel(level)


def mixed_layers(supernet: nn.Module) -> list[nn.Module]:
    """Every mixed layer of an NNI DARTS supernet (``DifferentiableMixedLayer``: its ``label``, its
    candidates' ``names``, its weights through :func:`strategies.nni_compat.arch_alpha`), in module
    order, each once."""
    # ``nni.nas.strategy`` must be imported before ``nni.nas.oneshot`` (see strategies/cooperative.py).
    import nni.nas.strategy  # noqa: F401, I001
    from nni.nas.oneshot.pytorch.supermodule.differentiable import DifferentiableMixedLayer

    return [module for module in supernet.modules() if isinstance(module, DifferentiableMixedLayer)]


def derived_choice(layer: nn.Module) -> str:
    """The candidate a mixed layer (:func:`mixed_layers`) would export now: the argmax of its
    architecture weights."""
    return next(iter(layer.export({}).values()))
