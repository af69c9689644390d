"""Export a checkpoint's network to ONNX, with dynamic batch, height and width.

The exported graph is the folded inference network (:mod:`ruas_nni.inference.fold`; ``fold=False`` exports the
network exactly as trained). Input ``image``: float32 ``N x 3 x H x W`` RGB in ``[0, 1]``, any
``H, W >= 1``; output ``enhanced``: same shape, the output of the chosen stage, *not clipped* (like
:class:`ruas_nni.model.network.RUASNet`: clip to ``[0, 1]`` before saving). The receptive radius is stored
in the model's metadata (``receptive_radius``) for callers that tile large images.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import torch
from torch import nn

from ..base.atomic import atomic_write
from ..base.errors import UsageError
from ..model.checkpoint import Checkpoint
from .enhance import _StageOutput
from .fold import FoldedRUAS

__all__ = ["export_onnx", "DEFAULT_OPSET"]

DEFAULT_OPSET = 17


def _inference_module(checkpoint: Checkpoint, stage: str, fold: bool) -> nn.Module:
    network = checkpoint.build()
    if fold:
        return FoldedRUAS(network, stage, functional=True).eval()
    return _StageOutput(network, stage).eval()


def export_onnx(checkpoint: Checkpoint, path: str | os.PathLike[str], *, stage: str = "final", fold: bool = True,
                opset: int = DEFAULT_OPSET, sample_size: tuple[int, int] = (64, 96)) -> Path:
    """Write ``checkpoint``'s network as an ONNX model to ``path`` (atomically); returns the path.

    Uses PyTorch's TorchScript-based exporter (``dynamo=False``), which needs no extra package and
    keeps height and width symbolic; ``sample_size`` is only the trace's example input.
    """
    if stage not in ("final", "iem"):
        raise ValueError(f"stage must be 'final' or 'iem', got {stage!r}")
    if checkpoint.options.exposure is not None:
        raise UsageError(f"this model normalises exposure (E = {checkpoint.options.exposure:g}), which the ONNX graph "
                         "cannot carry (its gain is measured on a downsampled whole image); use 'ruas-nni enhance'")
    module = _inference_module(checkpoint, stage, fold)
    sample = torch.rand(1, 3, *sample_size, generator=torch.Generator().manual_seed(0))
    buffer = io.BytesIO()
    axes = {0: "batch", 2: "height", 3: "width"}
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore")  # the exporter's deprecation and tracer notices
        torch.onnx.export(module, (sample,), buffer, dynamo=False, opset_version=opset,
                          input_names=["image"], output_names=["enhanced"],
                          dynamic_axes={"image": axes, "enhanced": axes})
    data = buffer.getvalue()
    radius = module.receptive_radius()
    try:  # onnx is an optional extra (pip install onnx): imported here so that this module works without it
        import onnx
    except ImportError:  # pragma: no cover - onnx is optional; the model is complete without metadata
        pass
    else:
        model = onnx.load_from_string(data)
        model.doc_string = (f"RUAS low-light enhancement ({'IEM + NRM' if stage == 'final' else 'IEM only'}); "
                            "input RGB in [0, 1], output not clipped")
        for key, value in {"stage": stage, "receptive_radius": str(radius), "folded": str(fold).lower(),
                           "producer": "ruas-nni"}.items():
            entry = model.metadata_props.add()
            entry.key, entry.value = key, value
        data = model.SerializeToString()
    path = Path(path)
    with atomic_write(path) as handle:
        handle.write(data)
    return path
