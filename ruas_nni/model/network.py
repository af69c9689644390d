"""The RUAS enhancement network, written once for both search and export.

Paper: Liu et al., "Retinex-inspired Unrolling with Cooperative Prior Architecture Search for
Low-light Image Enhancement", CVPR 2021. The network is the unrolled optimisation of Sec. 3.1-3.2:

* :class:`IlluminationEstimation` (IEM, Eq. 3-4): ``K`` stages that refine the illumination ``t``
  from a warm start and divide the input by it.
* :class:`NoiseRemoval` (NRM, Eq. 5): a residual denoiser over the IEM output.
* :class:`DistillationCell` (Fig. 2(d)): the searched cell both modules are made of.
* optional exposure normalisation between them (:func:`exposure_gain`, not in the paper): the IEM
  output is scaled to a fixed mean brightness before the NRM, i.e. the illumination is scaled.

Every module takes an *edge factory* ``(edge_index, channels) -> nn.Module`` that fills the seven
cell edges. The exported network (:func:`ruas_nni.model.export.export`) fills them with plain operations,
the NNI search space (:mod:`search_spaces.ruas`) with ``LayerChoice``\\ s over all candidates, so
the searched and the exported network cannot drift apart. This module never imports NNI.
"""

from __future__ import annotations

from typing import Callable, NamedTuple, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .ops import receptive_radius
from .strength import noise_sigma, nrm_strength
from .tone import (
    BLUR_RADIUS,
    ToneOptions,
    clip_policy_mean,
    dequantise,
    shoulder_curve,
    shoulder_gain_and_mean,
    small_copy_factor,
)

__all__ = [
    "EDGE_NAMES",
    "WARM_STARTS",
    "EdgeFactory",
    "DistillationCell",
    "IlluminationEstimation",
    "NoiseRemoval",
    "Enhancement",
    "RUASNet",
    "warm_start",
    "EXPOSURE_SIDE",
    "exposure_gain",
    "exposure_and_strength",
    "apply_gain",
    "apply_tone",
    "tone_radius",
]

EDGE_NAMES: tuple[str, ...] = ("e1", "e2", "e3", "e4", "e5", "e6", "e7")
"""The seven searchable edges of a distillation cell, in the order of a genotype."""

WARM_STARTS: tuple[str, ...] = ("rectified", "plain", "fixed")
"""Warm-start strategies of the paper's ablation (Fig. 6): with residual rectification,
without it (``t_hat_k = S(u_k)``), and fixed at ``t_hat_0``."""

EdgeFactory = Callable[[int, int], nn.Module]
"""``(edge_index in 0..6, channels) -> module`` filling one edge of a distillation cell."""

LEAKY_SLOPE = 0.05
T_MIN = 0.001

EXPOSURE_SIDE = 256
"""Longest side of the small copy on which :func:`exposure_gain` measures the IEM output's mean, unless
the network option ``exposure_side`` says otherwise."""

GAIN_FLOOR = 1e-3
"""Smallest mean brightness :func:`exposure_gain` divides by (an all-black image)."""


def warm_start(x: torch.Tensor) -> torch.Tensor:
    """``S(x)``: per-channel 2x2 max filter, zero padded on the bottom and right (Sec. 3.1).

    ``S(x)[i, j] = max(x[i, j], x[i+1, j], x[i, j+1], x[i+1, j+1])``; keeps the size of ``x``.
    """
    return F.max_pool2d(F.pad(x, (0, 1, 0, 1)), kernel_size=2, stride=1)


class DistillationCell(nn.Module):
    """The searched distillation cell (paper Fig. 2(d)); ``C`` channels in and out.

    ::

        d1 = act(e1(h));   r1 = act(e2(h)  + h)
        d2 = act(e3(r1));  r2 = act(e4(r1) + r1)
        d3 = act(e5(r2));  r3 = act(e6(r2) + r2)
        r4 = act(e7(r3))
        out = fuse(concat(d1, d2, d3, r4))       # fuse: 1x1 convolution 4C -> C

    ``act`` is LeakyReLU(0.05). Edges are named ``e1`` .. ``e7`` as in a genotype.
    """

    def __init__(self, channels: int, edge_factory: EdgeFactory) -> None:
        super().__init__()
        self.channels = channels
        for index, name in enumerate(EDGE_NAMES):
            self.add_module(name, edge_factory(index, channels))
        self.fuse = nn.Conv2d(4 * channels, channels, kernel_size=1, bias=True)
        self.act = nn.LeakyReLU(LEAKY_SLOPE)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        act = self.act
        d1 = act(self.e1(h))
        r1 = act(self.e2(h) + h)
        d2 = act(self.e3(r1))
        r2 = act(self.e4(r1) + r1)
        d3 = act(self.e5(r2))
        r3 = act(self.e6(r2) + r2)
        r4 = act(self.e7(r3))
        return self.fuse(torch.cat([d1, d2, d3, r4], dim=1))

    def receptive_radius(self) -> int:
        """Pixels one output pixel can see in each direction (longest chain of edges)."""
        r = [receptive_radius(getattr(self, name)) for name in EDGE_NAMES]
        return max(r[0], r[1] + r[2], r[1] + r[3] + r[4], r[1] + r[3] + r[5] + r[6])


def exposure_gain(iem: Callable[[torch.Tensor], torch.Tensor], y: torch.Tensor, exposure: float,
                  gamma: float = 1.0, tone: ToneOptions | None = None,
                  *, with_lift: bool = False, side: int = EXPOSURE_SIDE) -> torch.Tensor | tuple[torch.Tensor, list[float]]:
    """The gain ``k = E / m`` (one per image, shape ``B``) that scales the IEM output ``u`` to the
    mean brightness ``E`` = ``exposure``: ``u' = clamp(k * u, 0, 1)`` (with ``gamma`` ``p`` != 1:
    ``u' = clamp(k * u ** p, 0, 1)`` and ``m`` the mean of ``u ** p``, see :func:`apply_gain`).

    Retinex writes ``u = y / t``; ``u' = k * u = y / t'`` with ``t' = t / k``, so this is *scaling
    the illumination* (by the same factor on every pixel: its shape is the IEM's, its level is set
    by ``E``). A pixel-local network cannot tell how bright a photo ought to be, so one target
    brightness for every image is the best it can do (``docs/objectives.md``).

    ``m`` is defined on a small copy, so that it is the same for a whole image and for every tile
    of it: with ``H x W`` the size of ``y`` and ``side`` (:data:`EXPOSURE_SIDE`, 256, unless the network
    option ``exposure_side`` is set), ``f = min(ceil(max(H, W) / side), H, W)`` (an integer, at least
    1); ``y_s = avg_pool2d(y, f, stride=f)`` (non-overlapping ``f x f`` means, a border remainder of
    fewer than ``f`` rows / columns left out); ``m`` = the mean of ``iem(y_s)`` over
    channels and pixels, at least ``1e-3``. ``iem`` maps an image to its IEM output ``u``.

    ``gamma`` (not in the paper, default 1): the IEM that the reference loss trains has a nearly
    constant illumination (its ``log t`` barely follows ``log y``), so ``u`` is close to a scaled ``y``
    whose shadows stay dark; ``p < 1`` applies the tone curve ``u ** p`` that lifts them
    (``docs/objectives.md``).

    ``tone`` (the shoulder policy, :mod:`ruas_nni.model.tone`): ``iem`` maps an image to the IEM's
    unclamped ratio ``x = y / t_K``, and the gain is :func:`~ruas_nni.model.tone.solve_shoulder_gain`
    of the same small copy.

    ``with_lift``: also return each image's lift, the policy's mean output at that gain over the
    input's mean, both on the small copy (:func:`~ruas_nni.model.tone.shoulder_gain_and_mean`,
    :func:`~ruas_nni.model.tone.clip_policy_mean`; for :mod:`ruas_nni.model.strength`).
    """
    height, width = y.shape[-2:]
    factor = small_copy_factor(height, width, side)
    small = F.avg_pool2d(y, kernel_size=factor, stride=factor) if factor > 1 else y
    u = iem(small).float()
    means = small.detach().double().mean(dim=(1, 2, 3)).tolist()
    x = u.detach().double().cpu().numpy() if tone is not None or with_lift else None
    if tone is not None:
        solved = [shoulder_gain_and_mean(x[i], means[i], exposure, gamma, tone) for i in range(len(means))]
        gain = torch.tensor([g for g, _ in solved], dtype=torch.float32, device=u.device)
        outputs = [m for _, m in solved]
    else:
        mean = (u if gamma == 1.0 else u.clamp_min(0.0).pow(gamma)).mean(dim=(1, 2, 3))
        gain = float(exposure) / mean.clamp_min(GAIN_FLOOR)
        outputs = [clip_policy_mean(x[i], float(gain[i]), gamma) for i in range(len(means))] if with_lift else []
    if not with_lift:
        return gain
    return gain, [outputs[i] / max(means[i], 1e-12) for i in range(len(means))]


def exposure_and_strength(iem: Callable[[torch.Tensor], torch.Tensor], y: torch.Tensor, exposure: float,
                          gamma: float, tone: ToneOptions | None,
                          denoise_sigma: float | None, *,
                          side: int = EXPOSURE_SIDE) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(gain, strength)`` of each image of ``y``: :func:`exposure_gain` and, with ``denoise_sigma``
    (else ``None``), the NRM's strength :func:`~ruas_nni.model.strength.nrm_strength` of the whole
    image's noise (:func:`~ruas_nni.model.strength.noise_sigma`) and the gain's lift. ``side``: as
    :func:`exposure_gain`'s."""
    if denoise_sigma is None:
        return exposure_gain(iem, y, exposure, gamma, tone, side=side), None  # type: ignore[return-value]
    gain, lifts = exposure_gain(iem, y, exposure, gamma, tone, with_lift=True, side=side)  # type: ignore[misc]
    images = y.detach().float().cpu().numpy()
    strength = [nrm_strength(noise_sigma(images[i].transpose(1, 2, 0)), lifts[i], denoise_sigma)
                for i in range(len(lifts))]
    return gain, torch.tensor(strength, dtype=torch.float32, device=gain.device)


def apply_gain(u: torch.Tensor, gain: torch.Tensor, gamma: float = 1.0) -> torch.Tensor:
    """``clamp(k * u ** gamma, 0, 1)`` with one gain ``k`` per image of the batch ``u`` (see :func:`exposure_gain`)."""
    if gamma != 1.0:
        u = u.clamp_min(0.0).pow(gamma)
    return torch.clamp(u * gain.to(u.dtype).view(-1, 1, 1, 1), 0.0, 1.0)


def apply_tone(x: torch.Tensor, gain: torch.Tensor, gamma: float, tone: ToneOptions | None) -> torch.Tensor:
    """The exposure policy's step: :func:`apply_gain` of the clamped IEM output, or with ``tone``
    :func:`~ruas_nni.model.tone.shoulder_curve` of the unclamped ratio ``x`` after
    :func:`~ruas_nni.model.tone.dequantise`."""
    return apply_gain(x, gain, gamma) if tone is None else shoulder_curve(dequantise(x, tone), gain, gamma, tone)


def tone_radius(tone: ToneOptions | None) -> int:
    """Pixels the exposure policy's step sees in each direction (its dequantisation blur)."""
    return BLUR_RADIUS if tone is not None and tone.dequantise > 0 else 0


class IlluminationEstimation(nn.Module):
    """Illumination Estimation Module (IEM): ``K`` unrolled stages (paper Eq. 3-4).

    For stage ``k``: ``t_hat_0 = S(y)``; for ``k >= 1`` the warm start is

    * ``rectified``: ``t_hat_k = S(u_k) - gamma * (u_k - y)`` (residual rectification, default),
    * ``plain``: ``t_hat_k = S(u_k)``,
    * ``fixed``: ``t_hat_k = t_hat_0``;

    then ``t_k = clamp(sigmoid(cell_k(t_hat_k)), 0.001, 1)`` and ``u_{k+1} = clamp(y / t_k, 0, 1)``.
    (The paper writes ``t = t_hat - dphi(t_hat)``; the authors' code, and their checkpoints, use the
    sigmoid form above.) Each stage has its own weights; the edges' operations are shared.
    """

    def __init__(
        self,
        edge_factory: EdgeFactory,
        stages: int = 3,
        channels: int = 3,
        gamma: float = 0.5,
        warm_start: str = "rectified",
    ) -> None:
        super().__init__()
        if stages < 1:
            raise ValueError(f"IEM needs at least one stage, got {stages}")
        if warm_start not in WARM_STARTS:
            raise ValueError(f"unknown warm start {warm_start!r}; expected one of {', '.join(WARM_STARTS)}")
        if channels != 3:
            raise ValueError(f"the IEM works on RGB images: its width must be 3, got {channels}")
        self.gamma = float(gamma)
        self.warm_start = warm_start
        self.stages = nn.ModuleList(DistillationCell(channels, edge_factory) for _ in range(stages))

    def forward(self, y: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Return the IEM output ``u_K`` and the illuminations ``[t_0, ..., t_{K-1}]``."""
        t_hat_0 = warm_start(y)
        u = y
        illuminations: list[torch.Tensor] = []
        for k, cell in enumerate(self.stages):
            if k == 0 or self.warm_start == "fixed":
                t_hat = t_hat_0
            elif self.warm_start == "plain":
                t_hat = warm_start(u)
            else:
                t_hat = warm_start(u) - self.gamma * (u - y)
            t = torch.clamp(torch.sigmoid(cell(t_hat)), T_MIN, 1.0)
            u = torch.clamp(y / t, 0.0, 1.0)
            illuminations.append(t)
        return u, illuminations

    def receptive_radius(self) -> int:
        radius = 0
        for cell in self.stages:
            radius = radius + 1 + cell.receptive_radius()  # S(.) reaches one pixel further
        return radius if self.warm_start != "fixed" else 1 + max(c.receptive_radius() for c in self.stages)


class NoiseRemoval(nn.Module):
    """Noise Removal Module (NRM, paper Eq. 5): ``x = u - head(cells(stem(u)))``.

    ``stem`` is a 3x3 convolution 3 -> C, ``N`` distillation cells of width ``C``, and ``head`` a
    3x3 convolution C -> 3 that predicts the noise ``n``.
    """

    def __init__(self, edge_factory: EdgeFactory, cells: int = 3, channels: int = 6) -> None:
        super().__init__()
        if cells < 1:
            raise ValueError(f"NRM needs at least one cell, got {cells}")
        self.stem = nn.Conv2d(3, channels, kernel_size=3, padding=1, bias=True)
        self.cells = nn.ModuleList(DistillationCell(channels, edge_factory) for _ in range(cells))
        self.head = nn.Conv2d(channels, 3, kernel_size=3, padding=1, bias=True)

    def forward(self, u: torch.Tensor, strength: torch.Tensor | None = None) -> torch.Tensor:
        """``u - n``, or ``u - a n`` with ``strength`` ``a`` (one per image, :mod:`ruas_nni.model.strength`)."""
        features = self.stem(u)
        for cell in self.cells:
            features = cell(features)
        noise = self.head(features)
        if strength is not None:
            noise = noise * strength.to(noise.dtype).view(-1, 1, 1, 1)
        return u - noise

    def receptive_radius(self) -> int:
        return 2 + sum(cell.receptive_radius() for cell in self.cells)


class Enhancement(NamedTuple):
    """Everything the network computes for one batch."""

    final: torch.Tensor
    """The enhanced image ``x`` (IEM + NRM; equals ``iem`` without an NRM). Not clipped."""
    iem: torch.Tensor
    """The IEM output ``u_K`` (with exposure normalisation: ``u' = clamp(k * u_K, 0, 1)``, the NRM's input)."""
    illuminations: Sequence[torch.Tensor]
    """The illumination maps ``t_0 .. t_{K-1}``."""


class RUASForward:
    """The top-level forward, shared by :class:`RUASNet` and the NNI search space.

    Subclasses provide ``self.iem`` (an :class:`IlluminationEstimation`) and ``self.nrm`` (a
    :class:`NoiseRemoval` or ``None``), and may set ``self.exposure`` (``E``, see
    :func:`exposure_gain`; ``None`` = off, the paper's network).
    """

    iem: IlluminationEstimation
    nrm: NoiseRemoval | None
    exposure: float | None = None
    exposure_gamma: float = 1.0
    tone: ToneOptions | None = None
    denoise_sigma: float | None = None
    exposure_side: int = EXPOSURE_SIDE

    def _tone_input(self, y: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """``(what the exposure policy maps, illuminations)``: the IEM output ``u_K``, or with the
        shoulder policy (``self.tone``) the unclamped ratio ``y / t_K``."""
        u, illuminations = self.iem(y)
        return (y / illuminations[-1] if self.tone is not None else u), illuminations

    def exposure_gain(self, y: torch.Tensor) -> torch.Tensor | None:
        """The gain ``k`` per image of ``y`` (:func:`exposure_gain`), ``None`` when exposure is off."""
        if self.exposure is None:
            return None
        with torch.no_grad():
            return exposure_gain(lambda small: self._tone_input(small)[0], y, self.exposure, self.exposure_gamma,
                                 self.tone, side=self.exposure_side)

    def gain_and_strength(self, y: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """``(gain, strength)`` per image of ``y``: :meth:`exposure_gain`, and with ``denoise_sigma``
        the NRM's strength (:func:`exposure_and_strength`; else ``None``)."""
        if self.exposure is None:
            return None, None
        with torch.no_grad():
            return exposure_and_strength(lambda small: self._tone_input(small)[0], y, self.exposure,
                                         self.exposure_gamma, self.tone,
                                         self.denoise_sigma if self.nrm is not None else None,
                                         side=self.exposure_side)

    def enhance_iem(self, y: torch.Tensor) -> torch.Tensor:
        """The NRM's input for ``y``: the IEM output, exposure-normalised when exposure is on."""
        return self.enhance_parts(y)[0]

    def enhance_parts(self, y: torch.Tensor, gain: torch.Tensor | None = None) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """``(NRM input, illuminations)``: the IEM output of ``y``, normalised by ``gain`` (default:
        :meth:`exposure_gain` of ``y``; give the whole image's gain when ``y`` is a tile of it) when
        exposure is on."""
        u, illuminations = self._tone_input(y)
        if gain is None:
            gain = self.exposure_gain(y)
        if gain is not None:
            u = apply_tone(u, gain, self.exposure_gamma, self.tone)
        return u, illuminations

    def enhance(self, y: torch.Tensor, gain: torch.Tensor | None = None,
                strength: torch.Tensor | None = None) -> Enhancement:
        """Run the whole network on ``y`` (B x 3 x H x W in [0, 1]); return all outputs.

        With exposure on, the IEM output is scaled by ``gain`` (default: :meth:`exposure_gain` of
        ``y``; give the whole image's gain when ``y`` is a tile of it) before the NRM. With
        ``denoise_sigma``, the NRM's correction is scaled by ``strength`` (default: :meth:`gain_and_strength`'s
        of ``y``; give the whole image's with a tile).
        """
        if self.denoise_sigma is not None and self.nrm is not None and self.exposure is not None and strength is None:
            measured_gain, strength = self.gain_and_strength(y)
            gain = measured_gain if gain is None else gain
        u, illuminations = self.enhance_parts(y, gain)
        x = self.nrm(u, strength) if self.nrm is not None else u
        return Enhancement(x, u, illuminations)

    def forward(self, y: torch.Tensor, gain: torch.Tensor | None = None,
                strength: torch.Tensor | None = None) -> torch.Tensor:
        """The enhanced image ``x`` (not clipped); see :meth:`enhance` for the IEM output."""
        return self.enhance(y, gain, strength).final

    def receptive_radius(self, stage: str = "final") -> int:
        """Pixels one output pixel of ``stage`` (``final`` or ``iem``: the NRM's input) can see in each
        direction: the halo that makes tiling exact."""
        radius = self.iem.receptive_radius()
        if self.exposure is not None:
            radius += tone_radius(self.tone)
        if stage == "final" and self.nrm is not None:
            radius += self.nrm.receptive_radius()
        return radius


class RUASNet(RUASForward, nn.Module):
    """The RUAS enhancement network: IEM then (optionally) NRM, in plain PyTorch.

    Build one from a genotype with :func:`ruas_nni.model.export.export`; this constructor takes edge
    factories so that the NNI search space can reuse it.
    """

    def __init__(
        self,
        iem_edges: EdgeFactory,
        nrm_edges: EdgeFactory | None,
        *,
        iem_stages: int = 3,
        nrm_cells: int = 3,
        iem_channels: int = 3,
        nrm_channels: int = 6,
        gamma: float = 0.5,
        warm_start: str = "rectified",
        exposure: float | None = None,
        exposure_gamma: float = 1.0,
        tone: ToneOptions | None = None,
        denoise_sigma: float | None = None,
        exposure_side: int = EXPOSURE_SIDE,
    ) -> None:
        nn.Module.__init__(self)
        self.exposure = exposure
        self.exposure_gamma = float(exposure_gamma)
        self.tone = tone
        self.denoise_sigma = denoise_sigma if exposure is not None else None
        self.exposure_side = int(exposure_side)
        self.iem = IlluminationEstimation(iem_edges, iem_stages, iem_channels, gamma, warm_start)
        self.nrm = NoiseRemoval(nrm_edges, nrm_cells, nrm_channels) if nrm_edges is not None else None
