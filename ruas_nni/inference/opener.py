""":func:`open_enhancer`: the enhancer for a checkpoint and a set of options, as ``ruas-nni enhance``,
``ruas-nni benchmark`` and the Python API get it.

PyTorch-free at import: with a cached graph the enhancer it returns needs neither PyTorch nor the
checkpoint (:class:`~ruas_nni.inference.graph_enhancer.GraphEnhancer`); it imports
:mod:`ruas_nni.inference.enhance` (PyTorch) only when the general
:class:`~ruas_nni.inference.enhance.Enhancer` is needed.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from ..base.devices import may_use_cuda
from ..base.errors import UsageError
from .engine import check_engine, choose_engine
from .files import default_checkpoint_path
from .graph_cache import graph_for
from .graph_enhancer import GraphEnhancer
from .tiled import TiledEnhancer, check_stage

if TYPE_CHECKING:
    import torch

    from ..model.checkpoint import Checkpoint

__all__ = ["open_enhancer"]


def open_enhancer(checkpoint: Checkpoint | str | os.PathLike[str] | None = None, engine: str = "auto", *,
                  stage: str = "final", device: str | torch.device = "auto", fold: bool = True, half: bool = False,
                  compile: bool = False, cuda_graphs: bool = True, workers: int | None = None,
                  max_tile_pixels: int | None = None, layout: str = "nchw", memory_budget: float | None = None,
                  exposure: float | None = None, exposure_gamma: float | None = None,
                  use_cache: bool = True) -> TiledEnhancer:
    """The enhancer of ``checkpoint`` (a file; ``None``: the shipped default model; or a loaded
    :class:`~ruas_nni.model.checkpoint.Checkpoint`) with ``engine`` (:data:`~ruas_nni.inference.engine.ENGINES`)
    and the options of :class:`~ruas_nni.inference.enhance.Enhancer`; ``exposure`` and
    ``exposure_gamma`` override the checkpoint's exposure normalisation; ``device``: ``auto``, ``cpu``,
    ``cuda`` or a ``torch.device``.

    A checkpoint file run by a graph engine (the folded network on CPU, in its plain layout, not
    compiled; ``engine`` ``auto`` picks one there) gets a :class:`GraphEnhancer` on its folded graph
    from the cache (:func:`ruas_nni.inference.graph_cache.graph_for`: written on a miss, rewritten when
    a cached one does not load; ``use_cache=False``: built in memory), which imports no PyTorch when
    the graph was cached. ``device`` ``auto`` takes that path only where no GPU driver is installed
    (else only PyTorch can say whether CUDA is usable). Everything else gets an ``Enhancer``."""
    check_engine(engine)
    check_stage(stage)
    graph_possible = (fold and not compile and not half and layout == "nchw" and engine != "torch"
                      and not may_use_cuda(str(device)))
    if graph_possible and (checkpoint is None or isinstance(checkpoint, (str, os.PathLike))):
        path = Path(checkpoint) if checkpoint is not None else default_checkpoint_path()
        if path is not None and path.is_file():  # else the general path says why
            enhancer = _cached_graph_enhancer(path, engine, stage, exposure, exposure_gamma, use_cache,
                                              dict(workers=workers, max_tile_pixels=max_tile_pixels,
                                                   memory_budget=memory_budget))
            if enhancer is not None:
                return enhancer
    from .enhance import Enhancer, load_model, resolve_device

    if isinstance(device, str):
        device = resolve_device(device)
    if checkpoint is None or isinstance(checkpoint, (str, os.PathLike)):
        checkpoint, _ = load_model(checkpoint)
    if exposure is not None or exposure_gamma is not None:
        checkpoint = checkpoint.with_exposure(exposure, exposure_gamma)
    return Enhancer(checkpoint, stage=stage, device=device, fold=fold, half=half, compile=compile,
                    cuda_graphs=cuda_graphs, workers=workers, max_tile_pixels=max_tile_pixels, layout=layout,
                    memory_budget=memory_budget, engine=engine)


def _cached_graph_enhancer(path: Path, engine: str, stage: str, exposure: float | None,
                           exposure_gamma: float | None, use_cache: bool, options: dict) -> GraphEnhancer | None:
    """The :class:`GraphEnhancer` on ``path``'s cached graph; ``None`` when the checkpoint cannot be read
    (the general path says why)."""
    chosen = choose_engine(engine, use_cache=use_cache)

    def open_graph(graph) -> GraphEnhancer:
        return GraphEnhancer(graph, engine=chosen, fall_back=engine == "auto", **options)

    try:
        graph, cached = graph_for(path, stage, exposure, exposure_gamma, use_cache=use_cache)
    except OSError:
        return None
    try:
        return open_graph(graph)
    except UsageError:
        raise
    except Exception:  # noqa: BLE001 - a cached graph that cannot be loaded: write it again
        if not cached:
            raise
    graph, _ = graph_for(path, stage, exposure, exposure_gamma, refresh=True)
    return open_graph(graph)
