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

from .model.checkpoint import Checkpoint, CheckpointError, load_checkpoint, load_nrm_init, save_checkpoint
from .model.export import NetworkOptions, export
from .model.genotype import PAPER_GENOTYPE, Genotype
from .model.network import DistillationCell, Enhancement, IlluminationEstimation, NoiseRemoval, RUASNet
from .model.ops import OPERATION_NAMES

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
