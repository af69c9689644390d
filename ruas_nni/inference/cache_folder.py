"""Where ``ruas-nni enhance`` keeps what it builds once per checkpoint or architecture: folded ONNX
graphs (:mod:`ruas_nni.inference.graph_cache`) and compiled native code
(:mod:`ruas_nni.inference.native`).

``$RUAS_NNI_CACHE_DIR``, else ``$XDG_CACHE_HOME/ruas-nni``, else ``~/.cache/ruas-nni``; never beside the
user's files. ``RUAS_NNI_NO_CACHE=1`` (or ``enhance --no-cache``) turns it off.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["cache_dir", "cache_disabled"]


def cache_dir() -> Path:
    """The cache folder (not created here)."""
    explicit = os.environ.get("RUAS_NNI_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "ruas-nni"


def cache_disabled() -> bool:
    return os.environ.get("RUAS_NNI_NO_CACHE", "") not in ("", "0")
