"""``RUASSpace``: the RUAS network as an NNI model space (paper Sec. 3.3, Fig. 2(d)).

The network is :class:`ruas_nni.model.network.RUASNet`'s, with every distillation-cell edge a
``LayerChoice`` over the candidate operations. All IEM stages share the labels ``iem/e1`` ..
``iem/e7`` and all NRM cells ``nrm/e1`` .. ``nrm/e7``: one architecture per module, separate weights
per stage, a search space of 7^7 x 7^7. NNI's DARTS gives same-label choices one shared ``alpha``.
"""

from __future__ import annotations

from typing import Sequence

from nni.mutable import label_scope
from nni.nas.nn.pytorch import LayerChoice, ModelSpace
from torch import nn

from ruas_nni.model.genotype import Genotype
from ruas_nni.model.network import EDGE_NAMES, WARM_STARTS, IlluminationEstimation, NoiseRemoval, RUASForward
from ruas_nni.model.ops import OPERATION_NAMES, make_operation
from ruas_nni.model.tone import ToneOptions

__all__ = ["RUASSpace"]


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
        ``K`` and ``N`` of the paper (3 and 3).
    nrm_channels
        Width of the NRM cells (6). The IEM works on RGB, width 3.
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
        iem_stages: int = 3,
        nrm_cells: int = 3,
        nrm_channels: int = 6,
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
