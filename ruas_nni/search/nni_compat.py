"""The project's only access to NNI's private state (NNI 3.0), apart from the supernet's, which
:mod:`strategies.nni_compat` holds (the ``strategies`` package may not import ``ruas_nni``; the search
layer reads the architecture weights through it too). ``tests/test_nni_compat.py`` fails, naming what
changed, when an NNI release renames or drops any of it.

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
* NNI's experiment database, ``<experiment dir>/db/nni.sqlite``: the tables and columns the report
  reads (:data:`DATABASE_COLUMNS`), through :func:`read_experiment_database`.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nni.trial
from nni.runtime.trial_command_channel import get_default_trial_command_channel
from nni.runtime.trial_command_channel.local_legacy import LocalLegacyTrialCommandChannel
from nni.runtime.trial_command_channel.v3 import TrialCommandChannelV3

__all__ = ["TRIAL_PARAMETERS", "trial_parameters", "set_trial_parameters", "V3_HTTP_CHANNEL", "LEGACY_CHANNEL_NAMES",
           "UnsupportedChannel", "receive_parameter_text", "DATABASE", "DATABASE_COLUMNS",
           "ExperimentRows", "read_experiment_database"]

TRIAL_PARAMETERS = "_params"
"""Attribute of :mod:`nni.trial` that holds the trial's current parameter record."""


def trial_parameters() -> Any:
    """The parameter record of this trial (``None`` before :func:`nni.get_next_parameter`)."""
    return getattr(nni.trial, TRIAL_PARAMETERS, None)


def set_trial_parameters(record: Any) -> None:
    """Make ``record`` this trial's parameter record (what later reports carry)."""
    setattr(nni.trial, TRIAL_PARAMETERS, record)


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
