"""ruas-nni: RUAS (CVPR 2021) low-light enhancement on Microsoft NNI.

The inference side (this package's top level) is plain PyTorch and never imports NNI::

    import ruas_nni
    net = ruas_nni.export({"iem": [...7 op names...], "nrm": [...]})
    model = ruas_nni.load_checkpoint("lol.pt").build()
    enhanced = model(low_light_batch)           # B x 3 x H x W in [0, 1]

The NNI search space is :class:`search_spaces.RUASSpace`; the cooperative search strategy lives in
:mod:`strategies`.

The package is in layers, one folder each, every layer importing only the ones before it:
:mod:`~ruas_nni.base`, :mod:`~ruas_nni.model` (the names below), :mod:`~ruas_nni.inference`,
:mod:`~ruas_nni.training`, (``search_spaces``, ``strategies``), :mod:`~ruas_nni.search`,
:mod:`~ruas_nni.experiments`, :mod:`~ruas_nni.cli`.
"""

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .model.checkpoint import Checkpoint, CheckpointError, load_checkpoint, load_nrm_init, save_checkpoint
    from .model.export import NetworkOptions, export
    from .model.genotype import PAPER_GENOTYPE, Genotype
    from .model.network import DistillationCell, Enhancement, IlluminationEstimation, NoiseRemoval, RUASNet
    from .model.ops import OPERATION_NAMES

# The model layer's names are imported on first use (PEP 562), not with the package: they need
# PyTorch, whose import costs about 2 CPU seconds, and `ruas-nni enhance` with a cached ONNX graph
# (ruas_nni.inference.graph_cache) runs without it.
_LAZY = {
    "Checkpoint": "checkpoint", "CheckpointError": "checkpoint", "load_checkpoint": "checkpoint",
    "load_nrm_init": "checkpoint", "save_checkpoint": "checkpoint",
    "NetworkOptions": "export", "export": "export",
    "PAPER_GENOTYPE": "genotype", "Genotype": "genotype",
    "DistillationCell": "network", "Enhancement": "network", "IlluminationEstimation": "network",
    "NoiseRemoval": "network", "RUASNet": "network",
    "OPERATION_NAMES": "ops",
}


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f".model.{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__version__ = "0.1.0"

__all__ = [
    "Checkpoint",
    "CheckpointError",
    "DistillationCell",
    "Enhancement",
    "Genotype",
    "IlluminationEstimation",
    "NetworkOptions",
    "NoiseRemoval",
    "OPERATION_NAMES",
    "PAPER_GENOTYPE",
    "RUASNet",
    "export",
    "load_checkpoint",
    "load_nrm_init",
    "save_checkpoint",
    "__version__",
]
