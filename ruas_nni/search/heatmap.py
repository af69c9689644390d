"""The architecture weights of a supernet as probabilities (``arch.json``'s ``probs``) and as a heatmap
image (the paper's Fig. 9) for TensorBoard."""

from __future__ import annotations

# ``nni.nas.strategy`` must be imported before ``nni.nas.oneshot`` (see strategies/cooperative.py).
import nni.nas.strategy  # noqa: F401, I001
import numpy as np
import torch
from nni.nas.oneshot.pytorch.supermodule.differentiable import DifferentiableMixedLayer

from strategies.nni_compat import arch_alpha

from ..model.network import EDGE_NAMES
from ..model.ops import OPERATION_NAMES

__all__ = ["MODULES", "architecture_probabilities", "alpha_heatmap"]

MODULES = ("iem", "nrm")


def _mixed_layers(module: torch.nn.Module):
    seen: set[str] = set()
    for sub in module.modules():
        if isinstance(sub, DifferentiableMixedLayer) and sub.label not in seen:
            seen.add(sub.label)
            yield sub


def architecture_probabilities(supernet: torch.nn.Module) -> dict[str, list[list[float]] | None]:
    """``{"iem": 7 x 7, "nrm": 7 x 7 or None}``: per edge e1..e7 the softmax of its architecture
    weights over :data:`OPERATION_NAMES` (0 for operations that are not candidates). A plain softmax,
    also for Gumbel DARTS (whose ``export_probs`` samples)."""
    rows: dict[str, dict[str, float]] = {}
    for layer in _mixed_layers(supernet):
        probs = torch.softmax(arch_alpha(layer).detach().double().cpu(), dim=-1).tolist()
        rows[layer.label] = dict(zip(layer.names, probs))
    result: dict[str, list[list[float]] | None] = {}
    for module in MODULES:
        labels = [f"{module}/{edge}" for edge in EDGE_NAMES]
        if all(label in rows for label in labels):
            result[module] = [[float(rows[label].get(op, 0.0)) for op in OPERATION_NAMES] for label in labels]
        else:
            result[module] = None
    return result


def alpha_heatmap(matrix: list[list[float]], cell: int = 24) -> np.ndarray:
    """A ``3 x H x W`` float image of a 7 x 7 probability matrix (paper Fig. 9): one ``cell`` x ``cell``
    square per edge (row) and operation (column), white grid lines. Each row is scaled from its least
    (dark blue) to its most likely operation (yellow), so the ranking on every edge shows even while
    the probabilities are still close to uniform; the values themselves are logged as scalars."""
    values = np.asarray(matrix, dtype=np.float64)
    low_end = values.min(axis=1, keepdims=True)
    spread = values.max(axis=1, keepdims=True) - low_end
    scale = np.where(spread > 0, (values - low_end) / np.where(spread > 0, spread, 1.0), 0.5)
    low, mid, high = np.array([0.07, 0.04, 0.33]), np.array([0.13, 0.57, 0.55]), np.array([0.99, 0.91, 0.14])
    s = scale[..., None]
    colours = np.where(s < 0.5, low + (mid - low) * (s / 0.5), mid + (high - mid) * ((s - 0.5) / 0.5))
    image = np.kron(colours, np.ones((cell, cell, 1)))
    image[::cell, :, :] = 1.0
    image[:, ::cell, :] = 1.0
    return np.ascontiguousarray(image.transpose(2, 0, 1)).astype(np.float32)
