"""The strategies' only access to NNI's private state (NNI 3.0). Each name here reaches an attribute
that NNI does not document; ``tests/test_nni_compat.py`` fails, naming the attribute, when an NNI
release renames or drops it. The search layer uses them too; the rest of the project's access to
NNI's internals is :mod:`ruas_nni.search.nni_compat` (this package may not import ``ruas_nni``).

* ``_arch_alpha``: where NNI's differentiable modules (``DifferentiableMixedLayer``,
  ``DifferentiableMixedInput``, mixed operations, ``Repeat``, ``Cell`` edges) keep their architecture
  weights: one ``nn.Parameter`` (the module's label is its label) or an ``nn.ParameterDict`` keyed
  by label.
* ``_softmax``: the module by which NNI's ``DifferentiableMixedLayer`` turns its architecture weights
  into probabilities (``nn.Softmax(-1)`` for DARTS, a Gumbel softmax for ``GumbelDARTS``).
* ``_optimizer_progress``: how many optimiser steps a ``BaseOneShotLightningModule`` has taken (reset
  in its ``setup``). Its ``advance_optimization`` counts every step there (and, under Lightning 1.x,
  picks the next optimiser by it); a strategy that steps an optimiser itself counts its steps the same way.
"""

from __future__ import annotations

from torch import nn

__all__ = ["ARCH_ALPHA", "SOFTMAX", "OPTIMIZER_PROGRESS", "arch_alpha", "layer_softmax", "count_optimizer_step"]

ARCH_ALPHA = "_arch_alpha"
"""Attribute of NNI's differentiable modules that holds their architecture weights."""

SOFTMAX = "_softmax"
"""Attribute of NNI's ``DifferentiableMixedLayer`` that holds its softmax module."""

OPTIMIZER_PROGRESS = "_optimizer_progress"
"""Attribute of NNI's one-shot Lightning modules that counts optimiser steps."""


def arch_alpha(module: nn.Module) -> nn.Parameter | nn.ParameterDict | None:
    """The architecture weights NNI keeps on ``module`` (a parameter, or a ``ParameterDict`` keyed by
    label), or ``None`` when it holds none itself (looked up without ``nn.Module.__getattr__``, so
    modules that merely contain such weights deeper down give ``None``)."""
    alpha = module.__dict__.get("_parameters", {}).get(ARCH_ALPHA)
    if isinstance(alpha, nn.Parameter):
        return alpha
    container = module.__dict__.get("_modules", {}).get(ARCH_ALPHA)
    return container if isinstance(container, nn.ParameterDict) else None


def layer_softmax(module: nn.Module) -> nn.Module:
    """The softmax by which NNI's mixed layer ``module`` weighs its candidates (a plain
    ``nn.Softmax(-1)`` when it keeps none)."""
    return getattr(module, SOFTMAX, None) or nn.Softmax(-1)


def count_optimizer_step(lightning_module: nn.Module) -> None:
    """Count one optimiser step of an NNI one-shot Lightning module, as its own ``advance_optimization`` does."""
    setattr(lightning_module, OPTIMIZER_PROGRESS, getattr(lightning_module, OPTIMIZER_PROGRESS) + 1)
