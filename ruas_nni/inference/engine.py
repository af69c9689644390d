"""The inference engines behind one interface: which engine runs the network, and opening it.

Three engines run a checkpoint's network on a batch of images (``N x 3 x H x W`` in ``[0, 1]``, the
chosen stage's output, not clipped):

``torch``
    the network (folded or as trained) in PyTorch, on CPU or CUDA
    (:class:`ruas_nni.inference.engine_torch.TorchEngine`);
``onnxruntime``
    the folded network's ONNX graph in ONNX Runtime
    (:class:`ruas_nni.inference.engine_onnxruntime.OnnxRuntimeEngine`);
``native``
    the folded network as generated C, compiled once with the system's C compiler
    (:class:`ruas_nni.inference.native.NativeSession`).

Each is opened by its constructor, runs a batch with :meth:`Engine.run_batch` and is closed with
:meth:`Engine.close`. The two *graph engines* run a :class:`~ruas_nni.inference.graph.CachedGraph` and
need neither PyTorch nor the checkpoint: :func:`open_graph_engines` opens them. Which engine runs
(:func:`choose_engine`) and the one fallback (the native engine that cannot be built here gives way to
ONNX Runtime, said once) are decided here and nowhere else; :func:`ruas_nni.inference.opener.open_enhancer`
puts an enhancer around them.

Imports neither PyTorch nor ONNX Runtime at module level.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Protocol

import numpy as np

from ..base.errors import UsageError
from .cache_folder import cache_disabled
from .native import NativeSession, NativeUnavailable, compiler, library_folder

if TYPE_CHECKING:
    from .graph import CachedGraph

__all__ = ["ENGINES", "GRAPH_ENGINES", "Engine", "auto_engine", "check_engine", "choose_engine", "open_graph_engines"]

log = logging.getLogger(__name__)

ENGINES = ("auto", "torch", "onnxruntime", "native")
"""CPU engines: ``torch`` runs the folded network in PyTorch; ``onnxruntime`` runs the same folded
graph (:func:`ruas_nni.inference.onnx_export.folded_onnx_bytes`) in ONNX Runtime, measured about 20 % less
CPU time and 40 % less memory per pixel on 2 cores; ``native`` runs it as C generated for the
architecture and compiled once with the system's C compiler (:mod:`ruas_nni.inference.native`), about a
third of ONNX Runtime's time (``docs/speed.md``); ``auto`` picks ``native`` on CPU when a C compiler is
found and the cache folder is on, else ``onnxruntime`` (``native`` and ``onnxruntime`` need the folded
network on CPU; elsewhere ``auto`` is ``torch``)."""

GRAPH_ENGINES = ("onnxruntime", "native")
"""The engines that run the folded graph without PyTorch."""


class Engine(Protocol):
    """One opened engine: the network of one checkpoint and stage, ready to run batches. Safe to run
    from several worker threads at once."""

    name: str
    """``torch``, ``onnxruntime`` or ``native``."""

    def run_batch(self, image, gain=None, strength=None):
        """The network's output for ``image`` (``N x 3 x H x W``, float32; a NumPy array for the graph
        engines, a tensor on the engine's device for ``torch``), not clipped; ``gain`` (``N x 1 x 1 x 1``
        or ``N``): the whole images' exposure gains, for a network with exposure normalisation;
        ``strength`` (the same shape): the NRM's strengths, for a network with ``denoise_sigma``."""
        ...

    def tile_pixels(self, budget_mb: float, workers: int, max_channels: int) -> int:
        """The largest tile (pixels, halo included) such that ``workers`` tiles in flight stay within
        ``budget_mb`` MB (:func:`ruas_nni.inference.tiling.tile_pixels_for_budget` with this engine's
        memory per pixel); ``max_channels``: the network's widest cell."""
        ...

    def close(self) -> None:
        """Release what runs left behind (captured CUDA graphs, working buffers); the engine may run again
        afterwards (an enhancer closes its engine when it stops its worker threads)."""
        ...


def check_engine(engine: str) -> None:
    if engine not in ENGINES:
        raise UsageError(f"`engine` must be one of {', '.join(ENGINES)}, got {engine!r}", keys=("engine",))


def auto_engine(use_cache: bool = True) -> str:
    """The graph engine ``auto`` picks: ``native`` when a C compiler is found and the cache folder is on
    (``use_cache`` and no ``RUAS_NNI_NO_CACHE``: the compiled code is kept there), else ``onnxruntime``."""
    return "native" if compiler() is not None and use_cache and not cache_disabled() else "onnxruntime"


def choose_engine(engine: str, *, graph: bool = True, use_cache: bool = True) -> str:
    """The engine that runs: ``engine`` itself, or for ``auto`` :func:`auto_engine` where a graph engine
    may run (``graph``: the folded network on CPU, in its plain layout, not compiled) and ``torch``
    elsewhere."""
    check_engine(engine)
    if engine != "auto":
        return engine
    return auto_engine(use_cache) if graph else "torch"


def open_graph_engines(graph: CachedGraph, engine: str, *, fall_back: bool = False) -> tuple[Engine, Engine | None]:
    """``(main, gain)``: ``graph``'s main graph in ``engine`` (``native`` or ``onnxruntime``) and, with
    exposure normalisation, the raw IEM that the gain is measured on (else ``None``), in the same engine.

    The native engine that cannot be built here (no C compiler, code that does not compile or load):
    with ``fall_back`` (``engine`` was chosen, not asked for) say why, once, and open ONNX Runtime;
    without, that is a usage error."""
    if engine == "native":
        try:
            return _open_native(graph)
        except NativeUnavailable as exc:
            if not fall_back:
                raise UsageError(f"`engine` native: {exc}", keys=("engine",)) from None
            log.warning("the native engine is not available here (%s); using onnxruntime", exc)
    elif engine != "onnxruntime":
        raise UsageError(f"`engine` must be onnxruntime or native, got {engine!r}", keys=("engine",))
    from .engine_onnxruntime import OnnxRuntimeEngine  # ONNX Runtime is imported only when it runs

    return OnnxRuntimeEngine(graph.onnx), OnnxRuntimeEngine(graph.gain_onnx) if graph.gain_onnx is not None else None


def _open_native(graph: CachedGraph) -> tuple[Engine, Engine | None]:
    if graph.native_source is None or graph.native_params is None:
        raise ValueError("open_graph_engines: this graph has no native code")
    main = NativeSession(graph.native_source, np.frombuffer(graph.native_params, np.float32), library_folder())
    if graph.gain_native_source is not None and graph.gain_native_params is not None:
        return main, NativeSession(graph.gain_native_source, np.frombuffer(graph.gain_native_params, np.float32),
                                   library_folder())
    if graph.gain_onnx is not None:
        from .engine_onnxruntime import OnnxRuntimeEngine

        return main, OnnxRuntimeEngine(graph.gain_onnx)
    return main, None
