"""The folded network as the graph engines run it: :class:`CachedGraph` (ONNX bytes and C source, with
what tiling and the exposure gain need), written by :func:`build_graph`.

Imports PyTorch only inside :func:`build_graph` and :func:`max_channels`: a graph read from the cache
(:mod:`ruas_nni.inference.graph_cache`) runs without it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import nn

    from ..model.checkpoint import Checkpoint

__all__ = ["CachedGraph", "build_graph", "max_channels"]


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
    """The network option ``exposure_side`` and :data:`~ruas_nni.model.network.GAIN_FLOOR`, stored
    so that the gain is computed without importing the model layer (PyTorch)."""
    gain_floor: float = 1e-3
    tone: dict | None = None
    """With the shoulder policy: its options (:class:`ruas_nni.model.tone.ToneOptions` as a mapping)."""
    denoise_sigma: float | None = None
    """With the network option ``denoise_sigma`` (:mod:`ruas_nni.model.strength`): the main graph takes
    the NRM's strength as its third input ``strength``."""
    native_source: str | None = None
    """The main graph as C (:func:`ruas_nni.inference.native.native_source`), for the ``native`` engine."""
    native_params: bytes | None = None
    """Its weights and biases, float32 bytes in the order the C reads them."""
    gain_native_source: str | None = None
    """With exposure normalisation: the raw IEM as C, for the gain on the ``native`` engine."""
    gain_native_params: bytes | None = None


def max_channels(network: nn.Module) -> int:
    """The widest convolution's output channels (what tile memory scales with)."""
    from torch import nn

    from .tiling import _PAPER_MAX_CHANNELS

    channels = [int(m.out_channels) for m in network.modules() if isinstance(m, nn.Conv2d)]
    return max(channels, default=_PAPER_MAX_CHANNELS)


def build_graph(checkpoint: Checkpoint, stage: str, network: nn.Module | None = None) -> CachedGraph:
    """The folded graph of ``checkpoint`` at ``stage`` (imports PyTorch); with exposure normalisation,
    also the raw IEM's graph for the gain, and the main graph takes the gain as a second input.
    ``network``: ``checkpoint.build()``, where the caller has built it already."""
    from ..model.network import GAIN_FLOOR
    from .fold import FoldedRUAS
    from .native import native_source
    from .onnx_export import folded_onnx_bytes

    network = checkpoint.build() if network is None else network
    model = FoldedRUAS(network, stage).eval()
    radius, channels = int(model.receptive_radius()), max_channels(network)
    gain_input = network.exposure is not None
    source, params = native_source(model, gain_input=gain_input)
    native = dict(native_source=source, native_params=params.tobytes())
    if not gain_input:
        return CachedGraph(folded_onnx_bytes(model), radius, channels, stage, **native)
    gain_iem = FoldedRUAS(network, "iem").eval()  # the writers leave its output unscaled: the raw IEM
    gain_source, gain_params = native_source(gain_iem)
    return CachedGraph(folded_onnx_bytes(model, gain_input=True), radius, channels, stage,
                       folded_onnx_bytes(gain_iem), float(network.exposure), float(network.exposure_gamma),
                       network.exposure_side, GAIN_FLOOR, network.tone.to_dict() if network.tone is not None else None,
                       model.denoise_sigma, **native, gain_native_source=gain_source,
                       gain_native_params=gain_params.tobytes())
