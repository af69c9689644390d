"""Errors that the command line reports as one line, with the exit status they map to.

Library code names its own arguments and configuration keys, never command-line flags: a message
writes each key it names in backticks (`` `crop` ``) and lists it in ``keys``. ``str(error)`` is that
message; a front end shows :meth:`RuasError.spelled` with its own spelling of the keys (the command
line: ``--crop``, see :mod:`ruas_nni.cli`)."""

from __future__ import annotations

from typing import Callable, Iterable

__all__ = ["RuasError", "UsageError", "InputError"]


class RuasError(Exception):
    """A problem the user can fix; printed as ``ruas-nni: error: <message>`` without a traceback.

    ``keys``: the arguments or configuration keys the message names, each written `` `key` ``."""

    exit_code = 2

    def __init__(self, message: str = "", *, keys: Iterable[str] = ()) -> None:
        super().__init__(message)
        self.keys = tuple(keys)

    def spelled(self, spell: Callable[[str], str]) -> str:
        """The message with each of :attr:`keys` written as ``spell(key)`` (e.g. ``--crop``)."""
        text = str(self)
        for key in self.keys:
            text = text.replace(f"`{key}`", spell(key))
        return text


class UsageError(RuasError):
    """Bad arguments, configuration or data folders: nothing was done (exit status 2)."""

    exit_code = 2


class InputError(RuasError):
    """Some inputs could not be processed; the rest were (exit status 1)."""

    exit_code = 1
