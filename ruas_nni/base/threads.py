"""CPU threads of torch: one per process by default.

The network's convolutions have 3 to 24 channels. For them PyTorch's intra-op threads cost more
than they bring, and on cores that other processes also use they wait for each other: measured in
docs/speed.md ("Threads"), one thread per process is as fast as two on idle cores and much faster
when another process keeps a core busy. ``demo``, ``search``, ``train`` and the trials of
``compare`` therefore default to :data:`DEFAULT_THREADS`; ``enhance`` runs one worker per core,
each with one thread.
"""

from __future__ import annotations

import torch

from .errors import UsageError

__all__ = ["DEFAULT_THREADS", "set_torch_threads"]

DEFAULT_THREADS = 1


def set_torch_threads(threads: int | None = None, key: str = "threads") -> int:
    """Set torch's intra-op CPU threads to ``threads`` (``None``: :data:`DEFAULT_THREADS`); returns
    the number set. A number below 1 is a :class:`UsageError` naming ``key`` (``--threads`` on the
    command line)."""
    count = DEFAULT_THREADS if threads is None else threads
    if not isinstance(count, int) or isinstance(count, bool) or count < 1:
        raise UsageError(f"`{key}` must be a whole number of at least 1, got {threads!r}", keys=(key,))
    if torch.get_num_threads() != count:
        torch.set_num_threads(count)
    return count
