"""Export a genotype to the plain-PyTorch :class:`~ruas_nni.model.network.RUASNet` (no NNI needed)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Mapping

from .genotype import Genotype
from .network import EXPOSURE_SIDE, WARM_STARTS, RUASNet
from .ops import make_operation
from .tone import ToneOptions

__all__ = ["NetworkOptions", "SHAPE_OPTIONS", "export"]

SHAPE_OPTIONS = ("iem_stages", "nrm_cells", "nrm_channels")
"""The options of :class:`NetworkOptions` that a search may choose (``RUASSpace.scalable()``) and an
``arch.json`` may carry as its ``shape``."""


@dataclass(frozen=True)
class NetworkOptions:
    """Everything besides the genotype that fixes the network's shape and arithmetic."""

    iem_stages: int = 3
    nrm_cells: int = 3
    iem_channels: int = 3
    nrm_channels: int = 6
    gamma: float = 0.5
    warm_start: str = "rectified"
    exposure: float | None = None
    """Exposure normalisation's target mean ``E`` (:func:`ruas_nni.model.network.exposure_gain`); ``None`` = off."""
    exposure_gamma: float = 1.0
    """With exposure normalisation on, the tone curve ``u ** exposure_gamma`` before the gain (1 = none)."""
    tone: ToneOptions | None = None
    """With exposure normalisation on: the shoulder policy (:mod:`ruas_nni.model.tone`) instead of
    ``clamp(k * u ** p, 0, 1)``; a mapping of its options in a checkpoint. ``None`` = the older policy."""
    denoise_sigma: float | None = None
    """With exposure normalisation on: the noise level at the NRM's input at which the NRM denoises
    fully; below it, its correction is scaled down per photo (:mod:`ruas_nni.model.strength`).
    ``None`` = always fully (the paper)."""
    exposure_side: int = EXPOSURE_SIDE
    """With exposure normalisation on: the longest side of the small copy the gain (and the NRM's
    strength's lift) is measured on (:func:`ruas_nni.model.network.exposure_gain`)."""

    def __post_init__(self) -> None:
        for name in ("iem_stages", "nrm_cells", "iem_channels", "nrm_channels"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"network option {name!r} must be a positive integer, got {value!r}")
        if self.iem_channels != 3:
            raise ValueError(f"network option 'iem_channels' must be 3 (the IEM works on RGB), got {self.iem_channels}")
        if self.warm_start not in WARM_STARTS:
            raise ValueError(f"network option 'warm_start' must be one of {', '.join(WARM_STARTS)}, got {self.warm_start!r}")
        if isinstance(self.gamma, bool) or not isinstance(self.gamma, (int, float)):
            raise ValueError(f"network option 'gamma' must be a number, got {self.gamma!r}")
        object.__setattr__(self, "gamma", float(self.gamma))
        if self.exposure is not None:
            if isinstance(self.exposure, bool) or not isinstance(self.exposure, (int, float)) or not 0 < self.exposure <= 1:
                raise ValueError(f"network option 'exposure' must be a number in (0, 1] or null, got {self.exposure!r}")
            object.__setattr__(self, "exposure", float(self.exposure))
        if isinstance(self.exposure_gamma, bool) or not isinstance(self.exposure_gamma, (int, float)) \
                or not 0 < self.exposure_gamma <= 2:
            raise ValueError(f"network option 'exposure_gamma' must be a number in (0, 2], got {self.exposure_gamma!r}")
        object.__setattr__(self, "exposure_gamma", float(self.exposure_gamma))
        if self.tone is not None:
            tone = self.tone if isinstance(self.tone, ToneOptions) else ToneOptions.from_dict(self.tone)
            object.__setattr__(self, "tone", tone)
        if self.denoise_sigma is not None:
            if isinstance(self.denoise_sigma, bool) or not isinstance(self.denoise_sigma, (int, float)) \
                    or not 0 < self.denoise_sigma <= 1:
                raise ValueError(f"network option 'denoise_sigma' must be a number in (0, 1] or null, "
                                 f"got {self.denoise_sigma!r}")
            object.__setattr__(self, "denoise_sigma", float(self.denoise_sigma))
        if not isinstance(self.exposure_side, int) or isinstance(self.exposure_side, bool) \
                or not 16 <= self.exposure_side <= 4096:
            raise ValueError(f"network option 'exposure_side' must be an integer in [16, 4096], "
                             f"got {self.exposure_side!r}")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> NetworkOptions:
        data = dict(data or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown network option(s) {', '.join(unknown)}; expected {', '.join(sorted(known))}")
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        """The options; ``exposure``, ``exposure_gamma``, ``tone``, ``denoise_sigma`` and ``exposure_side``
        only when not their defaults, so checkpoints without them are written as before."""
        data = asdict(self)
        if data["exposure"] is None:
            del data["exposure"]
        if data["exposure_gamma"] == 1.0:
            del data["exposure_gamma"]
        if data["tone"] is None:
            del data["tone"]
        if data["denoise_sigma"] is None:
            del data["denoise_sigma"]
        if data["exposure_side"] == EXPOSURE_SIDE:
            del data["exposure_side"]
        return data


def export(arch: Any, options: NetworkOptions | Mapping[str, Any] | None = None) -> RUASNet:
    """Build the plain-PyTorch network for ``arch`` (freshly initialised weights).

    ``arch`` is a :class:`~ruas_nni.model.genotype.Genotype`, an ``arch.json``-style dict
    ``{"iem": [7 op names], "nrm": [7 op names] | None}`` or an NNI sample
    ``{"iem/e1": op, ..., "nrm/e7": op}``. Without ``nrm`` the network is IEM only.
    """
    genotype = Genotype.from_any(arch)
    if not isinstance(options, NetworkOptions):
        options = NetworkOptions.from_dict(options)

    def iem_edge(index: int, channels: int):
        return make_operation(genotype.iem[index], channels)

    def nrm_edge(index: int, channels: int):
        return make_operation(genotype.nrm[index], channels)  # type: ignore[index]

    return RUASNet(iem_edge, nrm_edge if genotype.nrm is not None else None, **{**options.to_dict(), "tone": options.tone})
