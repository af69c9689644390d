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
import threading
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..base.devices import resolve_device as _resolve_device_name
from ..base.errors import UsageError
from ..model.checkpoint import Checkpoint, load_checkpoint
from .engine import ENGINES, GRAPH_ENGINES, auto_engine, choose_engine  # noqa: F401 - ENGINES, auto_engine re-exported
from .engine_torch import StageOutput, TorchEngine
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
from .graph import build_graph, max_channels
from .graph_enhancer import GraphEnhancer
from .tiled import STAGES, TiledEnhancer, check_stage
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

CUDA_MAX_TILE_PIXELS = 9_000_000
"""On a GPU a 3840x2160 frame runs as one tile (about 2 GB of activations in float32)."""


def resolve_device(device: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU (:func:`ruas_nni.base.devices.resolve_device`); ``cuda``
    without a GPU is a usage error."""
    name = _resolve_device_name(device)
    try:
        return torch.device(name)
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


class Enhancer(TiledEnhancer):
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

    ``engine`` (:data:`~ruas_nni.inference.engine.ENGINES`, chosen by
    :func:`~ruas_nni.inference.engine.choose_engine`): ``torch`` runs here; the graph engines
    (``onnxruntime``, ``native``) run the checkpoint's folded graph through a
    :class:`~ruas_nni.inference.graph_enhancer.GraphEnhancer`, the enhancer ``ruas-nni enhance`` uses
    without PyTorch, so both give the same outputs bit for bit.
    """

    def __init__(self, checkpoint: Checkpoint, stage: str = "final", device: torch.device | str = "cpu", *,
                 fold: bool = True, half: bool = False, compile: bool = False, cuda_graphs: bool = True,
                 workers: int | None = None, max_tile_pixels: int | None = None, layout: str = "nchw",
                 memory_budget: float | None = None, engine: str = "torch") -> None:
        check_stage(stage)
        self.checkpoint = checkpoint
        self.stage = stage
        self.device = torch.device(device)
        on_cuda = self.device.type == "cuda"
        if half and not on_cuda:
            raise UsageError("`half` needs a GPU (`device` cuda): float16 convolutions are slow on CPU",
                             keys=("half", "device"))
        self.dtype = torch.float16 if half else torch.float32
        self.network = checkpoint.build()
        if fold:
            model: nn.Module = FoldedRUAS(self.network, stage, functional=compile,
                                          layout=layout if self.device.type == "cpu" else "nchw")
        else:
            model = StageOutput(self.network, stage)
        self.halo = int(model.receptive_radius())
        self.model = model.to(self.device, self.dtype).eval()
        requested = engine
        engine = choose_engine(engine, graph=not on_cuda and fold and not compile and layout == "nchw")
        self._graph: GraphEnhancer | None = None
        if engine in GRAPH_ENGINES:
            if on_cuda or not fold or compile:
                raise UsageError(f"`engine` {engine} runs the folded network on CPU only "
                                 "(not with `device` cuda, `no_fold` or `compile`)",
                                 keys=("engine", "device", "no_fold", "compile"))
            self._graph = GraphEnhancer(build_graph(checkpoint, stage, self.network), engine=engine,
                                        workers=workers, max_tile_pixels=max_tile_pixels,
                                        memory_budget=memory_budget, fall_back=requested == "auto")
            self.engine = self._graph.engine
            self.workers, self.max_tile_pixels = self._graph.workers, self._graph.max_tile_pixels
            self._pool, self._lock = None, threading.Lock()  # the GraphEnhancer's threads run the tiles
            return
        # graphs replay one input; the gain is a second
        self._torch = TorchEngine(self.model, compile=compile,
                                  cuda_graphs=on_cuda and cuda_graphs and self.network.exposure is None)
        self._forward = self._torch.forward
        self.engine = engine
        self._inline = self.device.type != "cpu"  # a GPU queues its own work: tiles run in the caller's thread
        channels = max_channels(self.network)
        self._size_tiles(workers, max_tile_pixels, memory_budget,
                         lambda budget, count: (CUDA_MAX_TILE_PIXELS if on_cuda
                                                else self._torch.tile_pixels(budget, count, channels)),
                         single=on_cuda)

    @staticmethod
    def _worker_started() -> None:
        # Even one CPU worker is a thread of its own with one intra-op thread: PyTorch's default
        # intra-op threads made one worker ~8x more CPU time under load.
        torch.set_num_threads(1)

    # -- running ----------------------------------------------------------------------------

    def run_window(self, window: torch.Tensor, gain: torch.Tensor | None = None,
                   strength: torch.Tensor | None = None) -> torch.Tensor:
        """The network on one ``3 x h x w`` window (``gain``, ``strength``: the whole image's exposure
        gain and NRM strength, :meth:`exposure`): the output clipped to ``[0, 1]``, float32, CPU."""
        if self._graph is not None:
            batch = window.detach().to("cpu", torch.float32).unsqueeze(0).contiguous().numpy()
            gain, strength = (None if v is None else v.detach().to("cpu", torch.float32).reshape(-1, 1, 1, 1).numpy()
                              for v in (gain, strength))
            return torch.from_numpy(self._graph._window(batch, gain, strength))
        with torch.inference_mode():
            batch = window.unsqueeze(0).to(self.device, self.dtype, non_blocking=True).contiguous()
            gain, strength = (None if v is None else v.to(self.device) for v in (gain, strength))
            output = self._torch.run_batch(batch, gain, strength)[0]
            return output.to("cpu", torch.float32).clamp_(0.0, 1.0)

    def submit(self, rgb: torch.Tensor, min_tiles: int = 1) -> PendingImage:
        """Start enhancing ``rgb`` (``3 x H x W`` float in ``[0, 1]``) on the worker threads; FIFO
        across calls. Each tile's core is written into one preallocated output as it finishes."""
        if rgb.dim() != 3 or rgb.shape[0] != 3:
            raise ValueError(f"expected a 3 x H x W image, got shape {tuple(rgb.shape)}")
        if self._graph is not None:
            return self._graph.submit(rgb, min_tiles)
        height, width = int(rgb.shape[1]), int(rgb.shape[2])
        output = torch.empty(3, height, width)
        gain, strength = self.exposure(rgb)

        def run(tile: Tile) -> None:
            core = tile.crop(self.run_window(rgb[:, tile.top:tile.bottom, tile.left:tile.right], gain, strength))
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
        if self._graph is not None:
            return self._graph.submit_uint8(rgb, min_tiles)
        height, width = int(rgb.shape[0]), int(rgb.shape[1])
        if rgb.flags.writeable:
            source = torch.from_numpy(rgb)
        else:  # decoded images are read-only views of Pillow's bytes; they are only read here
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                source = torch.from_numpy(rgb)
        output = np.empty((height, width, 3), np.uint8)
        target = torch.from_numpy(output)
        gain, strength = self.exposure(source.permute(2, 0, 1).to(torch.float32).div_(255.0)) \
            if self.network.exposure is not None else (None, None)  # (a whole-image float copy only with exposure on)

        def run(tile: Tile) -> None:
            window = source[tile.top:tile.bottom, tile.left:tile.right].permute(2, 0, 1).to(torch.float32).div_(255.0)
            core = tile.crop(self.run_window(window, gain, strength))
            target[tile.core_top:tile.core_bottom, tile.core_left:tile.core_right] = (
                core.mul(255.0).round_().to(torch.uint8).permute(1, 2, 0))

        tiles, futures = self._start(height, width, min_tiles, run)
        return PendingImage(output, tiles, futures)

    def exposure(self, rgb: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """The exposure gain and the NRM's strength of the whole image ``rgb`` (``3 x H x W``), each one
        per image (shape ``1``), ``None`` when off. The torch engine measures them as the network does
        (:meth:`ruas_nni.model.network.RUASForward.gain_and_strength`), the graph engines as
        :meth:`GraphEnhancer.exposure`."""
        if self.network.exposure is None:
            return None, None
        if self._graph is not None:
            image = rgb.detach().to("cpu", torch.float32).permute(1, 2, 0).numpy()
            gain, strength = self._graph.exposure(image, 1.0)
            return tuple(None if v is None else torch.from_numpy(v.reshape(1)) for v in (gain, strength))  # type: ignore[return-value]
        with torch.inference_mode():
            weight = next(self.network.parameters())  # on the device, in the dtype, the network runs in
            image = rgb.unsqueeze(0).to(weight.device, weight.dtype)
            if self.stage != "final":  # the IEM's output has no NRM to scale
                return self.network.exposure_gain(image), None
            return self.network.gain_and_strength(image)

    def _close_engines(self) -> None:
        if self._graph is not None:
            self._graph.close()
        else:
            self._torch.close()
