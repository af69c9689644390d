"""The shoulder tone policy: exposure normalisation that never clips a photo (not in the paper).

The older policy (:func:`ruas_nni.model.network.apply_gain`) scales the IEM output ``u`` by one gain
per image and clips at 1: ``clamp(k * u ** p, 0, 1)``. On real photos that fails three ways
(``docs/tone.md``): the IEM's own ``u = clamp(y / t, 0, 1)`` already clips every pixel brighter than
its illumination ``t`` (a lamp-lit wall becomes a flat white), the gain has no bound (a near-black
8-bit photo is lifted 40-fold, its one-level steps into blotches) and the clip is hard.

The shoulder policy, with ``x = y / t_K`` (the last IEM stage's ratio *without* the clamp, so a
bright pixel keeps its detail above 1), one gain ``b`` per image, and static options
(``gamma`` = ``p``, ``toe`` = ``e``, ``knee`` = ``c``, ``hue`` = ``s``, ``dequantise`` = ``d``):

* dequantisation (:func:`dequantise`): ``x <- x + w (B(x) - x)`` with ``B`` a 7 x 7 binomial blur
  normalised inside the image and ``w = exp(-max_c B(x) / d)``. In the darkest parts of a photo one
  8-bit level (or a JPEG block edge) becomes a visible step once the gain lifts it; there the pixel
  takes its neighbourhood's mean. Bright pixels keep their own value (``w`` is 1.4 % at ``B(x) = 0.85``
  with the default ``d = 0.2``);
* ``g(x) = (x + e) ** p - e ** p``: the tone curve of the older policy, with an optional toe that
  bounds its slope at black;
* ``S(z) = z`` for ``z <= c``, else ``c + (1 - c) (1 - exp(-(z - c) / (1 - c)))``: a shoulder that
  follows the straight line up to the knee and then rolls off towards 1, never reaching it, with a
  continuous slope; ``c = 0`` is ``1 - exp(-z)``;
* per channel ``F(x) = S(b g(x))``; the output mixes that with its hue-preserving form, the same
  curve on the pixel's largest channel ``m`` and every channel scaled by the same ratio:
  ``u' = (1 - s) F(x) + s x F(m) / m``. ``s = 1`` keeps every pixel's chromaticity; ``s = 0`` is per
  channel, which desaturates (as LOL's references do).

The gain ``b`` is measured on the same small copy as the older gain, so the tiles of an image share
it (:func:`solve_shoulder_gain`). It is the largest ``b`` that meets three bounds:

* the output's mean is at most ``E``;
* the output's mean is at most ``max_ratio * mean(y_s)``. A photo whose mean is three 8-bit levels
  is not lifted to mid-grey;
* the photo's white point, the ``white_quantile`` quantile of the largest channel of ``x``, maps to
  at most ``white_level``. A night scene whose lamps and lit walls are bright keeps them below white,
  and so keeps its night;
* and ``b`` is at most ``max_gain``.

The search for ``b`` is Newton's method from ``b = 0``: the mean is increasing and concave in
``b`` (``S`` is), so every Newton step lands below the root and the steps rise to it; the gain found
never gives a mean above the bound.

This module imports PyTorch only inside :func:`shoulder_curve`: the cached-graph enhancer solves the
gain with numpy alone.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np

if TYPE_CHECKING:
    import torch

__all__ = ["ToneOptions", "shoulder_curve", "solve_shoulder_gain", "shoulder_gain_and_mean", "clip_policy_mean",
           "small_copy_factor",
           "dequantise", "NEWTON_STEPS", "BLUR_TAPS", "BLUR_RADIUS", "blur_norm"]

NEWTON_STEPS = 50
"""At most this many Newton steps for the gain; it stops when a step is below 1e-10 of the gain
(about 5 steps on real photos; far below float32's resolution of a gain near 1)."""

BLUR_TAPS: tuple[float, ...] = (1 / 64, 6 / 64, 15 / 64, 20 / 64, 15 / 64, 6 / 64, 1 / 64)
"""The dequantisation blur's separable kernel: binomial, three passes of ``[1, 2, 1] / 4``."""
BLUR_RADIUS = len(BLUR_TAPS) // 2

_TINY = 1e-6
"""Smallest largest-channel value divided by (a black pixel has ratio 0 either way)."""

_POW_FLOOR = 1e-12
"""The tone curve ``v ** p`` is taken of at least this much where ``v > 0`` (a finite gradient at 0)."""


@dataclass(frozen=True)
class ToneOptions:
    """Static options of the shoulder policy (see the module docstring); a network option ``tone``."""

    knee: float = 0.85
    toe: float = 0.0
    hue: float = 0.3
    max_ratio: float = 20.0
    max_gain: float = 64.0
    white_quantile: float = 0.995
    white_level: float = 0.96
    dequantise: float = 0.2

    def __post_init__(self) -> None:
        bounds = {"knee": (0.0, 0.99), "toe": (0.0, 1.0), "hue": (0.0, 1.0), "max_ratio": (1.0, 1e3),
                  "max_gain": (1e-3, 1e4), "white_quantile": (0.5, 1.0), "white_level": (0.5, 0.999),
                  "dequantise": (0.0, 10.0)}
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


def _prepare(x, gamma: float, tone: ToneOptions, xp, channel_max) -> tuple:
    """What the curve needs of ``x`` whatever the gain: ``(g(x), x, g(m), m)`` (the last two ``None``
    without the hue mix), for torch tensors or numpy arrays (``xp``: ``torch`` or ``numpy``;
    ``channel_max``: the largest channel, kept as an axis). ``x >= 0``."""

    def g(v):
        if gamma == 1.0 and tone.toe == 0:
            return v
        if tone.toe == 0:  # v ** p, whose slope is infinite at 0: a black pixel would make the search's
            # hypergradient NaN. Below _POW_FLOOR the power is taken of _POW_FLOOR (and of 0 at 0): the
            # same values to 1e-6 of the output, and a zero gradient there
            if xp is not np:
                return xp.where(v > 0, v.clamp_min(_POW_FLOOR) ** gamma, 0.0)
            powered = np.maximum(v, _POW_FLOOR)  # numpy (the gain's solve): in place, sqrt for p = 1/2
            powered = np.sqrt(powered, out=powered) if gamma == 0.5 else np.power(powered, gamma, out=powered)
            powered[v <= 0] = 0.0
            return powered
        return (v + tone.toe) ** gamma - tone.toe ** gamma

    if tone.hue <= 0.0:
        return g(x), x, None, None
    m = channel_max(x)
    return g(x), x, g(m), xp.where(m > _TINY, m, _TINY)


def _shoulder(z, knee: float, xp):
    """``S(z)`` of the module docstring (torch tensors or numpy arrays)."""
    if knee <= 0.0:
        return -xp.expm1(-z)
    return xp.where(z <= knee, z, knee + (1.0 - knee) * -xp.expm1(-(z - knee) / (1.0 - knee)))


def _combine(gain, parts: tuple, tone: ToneOptions, xp):
    """The formula of the module docstring from :func:`_prepare`'s parts, written once for both."""
    gx, x, gm, m = parts
    out = _shoulder(gain * gx, tone.knee, xp)
    if gm is not None:
        out = (1.0 - tone.hue) * out + tone.hue * (x * (_shoulder(gain * gm, tone.knee, xp) / m))
    return out


HISTOGRAM_BINS = 4096
"""Bins of ``g`` over which :func:`solve_shoulder_gain` sums the output's mean (each bin at the mean
``g`` of its pixels: the error is second order in the bin's width, far below a gain's resolution)."""


def _binned(values: np.ndarray, weights: np.ndarray | None, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """``(mean value, total weight)`` of the non-empty bins of ``values`` (bin ``floor(value * scale)``,
    the last one open above); without ``weights`` each value weighs 1."""
    index = (values * scale).astype(np.intp)
    np.minimum(index, HISTOGRAM_BINS - 1, out=index)
    count = np.bincount(index, minlength=HISTOGRAM_BINS)
    used = count > 0
    means = np.bincount(index, weights=values, minlength=HISTOGRAM_BINS)[used] / count[used]
    if weights is None:
        return means, count[used].astype(np.float64)
    return means, np.bincount(index, weights=weights, minlength=HISTOGRAM_BINS)[used]


def _mean_and_slope(gain: float, values: np.ndarray, weights: np.ndarray, knee: float) -> tuple[float, float]:
    """``sum(S(b v) w)`` and its derivative in ``b``, ``sum(S'(b v) v w)``, at ``b = gain`` (float64).
    ``S'`` is 1 up to the knee and ``exp(-(z - c) / (1 - c))`` above it; one ``expm1`` gives both."""
    z = gain * values
    if knee <= 0.0:
        e = np.expm1(-z)
        return float(-(e * weights).sum()), float(((1.0 + e) * values * weights).sum())
    above = z > knee
    below = ~above
    e = np.expm1((knee - z[above]) / (1.0 - knee))
    w = weights[above]
    total = float((z[below] * weights[below]).sum()) + float(((knee - (1.0 - knee) * e) * w).sum())
    slope = float((values[below] * weights[below]).sum()) + float(((1.0 + e) * values[above] * w).sum())
    return total, slope


def _shoulder_inverse(value: float, knee: float) -> float:
    """The ``z`` that the shoulder ``S`` maps to ``value`` (< 1)."""
    if value <= knee:
        return value
    return knee - (1.0 - knee) * math.log1p(-(value - knee) / (1.0 - knee))


def blur_norm(index: int, size: int) -> float:
    """The weight of :data:`BLUR_TAPS` that falls inside ``0 .. size - 1`` around ``index`` (1 inside):
    dividing the zero-padded blur by it blurs only what is in the image."""
    return sum(w for k, w in enumerate(BLUR_TAPS) if 0 <= index + k - BLUR_RADIUS < size)


def dequantise(x: torch.Tensor, tone: ToneOptions) -> torch.Tensor:
    """``x + w (B(x) - x)`` with ``B`` the normalised binomial blur (:data:`BLUR_TAPS`, per channel)
    and ``w = exp(-max_c B(x) / dequantise)``: the darkest pixels, where one 8-bit level becomes a
    visible step after the gain, take their neighbourhood's mean; bright ones are left alone."""
    import torch
    import torch.nn.functional as F

    if tone.dequantise <= 0.0:
        return x
    taps = torch.tensor(BLUR_TAPS, dtype=x.dtype, device=x.device)
    kernel = (taps[:, None] * taps[None, :]).expand(x.shape[1], 1, len(BLUR_TAPS), len(BLUR_TAPS))
    height, width = x.shape[-2:]
    rows = torch.tensor([blur_norm(i, height) for i in range(height)], dtype=x.dtype, device=x.device)
    columns = torch.tensor([blur_norm(j, width) for j in range(width)], dtype=x.dtype, device=x.device)
    blurred = F.conv2d(x, kernel, padding=BLUR_RADIUS, groups=x.shape[1]) / (rows[:, None] * columns[None, :])
    weight = torch.exp(blurred.amax(dim=1, keepdim=True) * (-1.0 / tone.dequantise))
    return x + weight * (blurred - x)


def shoulder_curve(x: torch.Tensor, gain: torch.Tensor, gamma: float, tone: ToneOptions) -> torch.Tensor:
    """``u'`` of the module docstring for the ratio ``x`` (``B x 3 x H x W``, ``>= 0``) with one gain
    per image (``gain``: ``B`` values)."""
    import torch  # here, so that the gain is solved without PyTorch (ruas_nni.inference.graph_cache)

    parts = _prepare(x, gamma, tone, torch, lambda v: torch.amax(v, dim=1, keepdim=True))
    return _combine(gain.to(x.dtype).view(-1, 1, 1, 1), parts, tone, torch)


def small_copy_factor(height: int, width: int, side: int) -> int:
    """The block size ``f`` of the small copy the gain is measured on, for an ``H x W`` image and the
    network option ``exposure_side``: ``min(ceil(max(H, W) / side), H, W)``, at least 1. The network
    (:func:`ruas_nni.model.network.exposure_gain`) and the graph engines, which do not import PyTorch,
    both take it from here, so their small copies are the same."""
    return max(1, min(math.ceil(max(height, width) / side), height, width))


def solve_shoulder_gain(x_small: np.ndarray, y_mean: float, exposure: float, gamma: float, tone: ToneOptions) -> float:
    """The gain ``b`` of one image from its small copy: ``x_small`` (``3 x h x w``, the IEM ratio) and
    ``y_mean`` (the small input's mean). The largest ``b <= max_gain`` whose mean output is at most
    ``min(E, max_ratio * y_mean)`` and that keeps the white point at most ``white_level`` (module
    docstring), by Newton's method in float64 (NaN when ``x_small`` holds a non-finite value). The
    small copy is not dequantised: its pixels are already
    means of ``f x f`` blocks."""
    return shoulder_gain_and_mean(x_small, y_mean, exposure, gamma, tone)[0]


def shoulder_gain_and_mean(x_small: np.ndarray, y_mean: float, exposure: float, gamma: float,
                           tone: ToneOptions) -> tuple[float, float]:
    """:func:`solve_shoulder_gain`'s gain and the small copy's mean output at that gain (summed over
    the same bins: what the lift of :mod:`ruas_nni.model.strength` needs, at no extra pass)."""
    x = np.asarray(x_small, np.float64)
    if not np.isfinite(x).all() or not math.isfinite(y_mean):
        return math.nan, math.nan  # a diverged network: the gain says so, as the older policy's mean does
    x = np.maximum(x, 0.0)
    target = min(float(exposure), tone.max_ratio * float(y_mean))

    # the mean of _combine over the pixels, as sums over bins of g (only the gain varies between tries):
    # the per-channel curve's bins weighted 1 - hue, the hue-preserving one's weighted hue
    gx, _, gm, m = _prepare(x, gamma, tone, np, lambda v: v.max(axis=0, keepdims=True))
    scale = HISTOGRAM_BINS / max(float(gx.max()), 1e-12)
    values, weights = _binned(gx.ravel(), None, scale)
    if gm is not None:
        hue_values, hue_weights = _binned(gm.ravel(), (x / m).sum(axis=0).ravel(), scale)
        values = np.concatenate([values, hue_values])
        weights = np.concatenate([(1.0 - tone.hue) * weights, tone.hue * hue_weights])
    count = gx.size

    def mean(b: float) -> tuple[float, float]:
        """The mean output at gain ``b`` and its derivative in ``b``."""
        total, slope = _mean_and_slope(b, values, weights, tone.knee)
        return total / count, slope / count

    low, high = 0.0, tone.max_gain
    white = float(np.quantile(x.max(axis=0), tone.white_quantile)) if x.size else 0.0
    g_white = white if gamma == 1.0 and tone.toe == 0 else (white + tone.toe) ** gamma - (tone.toe ** gamma if tone.toe else 0.0)
    if g_white > 0.0:  # the photo's white point maps to at most white_level
        high = min(high, _shoulder_inverse(tone.white_level, tone.knee) / g_white)
    at_high = mean(high)[0]
    if at_high <= target:
        return high, at_high
    # Newton from b = 0: the mean is increasing and concave in b, so each tangent's root is at most the
    # true root and the steps rise to it without overshooting (mean(b) <= target all the way)
    for _ in range(NEWTON_STEPS):
        value, slope = mean(low)
        if slope <= 0.0:
            break
        step = (target - value) / slope
        low = min(low + max(step, 0.0), high)
        if step <= 1e-10 * max(low, 1e-12):
            break
    return low, mean(low)[0]


def clip_policy_mean(u_small: np.ndarray, gain: float, gamma: float) -> float:
    """The older policy's mean output ``clamp(k * max(u, 0) ** p, 0, 1)`` on a small copy at gain
    ``gain`` (float64): the lift's numerator of :mod:`ruas_nni.model.strength` without ``tone``
    (with it, :func:`shoulder_gain_and_mean` gives it)."""
    u = np.maximum(np.asarray(u_small, np.float64), 0.0)
    return float(np.clip(gain * (u if gamma == 1.0 else u ** gamma), 0.0, 1.0).mean())
