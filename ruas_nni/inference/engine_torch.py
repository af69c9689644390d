"""The ``torch`` engine: the network, folded (:mod:`ruas_nni.inference.fold`) or as trained, in PyTorch on
the CPU or a GPU; optionally wrapped in ``torch.compile``, and on CUDA replayed as one CUDA graph per
input shape."""

from __future__ import annotations

import logging
from typing import Callable

import torch
from torch import nn

from .tiling import TILE_BYTES_PER_PIXEL, tile_pixels_for_budget

__all__ = ["StageOutput", "TorchEngine"]

log = logging.getLogger(__name__)


class StageOutput(nn.Module):
    """The unfolded network returning one stage's output (for ``fold=False``)."""

    def __init__(self, network: nn.Module, stage: str) -> None:
        super().__init__()
        self.network = network
        self.stage = stage

    def forward(self, y: torch.Tensor, gain: torch.Tensor | None = None,
                strength: torch.Tensor | None = None) -> torch.Tensor:
        if self.stage != "final":  # the NRM's input: neither the NRM nor its strength is computed
            return self.network.enhance_parts(y, gain)[0]
        return self.network.enhance(y, gain, strength).final

    def receptive_radius(self) -> int:
        return self.network.receptive_radius(self.stage)


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


def _compiled(model: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    try:
        return torch.compile(model, dynamic=None)
    except Exception as exc:  # noqa: BLE001 - compiling is optional: say why and run eagerly
        log.warning("torch.compile is not available here (%s); running eagerly", exc)
        return model


class TorchEngine:
    """An :class:`~ruas_nni.inference.engine.Engine` on ``model`` (already on its device, in its dtype):
    ``compile`` wraps it in ``torch.compile``; ``cuda_graphs`` replays one CUDA graph per input shape
    (for a network without exposure normalisation: a graph replays one input, the gain is a second)."""

    name = "torch"

    def __init__(self, model: nn.Module, *, compile: bool = False, cuda_graphs: bool = False) -> None:
        self.model = model
        forward: Callable[..., torch.Tensor] = _compiled(model) if compile else model
        self.forward = _CudaGraphs(forward) if cuda_graphs else forward
        """What runs a batch: the model, compiled or replayed as CUDA graphs."""

    def run_batch(self, image: torch.Tensor, gain: torch.Tensor | None = None,
                  strength: torch.Tensor | None = None) -> torch.Tensor:
        if strength is not None:
            return self.forward(image, gain, strength)
        return self.forward(image) if gain is None else self.forward(image, gain)

    def tile_pixels(self, budget_mb: float, workers: int, max_channels: int) -> int:
        return tile_pixels_for_budget(budget_mb, workers, max_channels, TILE_BYTES_PER_PIXEL)

    def close(self) -> None:
        if isinstance(self.forward, _CudaGraphs):
            self.forward.graphs.clear()  # the captured graphs and their static buffers; captured again on use
