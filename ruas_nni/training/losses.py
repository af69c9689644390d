"""Reference-free losses of RUAS (paper Sec. 3.2; spec Sec. 2).

* :func:`illumination_loss` ``L_t = 0.5 * MSE(t, y) + R(g, t)``: fidelity of the last illumination
  to the input plus the smoothness prior ``R`` (the paper's relative total variation).
* :func:`noise_loss` ``L_n = 1e-7 * MSE(x, u) + TV(x)``: the NRM output stays near the IEM output
  while its total variation shrinks.

Defaults reproduce the authors' code, including its smoothness constant ``c = -0.5 * 0.1 * 0.1``
(an operator-precedence slip for ``-1 / (2 sigma^2)``); ``smooth_sigma`` gives the intended form.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = [
    "REFERENCE_SMOOTH_COEFFICIENT",
    "SMOOTH_GUIDES",
    "smoothness_coefficient",
    "rgb_to_ycbcr",
    "smoothness",
    "total_variation",
    "illumination_loss",
    "noise_loss",
]

REFERENCE_SMOOTH_COEFFICIENT = -0.5 * 0.1 * 0.1
"""``c`` in ``w = exp(c * |g(p) - g(q)|^2)`` as the authors' code computes it (-0.005)."""

SMOOTH_GUIDES = ("rgb", "ycbcr")
"""The guide image ``g`` of the smoothness weights: the input itself (search code) or its YCbCr
transform (training code)."""

# The 12 offsets (dy, dx) with |dy|, |dx| <= 2 up to sign; each pair is visited both ways.
_HALF_OFFSETS = tuple((dy, dx) for dy in range(0, 3) for dx in range(-2, 3) if dy > 0 or dx > 0)

_YCBCR = torch.tensor([[0.257, 0.504, 0.098], [-0.148, -0.291, 0.439], [0.439, -0.368, -0.071]])
_YCBCR_BIAS = torch.tensor([16.0, 128.0, 128.0]) / 255.0


def smoothness_coefficient(sigma: float | None) -> float:
    """``c`` for a smoothness ``sigma``: ``-1 / (2 sigma^2)``; ``None`` gives the reference's -0.005."""
    if sigma is None:
        return REFERENCE_SMOOTH_COEFFICIENT
    if sigma <= 0:
        raise ValueError(f"smoothness sigma must be positive, got {sigma}")
    return -1.0 / (2.0 * sigma * sigma)


def rgb_to_ycbcr(image: torch.Tensor) -> torch.Tensor:
    """ITU-R BT.601 studio-swing YCbCr of an RGB batch in ``[0, 1]`` (per pixel)."""
    matrix = _YCBCR.to(image)
    bias = _YCBCR_BIAS.to(image).view(1, 3, 1, 1)
    return torch.einsum("oc,bchw->bohw", matrix, image) + bias


def _pairs(x: torch.Tensor, dy: int, dx: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x(p), x(p + (dy, dx)))`` for every ``p`` where both lie in the image."""
    h, w = x.shape[-2:]
    top, bottom = x[..., : h - dy, :], x[..., dy:, :]
    if dx >= 0:
        return top[..., : w - dx], bottom[..., dx:]
    return top[..., -dx:], bottom[..., : w + dx]


def smoothness(guide: torch.Tensor, t: torch.Tensor, coefficient: float = REFERENCE_SMOOTH_COEFFICIENT) -> torch.Tensor:
    """``R(g, t)``: sum over the 24 neighbour offsets ``q - p`` with ``|dy|, |dx| <= 2`` of
    ``mean(w) * mean(|t(p) - t(q)|)`` with ``w = exp(c * sum_channels (g(p) - g(q))^2)`` (spec Sec. 2).

    The weight map and the absolute differences are averaged separately (the latter over every
    element, channels included) and the two means multiplied, as the spec and the authors' code do.
    Each unordered pair of offsets contributes twice (both directions give the same value), which is
    how the authors enumerate them. Offsets that do not fit in the image are left out.
    """
    total = t.new_zeros(())
    h, w = t.shape[-2:]
    for dy, dx in _HALF_OFFSETS:
        if dy >= h or abs(dx) >= w:
            continue
        g_p, g_q = _pairs(guide, dy, dx)
        t_p, t_q = _pairs(t, dy, dx)
        weight = torch.exp(coefficient * (g_p - g_q).pow(2).sum(dim=1, keepdim=True))
        total = total + 2.0 * weight.mean() * (t_p - t_q).abs().mean()
    return total


def total_variation(x: torch.Tensor) -> torch.Tensor:
    """``2 * (mean (x(i+1,j) - x(i,j))^2 + mean (x(i,j+1) - x(i,j))^2)``, averaged over the batch
    (the authors' ``TVLoss``: sums divided by one sample's element count and by the batch size)."""
    batch = x.shape[0]
    h, w = x.shape[-2:]
    vertical = (x[..., 1:, :] - x[..., :-1, :]).pow(2).sum() / max(x[0, :, 1:, :].numel(), 1) if h > 1 else x.new_zeros(())
    horizontal = (x[..., :, 1:] - x[..., :, :-1]).pow(2).sum() / max(x[0, :, :, 1:].numel(), 1) if w > 1 else x.new_zeros(())
    return 2.0 * (vertical + horizontal) / batch


def illumination_loss(
    y: torch.Tensor,
    t: torch.Tensor,
    *,
    fidelity_weight: float = 0.5,
    smooth_weight: float = 1.0,
    smooth_sigma: float | None = None,
    guide: str = "rgb",
) -> torch.Tensor:
    """IEM loss ``L_t = 0.5 * MSE(t, y) + R(g, t)`` on the last illumination ``t`` (spec Sec. 2).

    ``guide`` picks ``g``: ``rgb`` (``g = y``, the authors' search code) or ``ycbcr`` (their training
    code). ``smooth_sigma=None`` keeps the authors' coefficient -0.005; a value uses ``-1/(2 sigma^2)``.
    """
    if guide not in SMOOTH_GUIDES:
        raise ValueError(f"unknown smoothness guide {guide!r}; expected one of {', '.join(SMOOTH_GUIDES)}")
    g = rgb_to_ycbcr(y) if guide == "ycbcr" else y
    loss = fidelity_weight * F.mse_loss(t, y)
    if smooth_weight:
        loss = loss + smooth_weight * smoothness(g, t, smoothness_coefficient(smooth_sigma))
    return loss


def noise_loss(x: torch.Tensor, u: torch.Tensor, *, fidelity_weight: float = 1e-7, tv_weight: float = 1.0) -> torch.Tensor:
    """NRM loss ``L_n = 1e-7 * MSE(x, u) + TV(x)`` of the denoised ``x`` against the IEM output ``u``."""
    return fidelity_weight * F.mse_loss(x, u) + tv_weight * total_variation(x)
