"""The project's only access to NNI's private state (NNI 3.0), apart from the supernet's, which
:mod:`strategies.nni_compat` holds (the ``strategies`` package may not import ``ruas_nni``; the search
layer reads the architecture weights through it too). ``tests/test_nni_compat.py`` fails, naming what
changed, when an NNI release renames or drops any of it.

* ``nni.trial._params``: the parameter record (``{"parameter_id", "parameters", ...}``) that
  :func:`nni.get_next_parameter` received and that every report of the trial carries. A trial that
  runs a search inside NNI's ``SequentialExecutionEngine`` (which replaces it) must keep and restore
  it, and a trial handed another trial's record must be able to replace it (microsoft/nni#5726).
* NNI's experiment database, ``<experiment dir>/db/nni.sqlite``: the tables and columns the report
  reads (:data:`DATABASE_COLUMNS`), through :func:`read_experiment_database`.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nni.trial

__all__ = ["TRIAL_PARAMETERS", "trial_parameters", "set_trial_parameters", "DATABASE", "DATABASE_COLUMNS",
           "ExperimentRows", "read_experiment_database"]

TRIAL_PARAMETERS = "_params"
"""Attribute of :mod:`nni.trial` that holds the trial's current parameter record."""


def trial_parameters() -> Any:
    """The parameter record of this trial (``None`` before :func:`nni.get_next_parameter`)."""
    return getattr(nni.trial, TRIAL_PARAMETERS, None)


def set_trial_parameters(record: Any) -> None:
    """Make ``record`` this trial's parameter record (what later reports carry)."""
    setattr(nni.trial, TRIAL_PARAMETERS, record)


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
