"""``ruas-nni enhance`` without PyTorch: a cache of folded ONNX graphs, and an ONNX Runtime enhancer.

``import torch`` costs about 2 CPU seconds per process, as much as the network needs for 20 photos of
600x400 on this project's 2-core machine (``docs/speed.md``). The ONNX Runtime engine needs PyTorch
only to read the checkpoint and write its folded graph, so the graph is cached: the first run with a
checkpoint writes it, later runs load it and enhance with ONNX Runtime, NumPy and Pillow alone.

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
import math
import os
import struct
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

from ..base.atomic import atomic_write
from .cache_folder import cache_dir, cache_disabled
from .files import PendingImage, available_cores
from .tiling import (
    DEFAULT_MEMORY_BUDGET_MB_PER_WORKER,
    ORT_TILE_BYTES_PER_PIXEL,
    Tile,
    plan_tiles,
    tile_pixels_for_budget,
)

if TYPE_CHECKING:
    import torch

    from ..model.checkpoint import Checkpoint

__all__ = ["CachedGraph", "GraphEnhancer", "cache_dir", "cache_key", "graph_for", "ort_session", "read_entry",
           "write_entry"]

log = logging.getLogger(__name__)

FORMAT = 4
_MAGIC = b"RUASONNX"

# The code that decides what the graph computes: a change to any of these files changes every key.
_SOURCES = ("model", "inference/fold.py", "inference/onnx_export.py", "inference/native.py", "inference/graph_cache.py")


@dataclass(frozen=True)
class CachedGraph:
    """A folded network as ONNX bytes, with what the enhancer needs to tile it."""

    onnx: bytes
    halo: int
    max_channels: int
    stage: str
    gain_onnx: bytes | None = None
    """With exposure normalisation: the raw IEM, run on the small copy that the gain is measured on
    (the main graph then takes the gain as its second input ``gain``)."""
    exposure: float | None = None
    exposure_gamma: float = 1.0
    exposure_side: int = 256
    """:data:`ruas_nni.model.network.EXPOSURE_SIDE` and :data:`~ruas_nni.model.network.GAIN_FLOOR`, stored
    so that the gain is computed without importing the model layer (PyTorch)."""
    gain_floor: float = 1e-3
    tone: dict | None = None
    """With the shoulder policy: its options (:class:`ruas_nni.model.tone.ToneOptions` as a mapping)."""
    native_source: str | None = None
    """The main graph as C (:func:`ruas_nni.inference.native.native_source`), for the ``native`` engine."""
    native_params: bytes | None = None
    """Its weights and biases, float32 bytes in the order the C reads them."""
    gain_native_source: str | None = None
    """With exposure normalisation: the raw IEM as C, for the gain on the ``native`` engine."""
    gain_native_params: bytes | None = None


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
_SCALARS = ("halo", "max_channels", "stage", "exposure", "exposure_gamma", "exposure_side", "gain_floor", "tone")
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
                           gain_floor=float(header["gain_floor"]), tone=header["tone"], **fields)
    except (ValueError, KeyError, TypeError, struct.error, UnicodeDecodeError) as exc:
        log.warning("ignoring the damaged ONNX graph cache entry %s (%s); rewriting it", path, exc)
        return None


def build_graph(checkpoint: Checkpoint, stage: str) -> CachedGraph:
    """The folded graph of ``checkpoint`` at ``stage`` (imports PyTorch); with exposure normalisation,
    also the raw IEM's graph for the gain, and the main graph takes the gain as a second input."""
    from ..model.network import EXPOSURE_SIDE, GAIN_FLOOR
    from .enhance import _max_channels
    from .fold import FoldedRUAS
    from .native import native_source
    from .onnx_export import folded_onnx_bytes

    network = checkpoint.build()
    model = FoldedRUAS(network, stage).eval()
    radius, channels = int(model.receptive_radius()), _max_channels(network)
    gain_input = network.exposure is not None
    source, params = native_source(model, gain_input=gain_input)
    native = dict(native_source=source, native_params=params.tobytes())
    if not gain_input:
        return CachedGraph(folded_onnx_bytes(model), radius, channels, stage, **native)
    gain_iem = FoldedRUAS(network, "iem").eval()  # the writers leave its output unscaled: the raw IEM
    gain_source, gain_params = native_source(gain_iem)
    return CachedGraph(folded_onnx_bytes(model, gain_input=True), radius, channels, stage,
                       folded_onnx_bytes(gain_iem), float(network.exposure), float(network.exposure_gamma),
                       EXPOSURE_SIDE, GAIN_FLOOR, network.tone.to_dict() if network.tone is not None else None,
                       **native, gain_native_source=gain_source,
                       gain_native_params=gain_params.tobytes())


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


def ort_session(onnx: bytes):
    """An ONNX Runtime session for the folded graph, as both engines run it: one intra-op thread (the
    worker threads give the parallelism; ONNX Runtime releases the GIL), basic graph optimisations
    (the extended and NCHWc layout ones measured slower on these 3- to 24-channel convolutions)."""
    import onnxruntime as ort  # optional: only the ONNX Runtime engine needs it

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.log_severity_level = 3
    if os.environ.get("RUAS_NNI_ORT_ARENA", "1") == "0":  # for measuring what the arena saves
        options.enable_cpu_mem_arena = False
    return ort.InferenceSession(onnx, options, providers=["CPUExecutionProvider"])


class GraphEnhancer:
    """The CPU enhancer of :class:`ruas_nni.inference.enhance.Enhancer` with the ONNX Runtime or the
    native engine, on a cached graph alone (NumPy, no PyTorch): same tiles, same worker threads, same
    arithmetic, so its 8-bit outputs equal the ``Enhancer``'s with the same engine bit for bit. Enough
    of the ``Enhancer`` interface for :func:`ruas_nni.inference.files.enhance_files`.

    ``engine``: ``onnxruntime`` or ``native`` (raises
    :class:`~ruas_nni.inference.native.NativeUnavailable` when the native code cannot be built here).
    The exposure gain's small IEM runs in the same engine."""

    def __init__(self, graph: CachedGraph, *, engine: str = "onnxruntime", workers: int | None = None,
                 max_tile_pixels: int | None = None, memory_budget: float | None = None) -> None:
        from ..base.errors import UsageError

        self.gain_session = None
        if engine == "native":
            from .native import NativeSession, library_folder

            if graph.native_source is None or graph.native_params is None:
                raise ValueError("GraphEnhancer: this graph has no native code")
            self.session = NativeSession(graph.native_source, np.frombuffer(graph.native_params, np.float32),
                                         library_folder())
            per_pixel, channels = self.session.bytes_per_pixel(), 1
            if graph.gain_native_source is not None and graph.gain_native_params is not None:
                self.gain_session = NativeSession(graph.gain_native_source,
                                                  np.frombuffer(graph.gain_native_params, np.float32), library_folder())
        elif engine == "onnxruntime":
            self.session = ort_session(graph.onnx)  # raises on a graph ONNX Runtime cannot load
            per_pixel, channels = ORT_TILE_BYTES_PER_PIXEL, graph.max_channels
        else:
            raise UsageError(f"`engine` must be onnxruntime or native, got {engine!r}", keys=("engine",))
        self.engine = engine
        if self.gain_session is None and graph.gain_onnx is not None:
            self.gain_session = ort_session(graph.gain_onnx)
        self.graph = graph
        self.halo = graph.halo
        self.stage = graph.stage
        workers = available_cores() if workers is None else int(workers)
        if workers < 1:
            raise UsageError(f"`workers` must be at least 1, got {workers}", keys=("workers",))
        self.workers = workers
        if memory_budget is not None and memory_budget <= 0:
            raise UsageError(f"`memory_budget` must be positive, got {memory_budget}", keys=("memory_budget",))
        if max_tile_pixels is None:
            budget = memory_budget or DEFAULT_MEMORY_BUDGET_MB_PER_WORKER * workers
            max_tile_pixels = tile_pixels_for_budget(budget, workers, channels, per_pixel)
        self.max_tile_pixels = int(max_tile_pixels) if max_tile_pixels > 0 else 2**62
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    def _window(self, batch: np.ndarray, gain: np.ndarray | None = None) -> np.ndarray:
        """The network on ``1 x 3 x h x w`` float32, clipped to ``[0, 1]``: ``3 x h x w``."""
        feeds = {"image": batch} if gain is None else {"image": batch, "gain": gain}
        output = self.session.run(["enhanced"], feeds)[0][0]
        return np.clip(output, 0.0, 1.0, out=output)

    def exposure_gain(self, rgb: np.ndarray, scale: float) -> np.ndarray | None:
        """The exposure gain of a whole ``H x W x 3`` image whose values divided by ``scale`` are in
        ``[0, 1]`` (as :func:`ruas_nni.model.network.exposure_gain`: the IEM on the ``f x f`` block
        means), float32 ``1 x 1 x 1 x 1``; ``None`` when exposure normalisation is off."""
        if self.gain_session is None:
            return None
        height, width = int(rgb.shape[0]), int(rgb.shape[1])
        graph = self.graph
        factor = max(1, min(math.ceil(max(height, width) / graph.exposure_side), height, width))
        rows, columns = height // factor, width // factor
        blocks = rgb[:rows * factor, :columns * factor].reshape(rows, factor, columns, factor, 3)
        sums = blocks.sum(axis=(1, 3), dtype=np.float64)  # exact for 8- and 16-bit values
        small = (sums / (scale * factor * factor)).astype(np.float32).transpose(2, 0, 1)[None]
        u = self.gain_session.run(["enhanced"], {"image": np.ascontiguousarray(small)})[0].astype(np.float64)
        if graph.tone is not None:  # the shoulder policy: u is the ratio y / t_K
            from ..model.tone import ToneOptions, solve_shoulder_gain

            gain = solve_shoulder_gain(u[0], float(small.astype(np.float64).mean()), float(graph.exposure),
                                       graph.exposure_gamma, ToneOptions.from_dict(graph.tone))
            return np.full((1, 1, 1, 1), gain, np.float32)
        if graph.exposure_gamma != 1.0:
            u = np.maximum(u, 0.0) ** graph.exposure_gamma
        mean = max(float(u.mean()), graph.gain_floor)
        return np.full((1, 1, 1, 1), np.float32(graph.exposure) / np.float32(mean), np.float32)

    def _start(self, height: int, width: int, min_tiles: int, run: Callable[[Tile], None]):
        tiles = plan_tiles(height, width, self.halo, self.max_tile_pixels, min_tiles)
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="ruas-enhance")
            pool = self._pool
        return tiles, [pool.submit(run, tile) for tile in tiles]

    def submit_uint8(self, rgb: np.ndarray, min_tiles: int = 1) -> PendingImage:
        """As :meth:`ruas_nni.inference.enhance.Enhancer.submit_uint8`: ``H x W x 3`` uint8 in and out."""
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise ValueError(f"expected an H x W x 3 uint8 image, got {rgb.dtype} {tuple(rgb.shape)}")
        height, width = int(rgb.shape[0]), int(rgb.shape[1])
        output = np.empty((height, width, 3), np.uint8)
        scale = np.float32(255.0)
        gain = self.exposure_gain(rgb, 255.0)  # one per image: every tile uses it, so tiled == untiled

        def run(tile: Tile) -> None:
            window = rgb[tile.top:tile.bottom, tile.left:tile.right]
            batch = np.ascontiguousarray(window.transpose(2, 0, 1), dtype=np.float32)[None]
            batch /= scale  # float32 division, as the torch path's div_(255.0)
            core = tile.crop(self._window(batch, gain))
            core *= scale
            output[tile.core_top:tile.core_bottom, tile.core_left:tile.core_right] = \
                np.rint(core).astype(np.uint8).transpose(1, 2, 0)

        tiles, futures = self._start(height, width, min_tiles, run)
        return PendingImage(output, tiles, futures)

    def submit(self, rgb: torch.Tensor, min_tiles: int = 1) -> PendingImage:
        """As :meth:`ruas_nni.inference.enhance.Enhancer.submit`: ``3 x H x W`` float in ``[0, 1]`` (a
        16-bit or float input; reading one has imported PyTorch already)."""
        import torch

        source = rgb.detach().to(torch.float32).contiguous().numpy()
        height, width = int(source.shape[1]), int(source.shape[2])
        output = np.empty((3, height, width), np.float32)
        gain = self.exposure_gain(source.transpose(1, 2, 0), 1.0)

        def run(tile: Tile) -> None:
            batch = np.ascontiguousarray(source[:, tile.top:tile.bottom, tile.left:tile.right])[None]
            output[:, tile.core_top:tile.core_bottom, tile.core_left:tile.core_right] = \
                tile.crop(self._window(batch, gain))

        tiles, futures = self._start(height, width, min_tiles, run)
        return PendingImage(torch.from_numpy(output), tiles, futures)

    def close(self) -> None:
        with self._lock:
            if self._pool is not None:
                self._pool.shutdown(wait=True, cancel_futures=True)
                self._pool = None

    def __enter__(self) -> GraphEnhancer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
