"""What both enhancers share (:class:`ruas_nni.inference.enhance.Enhancer` with PyTorch,
:class:`ruas_nni.inference.graph_enhancer.GraphEnhancer` without): the tile size chosen from the
memory budget and the engine, the tiles of each image, and the worker threads that run them.

PyTorch-free.
"""

from __future__ import annotations

import sys
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable

from ..base.errors import UsageError
from .files import PendingImage, _run_now, available_cores
from .tiling import DEFAULT_MEMORY_BUDGET_MB_PER_WORKER, Tile, plan_tiles

__all__ = ["STAGES", "TiledEnhancer", "check_stage"]

STAGES = ("final", "iem")
"""Which output to keep: the whole network's (IEM + NRM) or the IEM's alone."""


def check_stage(stage: str) -> None:
    if stage not in STAGES:
        raise UsageError(f"`stage` must be one of {', '.join(STAGES)}, got {stage!r}", keys=("stage",))


class TiledEnhancer:
    """An enhancer that runs its engine on exact tiles (:mod:`ruas_nni.inference.tiling`), queued on
    ``workers`` threads. Subclasses set :attr:`halo` and call :meth:`_size_tiles`, and provide
    ``submit`` (``3 x H x W`` float) and ``submit_uint8`` (``H x W x 3`` uint8)."""

    halo: int
    """The network's receptive radius: every tile's halo."""
    workers: int
    max_tile_pixels: int
    engine: str
    """The engine that runs: ``torch``, ``onnxruntime`` or ``native``."""
    _inline = False
    """Run tiles in the caller's thread (one GPU: it queues its own work) instead of worker threads."""

    def _size_tiles(self, workers: int | None, max_tile_pixels: int | None, memory_budget: float | None,
                    tile_pixels: Callable[[float, int], int], *, single: bool = False) -> None:
        """``workers`` (default: one per core; ``single``: one), and the largest tile: ``max_tile_pixels``
        (0: never tile), else ``tile_pixels(budget MB, workers)`` for ``memory_budget`` (default
        :data:`~ruas_nni.inference.tiling.DEFAULT_MEMORY_BUDGET_MB_PER_WORKER` per worker)."""
        if workers is None:
            workers = 1 if single else available_cores()
        if workers < 1:
            raise UsageError(f"`workers` must be at least 1, got {workers}", keys=("workers",))
        self.workers = 1 if single else int(workers)
        if memory_budget is not None and memory_budget <= 0:
            raise UsageError(f"`memory_budget` must be positive, got {memory_budget}", keys=("memory_budget",))
        if max_tile_pixels is None:
            max_tile_pixels = tile_pixels(memory_budget or DEFAULT_MEMORY_BUDGET_MB_PER_WORKER * self.workers,
                                          self.workers)
        self.max_tile_pixels = int(max_tile_pixels) if max_tile_pixels > 0 else sys.maxsize
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    _worker_started: Callable[[], None] | None = None
    """Runs once in every worker thread as it starts (a static method: the threads hold no reference
    to the enhancer, so one that is dropped without :meth:`close` is collected and stops them)."""

    def _pool_or_none(self) -> ThreadPoolExecutor | None:
        if self._inline:
            return None
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="ruas-enhance",
                                                initializer=self._worker_started)
            return self._pool

    def plan(self, height: int, width: int, min_tiles: int = 1) -> list[Tile]:
        """The tiles an image of this size is cut into."""
        return plan_tiles(height, width, self.halo, self.max_tile_pixels, min_tiles)

    def _start(self, height: int, width: int, min_tiles: int, run: Callable[[Tile], None]) -> tuple[list[Tile], list[Future]]:
        tiles = self.plan(height, width, min_tiles)
        pool = self._pool_or_none()
        if pool is None:
            return tiles, [_run_now(run, tile) for tile in tiles]
        return tiles, [pool.submit(run, tile) for tile in tiles]

    def submit(self, rgb, min_tiles: int = 1) -> PendingImage:  # pragma: no cover - provided by subclasses
        raise NotImplementedError

    def __call__(self, rgb):
        """The enhanced image (``3 x H x W`` float in ``[0, 1]``), clipped to ``[0, 1]``, on the CPU; the
        tiles of one image in parallel."""
        return self.submit(rgb, min_tiles=self.workers).result()

    def _close_engines(self) -> None:
        """Close the engines (after the worker threads have stopped)."""

    def close(self) -> None:
        """Stop the worker threads (waits for running tiles) and close the engines; the enhancer may
        be used again (new threads start)."""
        with self._lock:
            if self._pool is not None:
                self._pool.shutdown(wait=True, cancel_futures=True)
                self._pool = None
            self._close_engines()

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:  # pragma: no cover - best effort
        pool = getattr(self, "_pool", None)
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
