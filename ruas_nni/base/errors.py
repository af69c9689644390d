"""Errors that the command line reports as one line, with the exit status they map to."""

from __future__ import annotations

__all__ = ["RuasError", "UsageError", "InputError"]


class RuasError(Exception):
    """A problem the user can fix; printed as ``ruas-nni: error: <message>`` without a traceback."""

    exit_code = 2


class UsageError(RuasError):
    """Bad flags, configuration or data folders: nothing was done (exit status 2)."""

    exit_code = 2


class InputError(RuasError):
    """Some inputs could not be processed; the rest were (exit status 1)."""

    exit_code = 1
