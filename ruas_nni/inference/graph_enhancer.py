"""The enhancer of the graph engines (``native``, ``onnxruntime``) on a folded graph alone: NumPy, no
PyTorch, so that ``ruas-nni enhance`` with a cached graph (:mod:`ruas_nni.inference.graph_cache`) starts
without importing it. :class:`ruas_nni.inference.enhance.Enhancer` runs these engines through it too.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from .engine import open_graph_engines
from .files import PendingImage
from .tiled import TiledEnhancer
from .tiling import Tile

if TYPE_CHECKING:
    import torch

    from .graph import CachedGraph

__all__ = ["GraphEnhancer"]


def _block_sums(planes: np.ndarray, factor: int) -> np.ndarray:
    """The exact sums of the ``factor x factor`` blocks of ``planes`` (``3 x H x W``, any strides, both
    sides multiples of ``factor``): float64 for float images, uint64 for 8- and 16-bit ones. Strided
    adds of whole rows, then of whole columns (8 times faster than one reduction over a 5-d view), in
    the order the image lies in memory: 0.4 ms at 600x400 for an 8-bit image, 0.6 ms for a float one."""
    total = np.float64 if planes.dtype.kind == "f" else np.uint64
    rows = planes[:, 0::factor].astype(total)
    for offset in range(1, factor):
        rows += planes[:, offset::factor]
    sums = rows[:, :, 0::factor].copy()
    for offset in range(1, factor):
        sums += rows[:, :, offset::factor]
    return sums


class GraphEnhancer(TiledEnhancer):
    """The CPU enhancer with the ONNX Runtime or the native engine, on a folded graph alone (NumPy, no
    PyTorch): exact tiles on worker threads, 8-bit images converted tile by tile with float32
    arithmetic (``/ 255``, clip, ``* 255``, round half to even), as
    :func:`ruas_nni.inference.files.enhance_files` needs.

    ``engine``: ``onnxruntime`` or ``native`` (:func:`ruas_nni.inference.engine.open_graph_engines`:
    a native engine that cannot be built here is a usage error, or with ``fall_back`` a warning and
    ONNX Runtime). The exposure gain's small IEM runs in the same engine."""

    def __init__(self, graph: CachedGraph, *, engine: str = "onnxruntime", workers: int | None = None,
                 max_tile_pixels: int | None = None, memory_budget: float | None = None,
                 fall_back: bool = False) -> None:
        self._engine, self._gain_engine = open_graph_engines(graph, engine, fall_back=fall_back)
        self.engine = self._engine.name
        self.graph = graph
        self.halo = graph.halo
        self.stage = graph.stage
        self._size_tiles(workers, max_tile_pixels, memory_budget,
                         lambda budget, count: self._engine.tile_pixels(budget, count, graph.max_channels))

    def _window(self, batch: np.ndarray, gain: np.ndarray | None = None,
                strength: np.ndarray | None = None) -> np.ndarray:
        """The network on ``1 x 3 x h x w`` float32, clipped to ``[0, 1]``: ``3 x h x w``."""
        output = self._engine.run_batch(batch, gain, strength)[0]
        return np.clip(output, 0.0, 1.0, out=output)

    def exposure(self, rgb: np.ndarray, scale: float) -> tuple[np.ndarray | None, np.ndarray | None]:
        """``(gain, strength)`` of a whole ``H x W x 3`` image whose values divided by ``scale`` are in
        ``[0, 1]``, each float32 ``1 x 1 x 1 x 1`` (as
        :func:`ruas_nni.model.network.exposure_and_strength`): the gain ``None`` when exposure
        normalisation is off, the NRM's strength ``None`` without ``denoise_sigma``."""
        if self._gain_engine is None:
            return None, None
        gain, lift = self._gain(rgb, scale)
        if self.graph.denoise_sigma is None:
            return gain, None
        from ..model.strength import noise_sigma, nrm_strength

        strength = nrm_strength(noise_sigma(rgb, scale), lift, self.graph.denoise_sigma)
        return gain, np.full((1, 1, 1, 1), strength, np.float32)

    def _gain(self, rgb: np.ndarray, scale: float) -> tuple[np.ndarray, float]:
        """The exposure gain of the whole image (as :func:`ruas_nni.model.network.exposure_gain`: the IEM
        on the ``f x f`` block means), float32 ``1 x 1 x 1 x 1``, and its lift (NaN for the older policy
        unless the graph has ``denoise_sigma``)."""
        assert self._gain_engine is not None
        from ..model.tone import ToneOptions, clip_policy_mean, shoulder_gain_and_mean, small_copy_factor

        height, width = int(rgb.shape[0]), int(rgb.shape[1])
        graph = self.graph
        factor = small_copy_factor(height, width, graph.exposure_side)
        rows, columns = height // factor, width // factor
        sums = _block_sums(rgb[:rows * factor, :columns * factor].transpose(2, 0, 1), factor)
        small = (sums / (scale * factor * factor)).astype(np.float32)[None]
        u = self._gain_engine.run_batch(small).astype(np.float64)

        y_mean = float(small.astype(np.float64).mean())
        if graph.tone is not None:  # the shoulder policy: u is the ratio y / t_K
            solved, output = shoulder_gain_and_mean(u[0], y_mean, float(graph.exposure), graph.exposure_gamma,
                                                    ToneOptions.from_dict(graph.tone))
            gain = np.float32(solved)
        else:
            powered = np.maximum(u, 0.0) ** graph.exposure_gamma if graph.exposure_gamma != 1.0 else u
            gain = np.float32(graph.exposure) / np.float32(max(float(powered.mean()), graph.gain_floor))
            output = clip_policy_mean(u[0], float(gain), graph.exposure_gamma) if graph.denoise_sigma is not None \
                else math.nan
        return np.full((1, 1, 1, 1), gain, np.float32), output / max(y_mean, 1e-12)

    def submit_uint8(self, rgb: np.ndarray, min_tiles: int = 1) -> PendingImage:
        """As :meth:`ruas_nni.inference.enhance.Enhancer.submit_uint8`: ``H x W x 3`` uint8 in and out."""
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise ValueError(f"expected an H x W x 3 uint8 image, got {rgb.dtype} {tuple(rgb.shape)}")
        height, width = int(rgb.shape[0]), int(rgb.shape[1])
        output = np.empty((height, width, 3), np.uint8)
        scale = np.float32(255.0)
        gain, strength = self.exposure(rgb, 255.0)  # one per image: every tile uses them, so tiled == untiled

        def run(tile: Tile) -> None:
            window = rgb[tile.top:tile.bottom, tile.left:tile.right]
            batch = np.ascontiguousarray(window.transpose(2, 0, 1), dtype=np.float32)[None]
            batch /= scale  # float32 division, as the torch path's div_(255.0)
            core = tile.crop(self._window(batch, gain, strength))
            core *= scale
            output[tile.core_top:tile.core_bottom, tile.core_left:tile.core_right] = \
                np.rint(core).astype(np.uint8).transpose(1, 2, 0)

        tiles, futures = self._start(height, width, min_tiles, run)
        return PendingImage(output, tiles, futures)

    def submit(self, rgb: torch.Tensor, min_tiles: int = 1) -> PendingImage:
        """As :meth:`ruas_nni.inference.enhance.Enhancer.submit`: ``3 x H x W`` float in ``[0, 1]`` (a
        16-bit or float input; reading one has imported PyTorch already)."""
        import torch

        if rgb.dim() != 3 or rgb.shape[0] != 3:
            raise ValueError(f"expected a 3 x H x W image, got shape {tuple(rgb.shape)}")
        source = rgb.detach().to("cpu", torch.float32).contiguous().numpy()
        height, width = int(source.shape[1]), int(source.shape[2])
        output = np.empty((3, height, width), np.float32)
        gain, strength = self.exposure(source.transpose(1, 2, 0), 1.0)

        def run(tile: Tile) -> None:
            batch = np.ascontiguousarray(source[:, tile.top:tile.bottom, tile.left:tile.right])[None]
            output[:, tile.core_top:tile.core_bottom, tile.core_left:tile.core_right] = \
                tile.crop(self._window(batch, gain, strength))

        tiles, futures = self._start(height, width, min_tiles, run)
        return PendingImage(torch.from_numpy(output), tiles, futures)

    def _close_engines(self) -> None:
        self._engine.close()
        if self._gain_engine is not None:
            self._gain_engine.close()
