"""The architecture weights of a supernet as probabilities (``arch.json``'s ``probs``; drawn as the
paper's Fig. 9 by :func:`ruas_nni.search.figures.alpha_heatmaps`)."""

from __future__ import annotations

import torch

from strategies.nni_compat import arch_alpha

from ..model.network import EDGE_NAMES
from ..model.ops import OPERATION_NAMES
from .nni_compat import mixed_layers

__all__ = ["MODULES", "architecture_probabilities"]

MODULES = ("iem", "nrm")


def _mixed_layers(module: torch.nn.Module):
    seen: set[str] = set()
    for layer in mixed_layers(module):
        if layer.label not in seen:
            seen.add(layer.label)
            yield layer


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

