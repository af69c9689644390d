"""Enhancing images with a trained network: the engine behind ``ruas-nni enhance``.

Plain PyTorch only (no NNI, no Lightning), so that inference starts fast and deploys anywhere.

What makes it fast (measured in ``docs/speed.md``):

* the network is folded for inference (:mod:`ruas_nni.inference.fold`): about 40 % less work than the
  network as trained, same outputs up to float32 rounding;
* on CPU, images are cut into tiles with an exact halo (:mod:`ruas_nni.inference.tiling`) and the tiles run on
  one worker thread per core, each with a single intra-op thread: the network's convolutions are
  far too small for PyTorch's own intra-op threading, which is slower with two threads than with
  one;
* glibc's allocator is told to keep freed memory (:func:`tune_allocator`): the network allocates
  dozens of multi-megabyte tensors per image, and by default every one of them is a fresh mapping
  whose pages the kernel zeroes on first touch, which costs more than the convolutions;
* :func:`enhance_files` decodes the next images and encodes the finished ones in background threads
  while the network runs.

On CUDA: optional half precision and CUDA graphs for repeated sizes (one graph per input shape).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import sys
import threading
import warnings
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import torch
from PIL import Image, ImageOps
from torch import nn

from ..base.atomic import atomic_write
from ..base.errors import UsageError
from ..base.images import _SIXTEEN_BIT_MODES, ImageReadError, _png_bit_depth, read_image, write_png
from ..model.checkpoint import Checkpoint, load_checkpoint
from .fold import FoldedRUAS
from .tiling import DEFAULT_MAX_TILE_PIXELS, Tile, plan_tiles

__all__ = [
    "STAGES",
    "Enhancer",
    "EnhanceJob",
    "EnhanceSummary",
    "default_checkpoint_path",
    "resolve_device",
    "load_model",
    "tune_allocator",
    "available_cores",
    "enhance_files",
    "write_enhanced",
]

log = logging.getLogger(__name__)

STAGES = ("final", "iem")
"""Which output to keep: the whole network's (IEM + NRM) or the IEM's alone."""

DEFAULT_CHECKPOINT = "default.pt"

DEFAULT_MEMORY_BUDGET_MB_PER_WORKER = 128
"""Working memory of the network per CPU worker, in MB, when no ``memory_budget`` is given: the
tile size follows from it (:func:`tile_pixels_for_budget`). With two workers a 3840x2160 image
peaks below 1 GB resident and a 7680x4320 one below 1.5 GB, PyTorch itself (about 0.5 GB) included
(measured in ``docs/speed.md``)."""

TILE_BYTES_PER_PIXEL = 1500
"""Peak resident memory one tile of the folded paper-genotype network needs per pixel in PyTorch
(input, activations, convolution scratch, output): measured 860-1050 bytes for one tile of
40,000-330,000 pixels with the authors' ``lol.pt``, rounded up for two workers sharing one heap
(with 900 a 3840x2160 photo peaked at 1.06 GB, with 1200 at 0.98 GB, with 1500 at 0.93 GB).
Wider networks (more channels) scale it by their channel count (:func:`tile_pixels_for_budget`)."""

ORT_TILE_BYTES_PER_PIXEL = 536
"""The same for the ONNX Runtime engine, whose memory planner reuses buffers (measured 536 bytes per
pixel on one 570x570 tile; with it a 600x400 photo is one tile at the default budget)."""

ENGINES = ("auto", "torch", "onnxruntime")
"""CPU engines: ``torch`` runs the folded network in PyTorch; ``onnxruntime`` runs the same folded
graph (:func:`ruas_nni.onnx_export.folded_onnx_bytes`) in ONNX Runtime, measured about 20 % less CPU
time and 40 % less memory per pixel on 2 cores (``docs/speed.md``); ``auto`` picks ``onnxruntime``
on CPU when it is installed and the network is folded, else ``torch``."""

_PAPER_MAX_CHANNELS = 6

CUDA_MAX_TILE_PIXELS = 9_000_000
"""On a GPU a 3840x2160 frame runs as one tile (about 2 GB of activations in float32)."""

DEFAULT_PNG_COMPRESSION: int | None = None
"""zlib level for 8-bit PNG outputs; ``None``: zlib's run-length strategy (``Z_RLE``), which on
enhanced photos writes files as small as Pillow's default (level 6) two to three times faster
(measured in ``docs/speed.md``). A level 0-9 uses zlib's default strategy at that level."""

_Z_RLE = 3


def default_checkpoint_path() -> Path | None:
    """The model shipped inside the package, or ``None`` while none is shipped."""
    candidate = resources.files("ruas_nni") / "pretrained" / DEFAULT_CHECKPOINT
    path = Path(str(candidate))
    return path if path.is_file() else None


def resolve_device(device: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cuda`` without a GPU is a usage error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError("`device` cuda: no CUDA GPU is available here; use `device` cpu or auto", keys=("device",))
    try:
        return torch.device(device)
    except RuntimeError:
        raise UsageError(f"`device`: unknown device {device!r}; expected auto, cpu or cuda", keys=("device",)) from None


def load_model(path: str | os.PathLike[str] | None) -> tuple[Checkpoint, Path]:
    """Load ``path``, or the packaged default model when ``path`` is ``None``."""
    if path is None:
        default = default_checkpoint_path()
        if default is None:
            raise UsageError(
                "no default model is shipped with this version yet: pass `checkpoint` PATH "
                "(a ruas-nni model.pt or one of the authors' lol.pt / upe.pt / dark.pt)", keys=("checkpoint",)
            )
        path = default
    return load_checkpoint(path), Path(path)


def available_cores() -> int:
    """CPU cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


_ALLOCATOR_TUNED = False


def tune_allocator() -> bool:
    """Ask glibc's ``malloc`` to keep freed memory for reuse instead of unmapping it.

    By default glibc serves every allocation above a (self-adjusting) threshold with a fresh
    ``mmap`` and returns it on ``free``; the kernel then zeroes every page again on first touch. For
    a network that allocates dozens of 1-30 MB tensors per image that costs more time than the
    arithmetic (measured: 114 -> 65 ms per 600x400 image on one core). Raising the mmap threshold to
    its maximum (32 MB) and the trim threshold to 1 GB keeps such blocks in the heap. This changes
    the process's allocator settings, so it is called by the command-line tools, not on import.
    Returns whether the settings were applied (only with glibc; ``RUAS_NNI_MALLOC_TUNING=0`` in
    the environment turns it off).
    """
    global _ALLOCATOR_TUNED
    if _ALLOCATOR_TUNED:
        return True
    if os.environ.get("RUAS_NNI_MALLOC_TUNING", "1") == "0":  # for measuring what it brings
        return False
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    m_trim_threshold, m_mmap_threshold, m_arena_max = -1, -3, -8
    applied = bool(mallopt(m_mmap_threshold, 32 * 1024 * 1024)) and bool(mallopt(m_trim_threshold, 1 << 30))
    if os.environ.get("RUAS_NNI_ARENAS", "1") == "1":
        mallopt(m_arena_max, 1)
    _ALLOCATOR_TUNED = applied
    return applied


def tile_pixels_for_budget(budget_mb: float, workers: int, max_channels: int = _PAPER_MAX_CHANNELS,
                           bytes_per_pixel: int = TILE_BYTES_PER_PIXEL) -> int:
    """Largest tile (pixels, halo included) such that ``workers`` tiles in flight stay within
    ``budget_mb`` MB, for a network whose widest cell has ``max_channels`` channels and an engine
    that needs ``bytes_per_pixel`` for the paper genotype; never more than
    :data:`~ruas_nni.tiling.DEFAULT_MAX_TILE_PIXELS` (larger tensors would leave glibc's heap)."""
    per_pixel = bytes_per_pixel * max(1.0, max_channels / _PAPER_MAX_CHANNELS)
    pixels = int(budget_mb * 2**20 / (max(1, workers) * per_pixel))
    return max(1, min(DEFAULT_MAX_TILE_PIXELS, pixels))


def _max_channels(network: nn.Module) -> int:
    channels = [int(m.out_channels) for m in network.modules() if isinstance(m, nn.Conv2d)]
    return max(channels, default=_PAPER_MAX_CHANNELS)


class _StageOutput(nn.Module):
    """The unfolded network returning one stage's output (for ``fold=False``)."""

    def __init__(self, network: nn.Module, stage: str) -> None:
        super().__init__()
        self.network = network
        self.stage = stage

    def forward(self, y: torch.Tensor, gain: torch.Tensor | None = None) -> torch.Tensor:
        result = self.network.enhance(y, gain)
        return result.final if self.stage == "final" else result.iem

    def receptive_radius(self) -> int:
        if self.stage == "iem":
            return self.network.iem.receptive_radius()
        return self.network.receptive_radius()


class _OnnxRuntime:
    """The folded network in ONNX Runtime: one session, run concurrently by the worker threads, each
    call on its caller's thread (one intra-op thread; ONNX Runtime releases the GIL)."""

    def __init__(self, model: nn.Module) -> None:
        import onnxruntime as ort  # optional: only the ONNX Runtime engine needs it

        from .onnx_export import folded_onnx_bytes  # onnx_export imports this module (cycle)

        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        # Basic graph optimisations: the extended and layout (NCHWc) ones measured slower here.
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        options.log_severity_level = 3
        if os.environ.get("RUAS_NNI_ORT_ARENA", "1") == "0":  # for measuring what the arena saves
            options.enable_cpu_mem_arena = False
        self.session = ort.InferenceSession(folded_onnx_bytes(model), options, providers=["CPUExecutionProvider"])

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        output = self.session.run(["enhanced"], {"image": x.detach().to(torch.float32).contiguous().numpy()})[0]
        return torch.from_numpy(output)


def _onnxruntime_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("onnxruntime") is not None


class _CudaGraphs:
    """Replays one captured CUDA graph per input shape (at most ``capacity`` shapes)."""

    def __init__(self, model: Callable[[torch.Tensor], torch.Tensor], capacity: int = 8) -> None:
        self.model = model
        self.capacity = capacity
        self.graphs: dict[tuple, tuple[torch.cuda.CUDAGraph, torch.Tensor, torch.Tensor]] = {}
        self.failed = False

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.failed:
            return self.model(x)
        key = (tuple(x.shape), x.dtype, x.device)
        entry = self.graphs.get(key)
        if entry is None:
            if len(self.graphs) >= self.capacity:
                return self.model(x)
            try:
                entry = self._capture(x)
            except Exception as exc:  # noqa: BLE001 - graphs are an optimisation: fall back to eager
                log.warning("CUDA graph capture failed (%s); running without CUDA graphs", exc)
                self.failed = True
                return self.model(x)
            self.graphs[key] = entry
        graph, static_in, static_out = entry
        static_in.copy_(x)
        graph.replay()
        return static_out.clone()

    def _capture(self, x: torch.Tensor) -> tuple[torch.cuda.CUDAGraph, torch.Tensor, torch.Tensor]:
        static_in = x.clone()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(2):  # warm up (cuDNN algorithm choice, allocator) outside the graph
                self.model(static_in)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_out = self.model(static_in)
        return graph, static_in, static_out


class PendingImage:
    """An image whose tiles are being enhanced straight into a preallocated output; :meth:`result`
    waits for them and returns that output (``3 x H x W`` float32 or ``H x W x 3`` uint8)."""

    def __init__(self, output: torch.Tensor | np.ndarray, tiles: list[Tile], futures: list[Future]) -> None:
        self.output = output
        self.tiles = tiles
        self.futures = futures

    def result(self):
        """The enhanced image: float32 ``3 x H x W`` in ``[0, 1]`` on the CPU for :meth:`Enhancer.submit`,
        uint8 ``H x W x 3`` for :meth:`Enhancer.submit_uint8`."""
        for future in self.futures:
            future.result()
        return self.output

    def cancel(self) -> None:
        for future in self.futures:
            future.cancel()


def _run_now(function: Callable[[Tile], None], tile: Tile) -> Future:
    """A finished future holding ``function(tile)`` or the exception it raised (as a pool would)."""
    future: Future = Future()
    try:
        future.set_result(function(tile))
    except Exception as exc:  # noqa: BLE001 - handed to the caller through the future, like a pool
        future.set_exception(exc)
    return future


class Enhancer:
    """Runs one checkpoint's network on single images (``3 x H x W`` in ``[0, 1]``).

    ``fold`` (default) runs the folded network (:mod:`ruas_nni.inference.fold`), identical up to float32
    rounding; ``fold=False`` runs the network exactly as trained. On CPU, ``workers`` threads
    (default: one per core) enhance tiles of at most ``max_tile_pixels`` pixels in parallel; on
    CUDA, ``half`` runs in float16 and ``cuda_graphs`` replays one CUDA graph per input size.
    ``compile`` wraps the network in ``torch.compile`` (slower on CPU for this network; see
    ``docs/speed.md``). On CPU the tile size follows ``memory_budget``, the working memory of all
    tiles in flight together (default :data:`DEFAULT_MEMORY_BUDGET_MB_PER_WORKER` per worker), unless
    ``max_tile_pixels`` is given (0: never tile). Use as a context manager, or call :meth:`close`, to
    stop the worker threads. With exposure normalisation on (the checkpoint's ``exposure``), the gain
    is computed once per image (:meth:`exposure_gain`) and every tile uses it: tiled equals untiled.
    """

    def __init__(self, checkpoint: Checkpoint, stage: str = "final", device: torch.device | str = "cpu", *,
                 fold: bool = True, half: bool = False, compile: bool = False, cuda_graphs: bool = True,
                 workers: int | None = None, max_tile_pixels: int | None = None, layout: str = "nchw",
                 memory_budget: float | None = None, engine: str = "torch") -> None:
        if stage not in STAGES:
            raise UsageError(f"`stage` must be one of {', '.join(STAGES)}, got {stage!r}", keys=("stage",))
        self.checkpoint = checkpoint
        self.stage = stage
        self.device = torch.device(device)
        on_cuda = self.device.type == "cuda"
        if half and not on_cuda:
            raise UsageError("`half` needs a GPU (`device` cuda): float16 convolutions are slow on CPU",
                             keys=("half", "device"))
        self.dtype = torch.float16 if half else torch.float32
        self.network = checkpoint.build()
        cuda_graphs = cuda_graphs and self.network.exposure is None  # graphs replay one input; the gain is a second
        if fold:
            model: nn.Module = FoldedRUAS(self.network, stage, functional=compile,
                                          layout=layout if self.device.type == "cpu" else "nchw")
        else:
            model = _StageOutput(self.network, stage)
        self.halo = int(model.receptive_radius())
        self.model = model.to(self.device, self.dtype).eval()
        self._forward: Callable[[torch.Tensor], torch.Tensor] = self.model
        if engine not in ENGINES:
            raise UsageError(f"`engine` must be one of {', '.join(ENGINES)}, got {engine!r}", keys=("engine",))
        if engine == "auto":
            wanted = not on_cuda and fold and not compile and layout == "nchw" and self.network.exposure is None
            engine = "onnxruntime" if wanted and _onnxruntime_available() else "torch"
        if engine == "onnxruntime":
            if on_cuda or not fold or compile:
                raise UsageError("`engine` onnxruntime runs the folded network on CPU only "
                                 "(not with `device` cuda, `no_fold` or `compile`)",
                                 keys=("engine", "device", "no_fold", "compile"))
            if self.network.exposure is not None:
                raise UsageError("`engine` onnxruntime cannot apply exposure normalisation (its gain is measured on "
                                 "the whole image); use `engine` torch", keys=("engine", "exposure"))
            if not _onnxruntime_available():
                raise UsageError("`engine` onnxruntime: onnxruntime is not installed (pip install onnxruntime)",
                                 keys=("engine",))
            self._forward = _OnnxRuntime(self.model)
        self.engine = engine
        if compile:
            self._forward = self._compiled(self.model)
        if on_cuda and cuda_graphs:
            self._forward = _CudaGraphs(self._forward)
        if workers is None:
            workers = available_cores() if not on_cuda else 1
        if workers < 1:
            raise UsageError(f"`workers` must be at least 1, got {workers}", keys=("workers",))
        self.workers = 1 if on_cuda else int(workers)
        if memory_budget is not None and memory_budget <= 0:
            raise UsageError(f"`memory_budget` must be positive, got {memory_budget}", keys=("memory_budget",))
        if max_tile_pixels is None:
            if on_cuda:
                max_tile_pixels = CUDA_MAX_TILE_PIXELS
            else:
                budget = memory_budget or DEFAULT_MEMORY_BUDGET_MB_PER_WORKER * self.workers
                per_pixel = ORT_TILE_BYTES_PER_PIXEL if engine == "onnxruntime" else TILE_BYTES_PER_PIXEL
                max_tile_pixels = tile_pixels_for_budget(budget, self.workers, _max_channels(self.network), per_pixel)
        self.max_tile_pixels = int(max_tile_pixels) if max_tile_pixels > 0 else sys.maxsize
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    @staticmethod
    def _compiled(model: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
        try:
            return torch.compile(model, dynamic=None)
        except Exception as exc:  # noqa: BLE001 - compiling is optional: say why and run eagerly
            log.warning("torch.compile is not available here (%s); running eagerly", exc)
            return model

    # -- running ----------------------------------------------------------------------------

    def _pool_or_none(self) -> ThreadPoolExecutor | None:
        # On CPU even one worker is a thread of its own with one intra-op thread: run in the caller's
        # thread, PyTorch's default intra-op threads made one worker ~8x more CPU time under load.
        if self.device.type != "cpu":
            return None
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="ruas-enhance",
                                                initializer=torch.set_num_threads, initargs=(1,))
            return self._pool

    def run_window(self, window: torch.Tensor, gain: torch.Tensor | None = None) -> torch.Tensor:
        """The network on one ``3 x h x w`` window (``gain``: the whole image's exposure gain): the
        output clipped to ``[0, 1]``, float32, CPU."""
        with torch.inference_mode():
            batch = window.unsqueeze(0).to(self.device, self.dtype, non_blocking=True).contiguous()
            output = (self._forward(batch) if gain is None else self._forward(batch, gain.to(self.device)))[0]
            return output.to("cpu", torch.float32).clamp_(0.0, 1.0)

    def plan(self, height: int, width: int, min_tiles: int = 1) -> list[Tile]:
        """The tiles an image of this size is cut into."""
        return plan_tiles(height, width, self.halo, self.max_tile_pixels, min_tiles)

    def _start(self, height: int, width: int, min_tiles: int, run: Callable[[Tile], None]) -> tuple[list[Tile], list[Future]]:
        tiles = self.plan(height, width, min_tiles)
        pool = self._pool_or_none()
        if pool is None:
            return tiles, [_run_now(run, tile) for tile in tiles]
        return tiles, [pool.submit(run, tile) for tile in tiles]

    def submit(self, rgb: torch.Tensor, min_tiles: int = 1) -> PendingImage:
        """Start enhancing ``rgb`` (``3 x H x W`` float in ``[0, 1]``) on the worker threads; FIFO
        across calls. Each tile's core is written into one preallocated output as it finishes."""
        if rgb.dim() != 3 or rgb.shape[0] != 3:
            raise ValueError(f"expected a 3 x H x W image, got shape {tuple(rgb.shape)}")
        height, width = int(rgb.shape[1]), int(rgb.shape[2])
        output = torch.empty(3, height, width)
        gain = self.exposure_gain(rgb)

        def run(tile: Tile) -> None:
            core = tile.crop(self.run_window(rgb[:, tile.top:tile.bottom, tile.left:tile.right], gain))
            output[:, tile.core_top:tile.core_bottom, tile.core_left:tile.core_right] = core

        tiles, futures = self._start(height, width, min_tiles, run)
        return PendingImage(output, tiles, futures)

    def submit_uint8(self, rgb: np.ndarray, min_tiles: int = 1) -> PendingImage:
        """Start enhancing an 8-bit ``H x W x 3`` image; its result is ``H x W x 3`` uint8.

        No whole-image float buffer: each tile is converted to float (``/ 255``, as
        :func:`ruas_nni.data.read_image` does), enhanced, and its core rounded into the preallocated
        8-bit output (as :func:`ruas_nni.data.to_uint` does), so the values are those of
        ``to_uint(submit(read_image(...).rgb).result())``, bit for bit, with memory bounded by the
        tiles in flight."""
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise ValueError(f"expected an H x W x 3 uint8 image, got {rgb.dtype} {tuple(rgb.shape)}")
        height, width = int(rgb.shape[0]), int(rgb.shape[1])
        if rgb.flags.writeable:
            source = torch.from_numpy(rgb)
        else:  # decoded images are read-only views of Pillow's bytes; they are only read here
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                source = torch.from_numpy(rgb)
        output = np.empty((height, width, 3), np.uint8)
        target = torch.from_numpy(output)
        gain = self.exposure_gain(source.permute(2, 0, 1).to(torch.float32).div_(255.0)) \
            if self.network.exposure is not None else None  # (a whole-image float copy only with exposure on)

        def run(tile: Tile) -> None:
            window = source[tile.top:tile.bottom, tile.left:tile.right].permute(2, 0, 1).to(torch.float32).div_(255.0)
            core = tile.crop(self.run_window(window, gain))
            target[tile.core_top:tile.core_bottom, tile.core_left:tile.core_right] = (
                core.mul(255.0).round_().to(torch.uint8).permute(1, 2, 0))

        tiles, futures = self._start(height, width, min_tiles, run)
        return PendingImage(output, tiles, futures)

    def exposure_gain(self, rgb: torch.Tensor) -> torch.Tensor | None:
        """The exposure gain of the whole image ``rgb`` (``3 x H x W``), ``None`` when exposure is off."""
        if self.network.exposure is None:
            return None
        with torch.inference_mode():
            weight = next(self.network.parameters())  # on the device, in the dtype, the network runs in
            return self.network.exposure_gain(rgb.unsqueeze(0).to(weight.device, weight.dtype))

    def __call__(self, rgb: torch.Tensor) -> torch.Tensor:
        """The enhanced image, clipped to ``[0, 1]``, on the CPU (tiles of one image in parallel)."""
        return self.submit(rgb, min_tiles=self.workers).result()

    def close(self) -> None:
        """Stop the worker threads (waits for running tiles)."""
        with self._lock:
            if self._pool is not None:
                self._pool.shutdown(wait=True, cancel_futures=True)
                self._pool = None

    def __enter__(self) -> Enhancer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:  # pragma: no cover - best effort
        pool = getattr(self, "_pool", None)
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)


# ---------------------------------------------------------------------------------------------
# Whole folders: decode ahead, enhance, encode behind.


@dataclass(frozen=True)
class EnhanceJob:
    """One input file and the PNG it becomes."""

    source: Path
    target: Path


@dataclass
class EnhanceSummary:
    """What :func:`enhance_files` did."""

    written: list[Path] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)


def write_enhanced(path: Path, rgb: torch.Tensor, alpha: torch.Tensor | None, bit_depth: int,
                   png_compression: int | None = DEFAULT_PNG_COMPRESSION) -> None:
    """Write an enhanced image with :func:`ruas_nni.base.images.write_png` (atomically); 8-bit PNGs with
    zlib's run-length strategy, or at level ``png_compression``."""
    if png_compression is None:
        options = {"compress_level": 6, "compress_type": _Z_RLE}
    else:
        options = {"compress_level": int(png_compression)}
    write_png(path, rgb, alpha, bit_depth, png_options=options)


def _write_uint8(path: Path, rgb: np.ndarray, alpha: np.ndarray | None,
                 png_compression: int | None = DEFAULT_PNG_COMPRESSION) -> None:
    """Write an ``H x W x 3`` uint8 result (and an ``H x W`` uint8 alpha) as an 8-bit PNG, atomically,
    with the same encoder options as :func:`write_enhanced`."""
    if png_compression is None:
        options = {"compress_level": 6, "compress_type": _Z_RLE}
    else:
        options = {"compress_level": int(png_compression)}
    array = np.dstack([rgb, alpha]) if alpha is not None else rgb
    image = Image.fromarray(array)
    with atomic_write(path) as handle:
        image.save(handle, format="PNG", **options)


@dataclass
class _Decoded:
    """An input as :func:`enhance_files` holds it: 8-bit ``H x W x 3`` (+ ``H x W`` alpha) arrays for
    ordinary 8-bit images (a quarter of the memory of floats), else the float :class:`LoadedImage`."""

    rgb8: np.ndarray | None = None
    alpha8: np.ndarray | None = None
    loaded: object | None = None  # ruas_nni.data.LoadedImage

    @property
    def pixels(self) -> int:
        if self.rgb8 is not None:
            return int(self.rgb8.shape[0] * self.rgb8.shape[1])
        rgb = self.loaded.rgb  # type: ignore[union-attr]
        return int(rgb.shape[1] * rgb.shape[2])


def _read_8bit(path: Path) -> _Decoded:
    """Decode ``path`` for :func:`enhance_files`. 8-bit images are kept as uint8 arrays, decoded
    exactly as :func:`ruas_nni.data.read_image` decodes them (EXIF orientation, RGB / RGBA
    conversion); anything else (16-bit, float, unreadable) goes through ``read_image`` itself, which
    also gives the one-line reason for a file it cannot read."""
    try:
        if _png_bit_depth(path) != 16:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                with Image.open(path) as opened:
                    image = ImageOps.exif_transpose(opened)
                    image.load()
            if image.width >= 1 and image.height >= 1 and image.mode not in _SIXTEEN_BIT_MODES | {"F"}:
                has_alpha = image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
                    image.mode == "P" and "transparency" in image.info)
                array = np.asarray(image.convert("RGBA" if has_alpha else "RGB"))
                del image
                if has_alpha:
                    return _Decoded(np.ascontiguousarray(array[..., :3]), np.ascontiguousarray(array[..., 3]))
                return _Decoded(np.ascontiguousarray(array))
    except Exception:  # noqa: BLE001 - read_image below decides, and says why in one line
        pass
    return _Decoded(loaded=read_image(path))


def _describe(exc: BaseException) -> str:
    text = " ".join(str(exc).split())[:200]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def enhance_files(enhancer: Enhancer, jobs: Sequence[EnhanceJob], *,
                  png_compression: int | None = DEFAULT_PNG_COMPRESSION,
                  on_error: Callable[[Path, str], None] | None = None,
                  on_done: Callable[[EnhanceJob], None] | None = None,
                  read_ahead: int = 2, in_flight_pixels: int = 12_000_000) -> EnhanceSummary:
    """Enhance every job's source into its target, overlapping decoding, the network and encoding.

    The next ``read_ahead`` images are decoded in a background thread, the network works on up to
    ``workers + 1`` images at once (their tiles queue on the worker threads in order), and finished
    images are encoded and written by another background thread. 8-bit images stay 8-bit from
    decoding to encoding (:meth:`Enhancer.submit_uint8`); large images are not held several at a
    time (at most ``in_flight_pixels`` pixels running or waiting to be written, at least one image),
    so peak memory is bounded by the tiles in flight plus a few 8-bit copies of one image. A file
    that cannot be read or written is reported through ``on_error(path, reason)`` and skipped;
    nothing is written for it.
    """
    summary = EnhanceSummary()

    def fail(path: Path, reason: str) -> None:
        summary.failed.append((path, reason))
        if on_error is not None:
            on_error(path, reason)

    def read(job: EnhanceJob) -> _Decoded:
        return _read_8bit(job.source)

    def write(job: EnhanceJob, result, alpha8: np.ndarray | None, loaded) -> None:
        if isinstance(result, np.ndarray):
            _write_uint8(job.target, result, alpha8, png_compression)
        else:
            write_enhanced(job.target, result, loaded.alpha, loaded.bit_depth, png_compression)

    def start(decoded: _Decoded) -> PendingImage:
        if decoded.rgb8 is not None:
            return enhancer.submit_uint8(decoded.rgb8)
        return enhancer.submit(decoded.loaded.rgb)  # type: ignore[union-attr]

    reader = ThreadPoolExecutor(1, thread_name_prefix="ruas-read")
    writer = ThreadPoolExecutor(1, thread_name_prefix="ruas-write")
    reads: deque[tuple[EnhanceJob, Future]] = deque()
    running: deque[tuple[EnhanceJob, _Decoded, PendingImage]] = deque()
    writes: deque[tuple[EnhanceJob, Future, int]] = deque()
    pending_jobs = iter(jobs)
    max_running = enhancer.workers + 1
    max_queued_writes = 2

    last_pixels = 0

    def fill_reads() -> None:
        # Large images: decode one ahead only (each decoded image is held until it is enhanced).
        while len(reads) < (read_ahead if 4 * last_pixels <= in_flight_pixels else 1):
            job = next(pending_jobs, None)
            if job is None:
                return
            reads.append((job, reader.submit(read, job)))

    def finish_write(block: bool, limit: int | None = None) -> None:
        count = 0
        while writes and (block or writes[0][1].done()) and (limit is None or count < limit):
            count += 1
            job, future, _ = writes.popleft()
            try:
                future.result()
            except Exception as exc:  # noqa: BLE001 - report any failure to write as this file's
                fail(job.source, f"cannot write {job.target} ({_describe(exc)})")
            else:
                summary.written.append(job.target)
                if on_done is not None:
                    on_done(job)

    def in_flight() -> int:
        return sum(d.pixels for _, d, _ in running) + sum(p for _, _, p in writes)

    def finish_oldest() -> None:
        job, decoded, pending = running.popleft()
        try:
            result = pending.result()
        except Exception as exc:  # noqa: BLE001 - e.g. out of memory: this file fails, the rest go on
            fail(job.source, f"enhancement failed ({_describe(exc)})")
            return
        # The input itself is not passed on: only what writing needs.
        writes.append((job, writer.submit(write, job, result, decoded.alpha8, decoded.loaded), decoded.pixels))
        del result, decoded
        finish_write(block=False)
        # bound the memory held by images waiting to be written
        while len(writes) > max_queued_writes or (len(writes) > 1 and in_flight() > in_flight_pixels):
            finish_write(block=True, limit=1)

    try:
        fill_reads()
        while reads:
            job, future = reads.popleft()
            fill_reads()
            try:
                decoded = future.result()
            except ImageReadError as exc:
                fail(job.source, str(exc))
                continue
            except Exception as exc:  # noqa: BLE001 - the loader should raise ImageReadError; never crash
                fail(job.source, f"cannot read ({_describe(exc)})")
                continue
            last_pixels = decoded.pixels
            while running and (len(running) >= max_running or in_flight() + decoded.pixels > in_flight_pixels):
                finish_oldest()
            running.append((job, decoded, start(decoded)))
            del decoded
            finish_write(block=False)
        while running:
            finish_oldest()
        finish_write(block=True)
    except BaseException:
        for _, future in reads:
            future.cancel()
        for _, _, pending in running:
            pending.cancel()
        raise
    finally:
        reader.shutdown(wait=True, cancel_futures=True)
        # A write that has started finishes (atomically: temporary name, then rename); queued ones
        # are dropped when interrupted.
        writer.shutdown(wait=True, cancel_futures=True)
    return summary


# ---------------------------------------------------------------------------------------------
# Output names: never an input, never two inputs onto one output.


@dataclass
class JobPlan:
    """What :func:`plan_jobs` decided."""

    jobs: list[EnhanceJob] = field(default_factory=list)
    existing: list[EnhanceJob] = field(default_factory=list)
    """Jobs whose output exists already (kept: not run unless ``overwrite``)."""
    notes: list[str] = field(default_factory=list)
    """One line per renamed output, saying why."""


def _inode(path: Path) -> tuple[int, int] | None:
    try:
        status = path.stat()
    except OSError:
        return None
    return status.st_dev, status.st_ino


def plan_jobs(sources: Iterable[tuple[Path, Path | None]], out_dir: Path, overwrite: bool = False) -> JobPlan:
    """Choose an output PNG for every input: ``OUTDIR/<sub-folder>/<stem>.png``.

    ``sources`` are ``(file, folder it was found in or None)``; files found in a folder keep their
    sub-folder below it. The same file given twice is enhanced once. Inputs that would share an
    output (``a.jpg`` and ``a.png``) get ``a_jpg.png`` and ``a_png.png``; an output that would be an
    input file (``-o`` is the input folder and the input is a PNG) becomes ``<stem>_enhanced.png``;
    a number is appended while a name is still taken. Every such rename is explained in ``notes``.
    Existing outputs go to ``existing`` unless ``overwrite``.
    """
    plan = JobPlan()
    unique: list[Path] = []
    roots: dict[Path, Path | None] = {}
    seen: set[Path] = set()
    for path, root in sources:
        key = path.resolve()
        if key in seen:
            continue
        seen.add(key)
        unique.append(path)
        roots[path] = root
    inputs = seen
    input_inodes = {_inode(p) for p in unique} - {None}

    def is_input(target: Path) -> bool:
        """Whether writing ``target`` would replace an input (same path, symlink or hard link)."""
        return target.resolve() in inputs or (target.exists() and _inode(target) in input_inodes)

    def wanted(path: Path, stem: str) -> Path:
        root = roots[path]
        parent = path.parent.relative_to(root) if root is not None else Path()
        return out_dir / parent / f"{stem}.png"

    by_name: dict[Path, list[Path]] = {}
    for path in unique:
        by_name.setdefault(wanted(path, path.stem).resolve(), []).append(path)
    taken: set[Path] = set()
    for path in unique:
        target = wanted(path, path.stem)
        clash = by_name[target.resolve()]
        if len(clash) > 1:
            suffix = path.suffix.lstrip(".").lower() or "noext"
            target = wanted(path, f"{path.stem}_{suffix}")
            others = ", ".join(str(p) for p in clash if p is not path)
            plan.notes.append(f"{path}: {others} would get the same output name; writing {target}")
        if is_input(target):
            renamed = wanted(path, f"{target.stem}_enhanced")
            plan.notes.append(f"{path}: output {target} would overwrite an input; writing {renamed}")
            target = renamed
        base, number = target, 2
        while is_input(target) or target.resolve() in taken:
            target = base.with_name(f"{base.stem}_{number}.png")
            number += 1
        if target != base:
            plan.notes.append(f"{path}: {base} is taken; writing {target}")
        taken.add(target.resolve())
        job = EnhanceJob(path, target)
        if target.exists() and not overwrite:
            plan.existing.append(job)
        else:
            plan.jobs.append(job)
    return plan
