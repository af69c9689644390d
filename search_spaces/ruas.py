"""``RUASSpace``: the RUAS network as an NNI model space (paper Sec. 3.3, Fig. 2(d)).

The network is :class:`ruas_nni.model.network.RUASNet`'s, with every distillation-cell edge a
``LayerChoice`` over the candidate operations. All IEM stages share the labels ``iem/e1`` ..
``iem/e7`` and all NRM cells ``nrm/e1`` .. ``nrm/e7``: one architecture per module, separate weights
per stage, a search space of 7^7 x 7^7. NNI's DARTS gives same-label choices one shared ``alpha``.

The network's shape (IEM stages, NRM cells, NRM width) is fixed in the paper's space. Given as
``nni.choice`` s instead (:meth:`RUASSpace.scalable`: labels ``iem/stages``, ``nrm/cells``,
``nrm/width``), it is searched too, and cost and quality trade (docs/search.md, "A space where cost
and quality trade"). The shape is chosen when NNI freezes a sample, so NNI's multi-trial strategies
search it (``ruas-nni nas --space scalable``); the one-shot strategies search the edges of one fixed
shape (a supernet has one shape).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import nni
from nni.mutable import Categorical, Mutable, ensure_frozen, frozen_context, label_scope
from nni.nas.nn.pytorch import LayerChoice, ModelSpace
from nni.nas.space import model_context
from torch import nn

from ruas_nni.model.export import SHAPE_OPTIONS
from ruas_nni.model.genotype import Genotype
from ruas_nni.model.network import EDGE_NAMES, WARM_STARTS, IlluminationEstimation, NoiseRemoval, RUASForward
from ruas_nni.model.ops import OPERATION_NAMES, make_operation
from ruas_nni.model.tone import ToneOptions

__all__ = ["RUASSpace", "SHAPE_LABELS", "SCALABLE_CHOICES", "shape_of"]

SHAPE_LABELS: dict[str, str] = dict(zip(SHAPE_OPTIONS, ("iem/stages", "nrm/cells", "nrm/width")))
"""The NNI label of each shape option of :meth:`RUASSpace.scalable` (network option -> label)."""

SCALABLE_CHOICES: dict[str, tuple[int, ...]] = {"iem_stages": (1, 2, 3), "nrm_cells": (1, 2, 3), "nrm_channels": (3, 6, 12)}
"""The values :meth:`RUASSpace.scalable` offers for each shape option by default."""


def shape_of(sample: Mapping[str, Any]) -> dict[str, int]:
    """The shape options (``iem_stages``, ``nrm_cells``, ``nrm_channels``) an NNI sample of a
    scalable :class:`RUASSpace` fixes; ``{}`` for a sample of a space of fixed shape."""
    return {option: int(sample[label]) for option, label in SHAPE_LABELS.items() if label in sample}



def _edge_choices(candidates: Sequence[str]):
    """An edge factory that makes ``LayerChoice(label='e<i>')`` over ``candidates``."""

    def factory(index: int, channels: int) -> nn.Module:
        return LayerChoice({name: make_operation(name, channels) for name in candidates}, label=EDGE_NAMES[index])

    return factory


class RUASSpace(RUASForward, ModelSpace):
    """The RUAS search space: IEM (``iem_stages`` stages, width 3) and NRM (``nrm_cells`` cells,
    width ``nrm_channels``), each cell edge a ``LayerChoice`` labelled ``iem/e<i>`` or ``nrm/e<i>``.

    Parameters
    ----------
    iem_stages, nrm_cells
        ``K`` and ``N`` of the paper (3 and 3), or an ``nni.choice`` of them (see :meth:`scalable`).
    nrm_channels
        Width of the NRM cells (6), or an ``nni.choice`` of widths. The IEM works on RGB, width 3.
    gamma
        Residual-rectification weight of the IEM warm start (0.5).
    warm_start
        ``rectified`` | ``plain`` | ``fixed`` (the paper's Fig. 6 ablation).
    with_nrm
        Search the NRM too (``True``) or the IEM alone.
    candidates
        Candidate operations of every edge (default: all seven of the paper, in the spec's order).
    exposure, exposure_gamma
        Exposure normalisation between IEM and NRM (:func:`ruas_nni.model.network.exposure_gain`,
        not in the paper; ``None`` = off): the NRM is searched on the normalised ``u'`` that it will
        see in the trained network.
    tone
        With exposure on: the shoulder policy's options (:mod:`ruas_nni.model.tone`), or ``None`` for
        ``clamp(k * u ** exposure_gamma, 0, 1)``.

    ``forward(y)`` returns the enhanced image; ``enhance(y)`` also the IEM output and illuminations.
    A sample freezes to a network whose ``state_dict`` keys equal those of the exported
    :class:`~ruas_nni.model.network.RUASNet`.
    """

    def __init__(
        self,
        iem_stages: int | Categorical[int] = 3,
        nrm_cells: int | Categorical[int] = 3,
        nrm_channels: int | Categorical[int] = 6,
        gamma: float = 0.5,
        warm_start: str = "rectified",
        with_nrm: bool = True,
        candidates: Sequence[str] = OPERATION_NAMES,
        exposure: float | None = None,
        exposure_gamma: float = 1.0,
        tone: ToneOptions | None = None,
    ) -> None:
        super().__init__()
        self.exposure = None if exposure is None else float(exposure)
        self.exposure_gamma = float(exposure_gamma)
        self.tone = tone if self.exposure is not None else None
        candidates = list(candidates)
        unknown = [c for c in candidates if c not in OPERATION_NAMES]
        if unknown or not candidates or len(set(candidates)) != len(candidates):
            raise ValueError(
                f"candidates must be distinct names among {', '.join(OPERATION_NAMES)}; got {candidates}"
            )
        if warm_start not in WARM_STARTS:
            raise ValueError(f"unknown warm start {warm_start!r}; expected one of {', '.join(WARM_STARTS)}")
        self.candidates = tuple(candidates)
        self._arguments = dict(iem_stages=iem_stages, nrm_cells=nrm_cells, nrm_channels=nrm_channels, gamma=gamma,
                               warm_start=warm_start, with_nrm=with_nrm, candidates=candidates, exposure=exposure,
                               exposure_gamma=exposure_gamma, tone=tone)
        self._scalable = False
        iem_stages = self._shape("iem_stages", iem_stages)
        if with_nrm:
            nrm_cells, nrm_channels = self._shape("nrm_cells", nrm_cells), self._shape("nrm_channels", nrm_channels)
        with label_scope("iem"):
            self.iem = IlluminationEstimation(_edge_choices(candidates), iem_stages, 3, gamma, warm_start)
        if with_nrm:
            with label_scope("nrm"):
                self.nrm = NoiseRemoval(_edge_choices(candidates), nrm_cells, nrm_channels)
        else:
            self.nrm = None

    @staticmethod
    def genotype(sample: dict) -> Genotype:
        """The :class:`~ruas_nni.model.genotype.Genotype` of an NNI sample of this space."""
        return Genotype.from_sample(sample)

    def _shape(self, option: str, value: Any) -> int:
        """A shape option's value in this instance: an ``nni.choice`` is registered with the space and
        takes its value from the sample NNI freezes the space with (its first value in the unfrozen
        space, which only NNI's strategies look into)."""
        if isinstance(value, Mutable):
            if not isinstance(value, Categorical):
                raise ValueError(f"{option} must be a positive integer or an nni.choice of them, got {value!r}")
            bad = [v for v in value.values if isinstance(v, bool) or not isinstance(v, int) or v < 1]
            if bad:
                raise ValueError(f"{option}: every value of the nni.choice must be a positive integer, got {bad}")
            self._scalable = True
            if value.label not in (frozen_context.current() or {}):  # a space, not the network of a sample
                self.add_mutable(value)
            value = ensure_frozen(value)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{option} must be a positive integer or an nni.choice of them, got {value!r}")
        return value

    def freeze(self, sample: Mapping[str, Any]) -> nn.Module:
        """The network of ``sample``. With a searched shape the network is built anew in that shape
        (NNI's way for choices made in ``__init__``); otherwise NNI freezes each ``LayerChoice``."""
        if not self._scalable:
            return super().freeze(sample)
        with model_context(sample):
            return type(self)(**self._arguments)

    @classmethod
    def scalable(cls, iem_stages: Sequence[int] = SCALABLE_CHOICES["iem_stages"],
                 nrm_cells: Sequence[int] = SCALABLE_CHOICES["nrm_cells"],
                 nrm_channels: Sequence[int] = SCALABLE_CHOICES["nrm_channels"], **options: Any) -> RUASSpace:
        """The space whose shape is searched with the edges: ``nni.choice`` s labelled ``iem/stages``,
        ``nrm/cells`` and ``nrm/width`` (:data:`SHAPE_LABELS`) over the given values (default: 1-3
        stages, 1-3 cells, 3 / 6 / 12 channels: 726 to 9,384 parameters with the paper's edges).
        ``options`` are the other arguments of :class:`RUASSpace`. A sample's shape is
        :func:`shape_of` of it."""
        values = {"iem_stages": iem_stages, "nrm_cells": nrm_cells, "nrm_channels": nrm_channels}
        choices = {}
        for option, label in SHAPE_LABELS.items():
            scope, name = label.split("/")
            with label_scope(scope):
                choices[option] = nni.choice(name, list(values[option]))
        return cls(**choices, **options)
