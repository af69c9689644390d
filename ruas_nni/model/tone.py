"""The shoulder tone policy: exposure normalisation that never clips a photo (not in the paper).

The older policy (:func:`ruas_nni.model.network.apply_gain`) scales the IEM output ``u`` by one gain
per image and clips at 1: ``clamp(k * u ** p, 0, 1)``. On real photos that fails three ways
(``docs/tone.md``): the IEM's own ``u = clamp(y / t, 0, 1)`` already clips every pixel brighter than
its illumination ``t`` (a lamp-lit wall becomes a flat white), the gain has no bound (a near-black
8-bit photo is lifted 40-fold, its one-level steps into blotches) and the clip is hard.

The shoulder policy, with ``x = y / t_K`` (the last IEM stage's ratio *without* the clamp, so a
bright pixel keeps its detail above 1), one gain ``b`` per image, and static options
(``gamma`` = ``p``, ``toe`` = ``e``, ``knee`` = ``c``, ``hue`` = ``s``):

* ``g(x) = (x + e) ** p - e ** p``: the tone curve of the older policy, with an optional toe that
  bounds its slope at black (``p * e ** (p - 1)``) instead of letting it grow without bound;
* ``S(z) = z`` for ``z <= c``, else ``c + (1 - c) (1 - exp(-(z - c) / (1 - c)))``: a shoulder that
  follows the straight line up to the knee and then rolls off towards 1, never reaching it, with a
  continuous slope; ``c = 0`` is ``1 - exp(-z)``;
* per channel ``F(x) = S(b g(x))``; the output mixes that with its hue-preserving form, the same
  curve on the pixel's largest channel ``m`` and every channel scaled by the same ratio:
  ``u' = (1 - s) F(x) + s x F(m) / m``. ``s = 1`` keeps every pixel's chromaticity; ``s = 0`` is per
  channel, which desaturates (as LOL's references do).

``u' < 1`` for every finite ``x``: nothing is clipped, a pixel becomes white only in the limit.

The gain ``b`` is measured on the same small copy as the older gain (so tiles of an image share it):
the largest ``b`` at most ``max_gain`` whose output mean is at most ``min(E, max_ratio * mean(y_s))``,
found by bisection (the mean rises with ``b``). ``max_ratio`` bounds how far an image is brightened
relative to its own mean level: a photo whose mean is three 8-bit levels is not lifted to mid-grey.

This module imports PyTorch only inside :func:`shoulder_curve`: the cached-graph enhancer solves the
gain with numpy alone.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np

if TYPE_CHECKING:
    import torch

__all__ = ["ToneOptions", "shoulder_curve", "solve_shoulder_gain", "BISECTION_STEPS"]

BISECTION_STEPS = 40
"""Halvings of the gain's interval: ``max_gain / 2 ** 40`` is far below float32's resolution."""

_TINY = 1e-6
"""Smallest largest-channel value divided by (a black pixel has ratio 0 either way)."""


@dataclass(frozen=True)
class ToneOptions:
    """Static options of the shoulder policy (see the module docstring); a network option ``tone``."""

    knee: float = 0.7
    toe: float = 0.0
    hue: float = 0.5
    max_ratio: float = 14.0
    max_gain: float = 64.0

    def __post_init__(self) -> None:
        bounds = {"knee": (0.0, 0.99), "toe": (0.0, 1.0), "hue": (0.0, 1.0), "max_ratio": (1.0, 1e3),
                  "max_gain": (1e-3, 1e4)}
        for name, (low, high) in bounds.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
                raise ValueError(f"tone option {name!r} must be a number in [{low}, {high}], got {value!r}")
            object.__setattr__(self, name, float(value))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ToneOptions:
        if not isinstance(data, Mapping):
            raise ValueError(f"network option 'tone' must be a mapping of {', '.join(f.name for f in fields(cls))}, "
                             f"got {data!r}")
        unknown = sorted(set(data) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"unknown tone option(s) {', '.join(unknown)}; expected "
                             f"{', '.join(f.name for f in fields(cls))}")
        return cls(**dict(data))

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def _curve(x, gain, gamma: float, tone: ToneOptions, xp, channel_max):
    """The formula of the module docstring, written once for torch tensors and numpy arrays (``xp``:
    ``torch`` or ``numpy``; ``channel_max``: the largest channel, kept as an axis). ``x >= 0``."""
    knee = tone.knee

    def curve(v):
        g = v if gamma == 1.0 and tone.toe == 0 else (v + tone.toe) ** gamma - (tone.toe ** gamma if tone.toe else 0.0)
        z = gain * g
        if knee <= 0.0:
            return -xp.expm1(-z)
        return xp.where(z <= knee, z, knee + (1.0 - knee) * -xp.expm1(-(z - knee) / (1.0 - knee)))

    out = curve(x)
    if tone.hue > 0.0:
        m = channel_max(x)
        out = (1.0 - tone.hue) * out + tone.hue * (x * (curve(m) / xp.where(m > _TINY, m, _TINY)))
    return out


def shoulder_curve(x: torch.Tensor, gain: torch.Tensor, gamma: float, tone: ToneOptions) -> torch.Tensor:
    """``u'`` of the module docstring for the ratio ``x`` (``B x 3 x H x W``, ``>= 0``) with one gain
    per image (``gain``: ``B`` values)."""
    import torch  # here, so that the gain is solved without PyTorch (ruas_nni.inference.graph_cache)

    return _curve(x, gain.to(x.dtype).view(-1, 1, 1, 1), gamma, tone, torch,
                  lambda v: torch.amax(v, dim=1, keepdim=True))


def solve_shoulder_gain(x_small: np.ndarray, y_mean: float, exposure: float, gamma: float, tone: ToneOptions) -> float:
    """The gain ``b`` of one image from its small copy: ``x_small`` (``3 x h x w``, the IEM ratio) and
    ``y_mean`` (the small input's mean). The largest ``b <= max_gain`` whose mean output is at most
    ``min(E, max_ratio * y_mean)`` (module docstring), by bisection in float64."""
    x = np.maximum(np.asarray(x_small, np.float64), 0.0)
    target = min(float(exposure), tone.max_ratio * float(y_mean))

    def mean(b: float) -> float:
        return float(_curve(x, b, gamma, tone, np, lambda v: v.max(axis=0, keepdims=True)).mean())

    low, high = 0.0, tone.max_gain
    if mean(high) <= target:
        return high
    for _ in range(BISECTION_STEPS):
        middle = 0.5 * (low + high)
        if mean(middle) <= target:
            low = middle
        else:
            high = middle
    return low
