"""What reaches the user from the dependencies: the one place where their noise is filtered.

:func:`quiet_dependencies` is called once by ``ruas-nni`` (``ruas_nni.cli.main``) and by the trial
entry point of NNI experiments, before NNI or Lightning are imported. It filters, by message,
warnings and tips that say nothing to a user of this project:

* NNI 3.0's ``RuntimeWarning`` "... It means your PyTorch version might not be supported" and its
  "... is found to be not a nn.Module" warnings about torch classes newer than NNI;
* ``pkg_resources is deprecated`` (setuptools, imported by ``nnictl`` and NNI's manager launcher);
  child processes inherit the filter through ``PYTHONWARNINGS``;
* NNI's "You can put an `time.sleep(FOREVER)` here" at the end of a multi-trial search;
* Lightning's informational lines (device banners, the litlogger tip and other tips) and its
  warnings about things this project does on purpose (no validation step, few loader workers,
  unused parameters, its own ``LeafSpec`` deprecation);
* the colours of NNI's log lines when standard output is not a terminal (raw ANSI codes in a log
  file or a pipe).

:func:`show_progress` decides whether a progress bar is drawn: only on a terminal, never with
``--quiet``. Plain Python only: importing this module imports neither NNI nor Lightning.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from typing import IO

__all__ = ["quiet_dependencies", "show_progress", "WARNING_MESSAGES"]

WARNING_MESSAGES = (
    r".*your PyTorch version might not be supported.*",
    r".*is found to be not a nn\.Module.*",
    r".*pkg_resources is deprecated.*",
    r".*LeafSpec.*",
    r".*val_dataloader.*but have no.*validation_step.*",
    r".*have no `validation_step`.*",
    r".*does not have many workers.*",
    r".*GPU available but not used.*",
    r".*LightningModule.*has parameters that were not used.*",
    r".*`training_step` returned `None`.*",
    r".*Checkpoint directory .* exists and is not empty.*",
)
"""Regular expressions of the warnings filtered (matched against the start of the message)."""

DROPPED_LOG_LINES = ("time.sleep(FOREVER)",)
"""Log lines of NNI that are dropped when they contain one of these."""

LIGHTNING_LOGGERS = (
    # Lightning's tips and banners go through ``rank_zero_info`` on these loggers; their packages'
    # own loggers are set to INFO when Lightning is imported, so the level is set one below.
    "pytorch_lightning.utilities.rank_zero", "lightning_fabric.utilities.rank_zero",
    "lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero",
    "pytorch_lightning.accelerators.cuda", "lightning.pytorch.accelerators.cuda",
)

_installed = False


class _DropLines(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a malformed record is not ours to judge
            return True
        return not any(text in message for text in DROPPED_LOG_LINES)


class _NoLightningInfo(logging.Filter):
    """On the root logger's handlers: Lightning's records below WARNING (its package logger is set
    to INFO when Lightning is imported, after this filter is installed)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or record.name.split(".")[0] not in LIGHTNING_PACKAGES


LIGHTNING_PACKAGES = ("pytorch_lightning", "lightning", "lightning_fabric")


def _no_colours() -> None:
    """NNI's stdout log formatter colours every line with ``colorama.Fore`` codes, read at format
    time; blank them when standard output is not a terminal (NNI is the only user of colorama here)."""
    try:
        import colorama
    except ImportError:  # pragma: no cover - NNI depends on colorama
        return
    for palette in (colorama.Fore, colorama.Back, colorama.Style):
        for name in [n for n in vars(palette) if n.isupper()]:
            setattr(palette, name, "")


def quiet_dependencies() -> None:
    """Install the filters described in the module's docstring (idempotent). Call it after
    ``logging.basicConfig``: Lightning's informational lines are filtered on the root logger's handlers."""
    global _installed
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, _NoLightningInfo) for f in handler.filters):
            handler.addFilter(_NoLightningInfo())
    if _installed:
        return
    _installed = True
    for message in WARNING_MESSAGES:
        warnings.filterwarnings("ignore", message=message)
    # Child processes (nnictl, NNI's manager launcher, trials): the setuptools deprecation only.
    inherited = os.environ.get("PYTHONWARNINGS", "")
    extra = "ignore:pkg_resources is deprecated"
    if extra not in inherited:
        os.environ["PYTHONWARNINGS"] = f"{inherited},{extra}" if inherited else extra
    for name in LIGHTNING_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    for name in ("nni", "nni.nas.experiment.experiment", "nni.nas.experiment"):
        logging.getLogger(name).addFilter(_DropLines())
    if not _is_terminal(sys.stdout):
        _no_colours()


def _is_terminal(stream: IO[str] | None) -> bool:
    try:
        return bool(stream is not None and stream.isatty())
    except (AttributeError, ValueError):  # closed or replaced streams
        return False


def show_progress(quiet: bool = False, stream: IO[str] | None = None) -> bool:
    """Whether to draw a progress bar on ``stream`` (default: standard error): only on a terminal,
    and never with ``--quiet``."""
    return not quiet and _is_terminal(sys.stderr if stream is None else stream)
