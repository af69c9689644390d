"""Exact tiling: run a network on overlapping tiles and keep only what each tile computes exactly.

An output pixel of a convolutional network depends only on input pixels within its *receptive
radius* ``r`` (:meth:`ruas_nni.model.network.RUASNet.receptive_radius`). A tile that extends its core
region by a halo of at least ``r`` pixels on every side that is not an image border therefore
computes the core exactly as the whole image would: the zero padding at the tile's own borders
reaches at most ``r`` pixels inward, into the halo that is thrown away. Borders of the image stay
borders of the tile, so the padding there is the same as for the whole image.

That bounds memory (a 3840x2160 image runs as a few tiles of at most ``max_tile_pixels``) and lets
several threads work on one image. The outputs agree with the untiled run up to the order of
floating-point sums inside a convolution library, which does not depend on the tile size for the
kernels used here (``tests/test_tiling.py`` checks the difference is 0 or a few 1e-7).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Iterable

if TYPE_CHECKING:  # torch-free at run time: the cached-graph enhance path imports this without torch
    import torch

__all__ = ["Tile", "plan_tiles", "run_tiled", "DEFAULT_MAX_TILE_PIXELS"]

DEFAULT_MAX_TILE_PIXELS = 330_000
"""Pixels per tile, halo included: a 640x480 photo is one tile. About 80 MB of activations per tile
for the paper genotype in float32, and small enough that no intermediate tensor (at most 24 channels)
exceeds glibc's largest heap allocation (32 MB), so memory is recycled instead of being mapped and
zeroed afresh for every tensor (measured in ``docs/speed.md``)."""


@dataclass(frozen=True)
class Tile:
    """One tile: the input window ``[top:bottom, left:right]`` (core plus halo) and its core."""

    top: int
    bottom: int
    left: int
    right: int
    core_top: int
    core_bottom: int
    core_left: int
    core_right: int

    @property
    def pixels(self) -> int:
        return (self.bottom - self.top) * (self.right - self.left)

    def crop(self, output: torch.Tensor) -> torch.Tensor:
        """The core of a tile's output (``... x H_tile x W_tile``)."""
        return output[..., self.core_top - self.top:self.core_bottom - self.top,
                      self.core_left - self.left:self.core_right - self.left]


_PAPER_MAX_CHANNELS = 6

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

def tile_pixels_for_budget(budget_mb: float, workers: int, max_channels: int = _PAPER_MAX_CHANNELS,
                           bytes_per_pixel: int = TILE_BYTES_PER_PIXEL) -> int:
    """Largest tile (pixels, halo included) such that ``workers`` tiles in flight stay within
    ``budget_mb`` MB, for a network whose widest cell has ``max_channels`` channels and an engine
    that needs ``bytes_per_pixel`` for the paper genotype; never more than
    :data:`~ruas_nni.tiling.DEFAULT_MAX_TILE_PIXELS` (larger tensors would leave glibc's heap)."""
    per_pixel = bytes_per_pixel * max(1.0, max_channels / _PAPER_MAX_CHANNELS)
    pixels = int(budget_mb * 2**20 / (max(1, workers) * per_pixel))
    return max(1, min(DEFAULT_MAX_TILE_PIXELS, pixels))


def _splits(length: int, parts: int) -> list[tuple[int, int]]:
    """``parts`` contiguous ranges covering ``[0, length)`` with sizes differing by at most 1."""
    edges = [round(i * length / parts) for i in range(parts + 1)]
    return [(edges[i], edges[i + 1]) for i in range(parts) if edges[i + 1] > edges[i]]


def plan_tiles(height: int, width: int, halo: int, max_tile_pixels: int = DEFAULT_MAX_TILE_PIXELS,
               min_tiles: int = 1) -> list[Tile]:
    """Cut a ``height x width`` image into tiles of at most about ``max_tile_pixels`` (halo
    included), with a halo of ``halo`` pixels on every inner side.

    Full-width strips are preferred (a halo on two sides instead of four) while the image is
    narrow enough; wider images are cut into columns too. ``min_tiles`` asks for at least that many
    tiles (for parallel work on one image) where the image has room for them (each core at least
    ``4 * halo`` rows). One tile covering the whole image, without halo, is returned when it fits.
    """
    if height < 1 or width < 1:
        raise ValueError(f"image size must be positive, got {height}x{width}")
    if halo < 0:
        raise ValueError(f"halo must be >= 0, got {halo}")
    max_tile_pixels = max(int(max_tile_pixels), (2 * halo + 16) ** 2)
    if height * width <= max_tile_pixels and min_tiles <= 1:
        return [Tile(0, height, 0, width, 0, height, 0, width)]
    # Columns: a strip's halo costs 2*halo*width pixels, a square tile's about 4*halo*side; strips
    # win while the width is below about twice the side of a square tile.
    side = math.sqrt(max_tile_pixels)
    columns = max(1, math.ceil(width / (2 * side)))
    column_width = math.ceil(width / columns) + (2 * halo if columns > 1 else 0)
    rows_per_tile = max(1, max_tile_pixels // column_width - 2 * halo)
    rows = max(1, math.ceil(height / rows_per_tile))
    wanted_rows = math.ceil(min_tiles / columns)
    if rows < wanted_rows:
        rows = max(rows, min(wanted_rows, height // max(1, 4 * halo)))
    tiles = []
    for core_top, core_bottom in _splits(height, rows):
        for core_left, core_right in _splits(width, columns):
            tiles.append(Tile(max(0, core_top - halo), min(height, core_bottom + halo),
                              max(0, core_left - halo), min(width, core_right + halo),
                              core_top, core_bottom, core_left, core_right))
    return tiles


def run_tiled(network: Callable[[torch.Tensor], torch.Tensor], image: torch.Tensor, tiles: Iterable[Tile],
              out: torch.Tensor | None = None,
              map_tiles: Callable[[Callable[[Tile], torch.Tensor], list[Tile]], Iterable[torch.Tensor]] | None = None,
              ) -> torch.Tensor:
    """Run ``network`` (``B x C x h x w`` -> ``B x C' x h x w``) on each tile of ``image`` and
    assemble the cores into ``out`` (allocated like the first tile's output when ``None``).

    ``map_tiles(function, tiles)`` may run tiles in parallel (e.g. ``executor.map``); the default
    runs them one after the other.
    """
    tiles = list(tiles)

    def run_one(tile: Tile) -> torch.Tensor:
        window = image[..., tile.top:tile.bottom, tile.left:tile.right]
        return tile.crop(network(window))

    results = (map_tiles or map)(run_one, tiles)
    for tile, core in zip(tiles, results):
        if out is None:
            shape = (*core.shape[:-2], image.shape[-2], image.shape[-1])
            out = core.new_empty(shape)
        out[..., tile.core_top:tile.core_bottom, tile.core_left:tile.core_right] = core
    assert out is not None
    return out
