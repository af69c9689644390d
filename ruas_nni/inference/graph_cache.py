"""``ruas-nni enhance`` without PyTorch: a cache of folded graphs (:class:`~ruas_nni.inference.graph.CachedGraph`).

``import torch`` costs about 2 CPU seconds per process, as much as the network needs for 20 photos of
600x400 on this project's 2-core machine (``docs/speed.md``). The ONNX Runtime engine needs PyTorch
only to read the checkpoint and write its folded graph, so the graph is cached: the first run with a
checkpoint writes it, later runs load it and enhance with ONNX Runtime or the native engine, NumPy and
Pillow alone (:class:`ruas_nni.inference.graph_enhancer.GraphEnhancer`).

The cache
  ``$RUAS_NNI_CACHE_DIR``, else ``$XDG_CACHE_HOME/ruas-nni``, else ``~/.cache/ruas-nni``; one file per
  (checkpoint content, stage, exposure override, source of the code that writes the graph) in
  ``onnx/``. Never beside the user's files. Entries are written under a temporary name and renamed;
  an entry that does not read back whole (truncated, corrupted, another format) is ignored and
  rewritten. Delete the folder to clear it; ``ruas-nni enhance --no-cache`` or
  ``RUAS_NNI_NO_CACHE=1`` neither reads nor writes it.

Only :func:`graph_for` imports PyTorch, and only on a cache miss. Nothing here imports NNI or
Lightning.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import struct
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from ..base.atomic import atomic_write
from .cache_folder import cache_dir, cache_disabled
from .graph import CachedGraph, build_graph

if TYPE_CHECKING:
    from ..model.checkpoint import Checkpoint

__all__ = ["CachedGraph", "build_graph", "cache_dir", "cache_key", "graph_for", "read_entry", "write_entry"]

log = logging.getLogger(__name__)

FORMAT = 5
_MAGIC = b"RUASONNX"

# The code that decides what the graph computes: a change to any of these files changes every key.
_SOURCES = ("model", "inference/fold.py", "inference/onnx_export.py", "inference/native.py", "inference/graph.py",
            "inference/graph_cache.py")


def _code_digest() -> str:
    root = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for name in _SOURCES:
        path = root / name
        files = sorted(path.rglob("*.py")) if path.is_dir() else [path]
        for file in files:
            digest.update(str(file.relative_to(root)).encode() + b"\0" + file.read_bytes() + b"\0")
    return digest.hexdigest()


def cache_key(checkpoint_path: str | os.PathLike[str], stage: str, exposure: float | None = None,
              exposure_gamma: float | None = None) -> str:
    """The cache key of one checkpoint file (by content, not name) enhanced at ``stage`` with the
    command's exposure overrides, by this version of the code."""
    digest = hashlib.sha256()
    with open(checkpoint_path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    text = json.dumps({"format": FORMAT, "checkpoint": digest.hexdigest(), "stage": stage, "exposure": exposure,
                       "exposure_gamma": exposure_gamma, "code": _code_digest()}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:40]


def _entry_path(key: str, folder: Path | None = None) -> Path:
    return (folder or cache_dir()) / "onnx" / f"{key}.ruasgraph"


_BLOBS = ("onnx", "gain_onnx", "native_source", "native_params", "gain_native_source", "gain_native_params")
"""The byte fields of a :class:`CachedGraph`, stored one after the other after the header (text
fields as UTF-8); the header gives each one's length (``None``: absent)."""
_SCALARS = ("halo", "max_channels", "stage", "exposure", "exposure_gamma", "exposure_side", "gain_floor", "tone",
            "denoise_sigma")
"""The other fields, stored in the JSON header."""


def _blob(graph: CachedGraph, name: str) -> bytes | None:
    value = getattr(graph, name)
    return value.encode() if isinstance(value, str) else value


def write_entry(key: str, graph: CachedGraph, folder: Path | None = None) -> Path | None:
    """Store ``graph`` under ``key`` (atomically). Returns the file, or ``None`` when the cache cannot
    be written (read-only home, full disk: enhancing goes on without it)."""
    path = _entry_path(key, folder)
    blobs = {name: _blob(graph, name) for name in _BLOBS}
    body = b"".join(b for b in blobs.values() if b is not None)
    header = json.dumps({"format": FORMAT, "sha256": hashlib.sha256(body).hexdigest(),
                         "bytes": {name: None if b is None else len(b) for name, b in blobs.items()},
                         **{name: getattr(graph, name) for name in _SCALARS}}).encode()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(path) as handle:
            handle.write(_MAGIC + struct.pack("<I", len(header)) + header + body)
    except OSError as exc:
        log.warning("cannot write the ONNX graph cache %s (%s); continuing without it", path, exc.strerror or exc)
        return None
    return path


def read_entry(key: str, folder: Path | None = None) -> CachedGraph | None:
    """The graph stored under ``key``, or ``None`` when there is none or it does not read back whole."""
    path = _entry_path(key, folder)
    try:
        data = path.read_bytes()
    except OSError:
        return None
    try:
        if data[:8] != _MAGIC:
            raise ValueError("not a ruas-nni graph")
        (length,) = struct.unpack("<I", data[8:12])
        header = json.loads(data[12:12 + length])
        body = data[12 + length:]
        sizes = header["bytes"]
        if header["format"] != FORMAT or len(body) != sum(int(sizes[n] or 0) for n in _BLOBS) or \
                hashlib.sha256(body).hexdigest() != header["sha256"]:
            raise ValueError("truncated or altered")
        fields, at = {}, 0
        for name in _BLOBS:
            if sizes[name] is None:
                fields[name] = None
                continue
            chunk, at = body[at:at + int(sizes[name])], at + int(sizes[name])
            fields[name] = chunk.decode() if name.endswith("_source") else chunk
        exposure = header["exposure"]
        return CachedGraph(halo=int(header["halo"]), max_channels=int(header["max_channels"]),
                           stage=str(header["stage"]), exposure=float(exposure) if exposure is not None else None,
                           exposure_gamma=float(header["exposure_gamma"]), exposure_side=int(header["exposure_side"]),
                           gain_floor=float(header["gain_floor"]), tone=header["tone"],
                           denoise_sigma=None if header["denoise_sigma"] is None else float(header["denoise_sigma"]),
                           **fields)
    except (ValueError, KeyError, TypeError, struct.error, UnicodeDecodeError) as exc:
        log.warning("ignoring the damaged ONNX graph cache entry %s (%s); rewriting it", path, exc)
        return None


def graph_for(checkpoint_path: str | os.PathLike[str], stage: str, exposure: float | None = None,
              exposure_gamma: float | None = None, *, use_cache: bool = True, refresh: bool = False,
              load: Callable[[], Checkpoint] | None = None) -> tuple[CachedGraph, bool]:
    """``(graph, from_cache)``: the cached graph of this checkpoint, or one built (PyTorch imported)
    and stored (``refresh``: built even when an entry exists). ``load`` reads the checkpoint (default:
    :func:`ruas_nni.model.checkpoint.load_checkpoint` with the exposure overrides applied)."""
    use_cache = use_cache and not cache_disabled()
    key = cache_key(checkpoint_path, stage, exposure, exposure_gamma) if use_cache else None
    if key is not None and not refresh:
        cached = read_entry(key)
        if cached is not None and cached.stage == stage:
            return cached, True
    if load is None:
        from ..model.checkpoint import load_checkpoint

        def load() -> Checkpoint:
            checkpoint = load_checkpoint(checkpoint_path)
            if exposure is not None or exposure_gamma is not None:
                checkpoint = checkpoint.with_exposure(exposure, exposure_gamma)
            return checkpoint
    graph = build_graph(load(), stage)
    if key is not None:
        write_entry(key, graph)
    return graph, False
