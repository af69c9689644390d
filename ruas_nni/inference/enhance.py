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

import logging
import os
import sys
import threading
import warnings
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from ..base.errors import UsageError
from ..model.checkpoint import Checkpoint, load_checkpoint
from ..model.network import exposure_gain
from .files import (  # noqa: F401 - the file side, re-exported: it lives in a torch-free module
    DEFAULT_CHECKPOINT,
    DEFAULT_PNG_COMPRESSION,
    EnhanceJob,
    EnhanceSummary,
    JobPlan,
    PendingImage,
    _Decoded,
    _read_8bit,
    _run_now,
    _write_uint8,
    available_cores,
    default_checkpoint_path,
    enhance_files,
    plan_jobs,
    tune_allocator,
    write_enhanced,
)
from .fold import FoldedRUAS
from .native import auto_engine
from .tiling import (  # noqa: F401 - the tile budget, re-exported
    _PAPER_MAX_CHANNELS,
    DEFAULT_MEMORY_BUDGET_MB_PER_WORKER,
    ORT_TILE_BYTES_PER_PIXEL,
    TILE_BYTES_PER_PIXEL,
    Tile,
    plan_tiles,
    tile_pixels_for_budget,
)

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

ENGINES = ("auto", "torch", "onnxruntime", "native")
"""CPU engines: ``torch`` runs the folded network in PyTorch; ``onnxruntime`` runs the same folded
graph (:func:`ruas_nni.onnx_export.folded_onnx_bytes`) in ONNX Runtime, measured about 20 % less CPU
time and 40 % less memory per pixel on 2 cores; ``native`` runs it as C generated for the
architecture and compiled once with the system's C compiler (:mod:`ruas_nni.inference.native`),
about a third of ONNX Runtime's time (``docs/speed.md``); ``auto`` picks ``native`` on CPU when a C
compiler is found and the cache folder is on, else ``onnxruntime`` when it is installed, else
``torch`` (``native`` and ``onnxruntime`` need the folded network)."""

CUDA_MAX_TILE_PIXELS = 9_000_000
"""On a GPU a 3840x2160 frame runs as one tile (about 2 GB of activations in float32)."""

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


class _GraphSession:
    """The folded network in ONNX Runtime or as native code: one session, run concurrently by the
    worker threads, each call on its caller's thread (one intra-op thread; both release the GIL)."""

    def __init__(self, session, engine: str) -> None:
        self.session = session
        self.engine = engine

    @classmethod
    def open(cls, model: nn.Module, engine: str, *, fall_back: bool = False, raw: bool = False) -> _GraphSession:
        """``engine`` ``native`` or ``onnxruntime``. ``fall_back``: when the native code cannot be built
        here, say why once and use ONNX Runtime (else that is a usage error). With exposure
        normalisation the graph takes the gain as a second input, unless ``raw`` (the unscaled output:
        what the gain is measured on)."""
        gain_input = getattr(model, "exposure", None) is not None and not raw
        if engine == "native":
            from .native import NativeSession, NativeUnavailable, library_folder, native_source

            try:
                return cls(NativeSession(*native_source(model, gain_input=gain_input), library_folder()), "native")
            except NativeUnavailable as exc:
                if not fall_back:
                    raise UsageError(f"`engine` native: {exc}", keys=("engine",)) from None
                log.warning("the native engine is not available here (%s); using ONNX Runtime", exc)
        from .graph_cache import ort_session
        from .onnx_export import folded_onnx_bytes  # onnx_export imports this module (cycle)

        return cls(ort_session(folded_onnx_bytes(model, gain_input=gain_input)), "onnxruntime")

    def __call__(self, x: torch.Tensor, gain: torch.Tensor | None = None) -> torch.Tensor:
        feeds = {"image": x.detach().to(torch.float32).contiguous().numpy()}
        if gain is not None:  # the whole image's exposure gain, one per image of the batch
            feeds["gain"] = gain.detach().to("cpu", torch.float32).reshape(-1, 1, 1, 1).numpy()
        output = self.session.run(["enhanced"], feeds)[0]
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
        self._gain_iem: _GraphSession | None = None
        chosen = engine == "auto"
        if chosen:
            engine = auto_engine() if not on_cuda and fold and not compile and layout == "nchw" else "torch"
        if engine in ("onnxruntime", "native"):
            if on_cuda or not fold or compile:
                raise UsageError(f"`engine` {engine} runs the folded network on CPU only "
                                 "(not with `device` cuda, `no_fold` or `compile`)",
                                 keys=("engine", "device", "no_fold", "compile"))
            if not _onnxruntime_available():
                raise UsageError(f"`engine` {engine}: onnxruntime is not installed (pip install onnxruntime)",
                                 keys=("engine",))
            self._forward = _GraphSession.open(self.model, engine, fall_back=chosen)
            engine = self._forward.engine
            if self.network.exposure is not None:  # the gain's IEM on the small copy, in the same engine
                self._gain_iem = _GraphSession.open(FoldedRUAS(self.network, "iem").eval(), engine, raw=True)
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
                if engine == "native":
                    max_tile_pixels = tile_pixels_for_budget(budget, self.workers, 1,
                                                             self._forward.session.bytes_per_pixel())
                else:
                    per_pixel = ORT_TILE_BYTES_PER_PIXEL if engine == "onnxruntime" else TILE_BYTES_PER_PIXEL
                    max_tile_pixels = tile_pixels_for_budget(budget, self.workers, _max_channels(self.network),
                                                             per_pixel)
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
            if self._gain_iem is not None:
                return exposure_gain(self._gain_iem, rgb.unsqueeze(0).to(torch.float32), self.network.exposure,
                                     self.network.exposure_gamma, self.network.tone)
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

