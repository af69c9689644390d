"""Reference-free losses of RUAS (paper Sec. 3.2; spec Sec. 2).

* :func:`illumination_loss` ``L_t = 0.5 * MSE(t, y) + R(g, t)``: fidelity of the last illumination
  to the input plus the smoothness prior ``R`` (the paper's relative total variation).
* :func:`noise_loss` ``L_n = 1e-7 * MSE(x, u) + TV(x)``: the NRM output stays near the IEM output
  while its total variation shrinks.

Defaults reproduce the authors' code, including its smoothness constant ``c = -0.5 * 0.1 * 0.1``
(an operator-precedence slip for ``-1 / (2 sigma^2)``); ``smooth_sigma`` gives the intended form.

Beyond the reference (the ``exposure_denoise`` objective of ``ruas-nni train``, see
``docs/objectives.md``):

* :func:`exposure_control` (Zero-DCE, Guo et al., CVPR 2020, "exposure control loss"): the grey level
  of the enhanced image, averaged over non-overlapping patches, is pulled to a well-exposed level
  ``E``. For RUAS's IEM ``u = y / t``, so the term sets how far ``t`` lies below ``y``;
  :func:`illumination_exposure` is the form that works for RUAS (block means of ``y`` over block
  means of ``t``), see its docstring.
* :func:`color_constancy` (Zero-DCE's "colour constancy loss", a grey-world prior): the mean of each
  colour channel of the enhanced image should agree.
* :func:`illumination_bound` (the Retinex bound ``t >= y``, i.e. reflectance ``<= 1``, with which LIME,
  Guo et al., TIP 2017, starts its illumination): the IEM output ``u = clamp(y / t, 0, 1)`` clips
  wherever ``t`` falls below ``y``; the term penalises that headroom lost.
* :func:`neighbor2neighbor_loss` (Huang et al., "Neighbor2Neighbor: Self-Supervised Denoising from
  Single Noisy Images", CVPR 2021) and :func:`zero_shot_n2n_loss` (Mansour & Heckel, "Zero-Shot
  Noise2Noise: Efficient Image Denoising without any Data", CVPR 2023): self-supervised denoising of
  one noisy image by predicting one sub-sampled copy of it from another, whose noise is (nearly)
  independent. They train the NRM to remove the camera noise that ``1 / t`` amplifies, where the
  reference loss ``TV(x) + 1e-7 MSE(x, u)`` is minimised by a flat image.
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
    "DENOISERS",
    "EXPOSURE_MODES",
    "exposure_control",
    "illumination_exposure",
    "color_constancy",
    "illumination_bound",
    "add_exposure_denoise_iem_terms",
    "neighbor_subsample",
    "neighbor2neighbor_loss",
    "diagonal_downsample",
    "zero_shot_n2n_loss",
    "denoise_loss",
]

EXPOSURE_MODES = ("illumination", "output")
"""Where the exposure term looks: :func:`illumination_exposure` (block means of ``y`` over ``t``) or
:func:`exposure_control` on the IEM output ``u`` (Zero-DCE's form)."""

DENOISERS = ("neighbor2neighbor", "zsn2n", "fidelity")
"""Denoising losses for the NRM from single noisy images: :func:`neighbor2neighbor_loss`,
:func:`zero_shot_n2n_loss`, and ``fidelity`` = ``MSE(f(u), u)``, which with a TV weight ``lambda``
beside it is Tikhonov regularisation (the authors' ``L_n`` with fidelity weight ``1 / lambda``
instead of ``1e-7``): its optimum is a low-pass of ``u``, not a flat image (docs/objectives.md)."""

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
    fidelity_gamma: float = 1.0,
) -> torch.Tensor:
    """IEM loss ``L_t = 0.5 * MSE(t, y) + R(g, t)`` on the last illumination ``t`` (spec Sec. 2).

    ``guide`` picks ``g``: ``rgb`` (``g = y``, the authors' search code) or ``ycbcr`` (their training
    code). ``smooth_sigma=None`` keeps the authors' coefficient -0.005; a value uses ``-1/(2 sigma^2)``.
    ``fidelity_gamma`` ``a`` != 1 (not in the reference) pulls ``t`` to ``y ** a`` instead of ``y``, so that
    ``u = y / t`` tends to ``y ** (1 - a)``: a tone curve that lifts the shadows (``docs/objectives.md``).
    """
    if guide not in SMOOTH_GUIDES:
        raise ValueError(f"unknown smoothness guide {guide!r}; expected one of {', '.join(SMOOTH_GUIDES)}")
    g = rgb_to_ycbcr(y) if guide == "ycbcr" else y
    target = y if fidelity_gamma == 1.0 else y.clamp_min(0.0).pow(fidelity_gamma)
    loss = fidelity_weight * F.mse_loss(t, target)
    if smooth_weight:
        loss = loss + smooth_weight * smoothness(g, t, smoothness_coefficient(smooth_sigma))
    return loss


def noise_loss(x: torch.Tensor, u: torch.Tensor, *, fidelity_weight: float = 1e-7, tv_weight: float = 1.0) -> torch.Tensor:
    """NRM loss ``L_n = 1e-7 * MSE(x, u) + TV(x)`` of the denoised ``x`` against the IEM output ``u``."""
    return fidelity_weight * F.mse_loss(x, u) + tv_weight * total_variation(x)


# --------------------------------------------------------------------------------------------
# beyond the reference: exposure, colour, self-supervised denoising


def exposure_control(u: torch.Tensor, level: float = 0.5, patch: int = 16) -> torch.Tensor:
    """Zero-DCE's exposure control term: ``mean_k (Y_k - E)^2`` where ``Y_k`` is the mean grey level
    (mean of R, G, B) of the ``k``-th non-overlapping ``patch x patch`` block of ``u`` and ``E`` is
    ``level``. Blocks that do not fit at the right / bottom border are left out; ``patch`` larger
    than the image uses the whole image as one block. (Zero-DCE's paper writes ``|Y_k - E|``; its
    code squares the difference, as here.)
    """
    grey = u.mean(dim=1, keepdim=True)
    h, w = grey.shape[-2:]
    size = max(1, min(patch, h, w))
    means = F.avg_pool2d(grey, kernel_size=size, stride=size)
    return (means - level).pow(2).mean()


def illumination_exposure(y: torch.Tensor, t: torch.Tensor, level: float = 0.5, patch: int = 16) -> torch.Tensor:
    """Exposure control through the illumination (this project's variant of Zero-DCE's term for
    RUAS's ``u = y / t``): ``mean_k (Y_k / T_k - E)^2`` where ``Y_k`` and ``T_k`` are the mean grey
    levels of input ``y`` and illumination ``t`` over the ``k``-th non-overlapping ``patch x patch``
    block (``patch`` larger than the image: one block, a global exposure).

    ``Y_k / T_k`` is the exposure the block gets from ``u = y / t`` when ``t`` is smooth. Unlike
    :func:`exposure_control` on ``u``, whose gradient ``-y / t^2`` per pixel drives the illumination
    of the darkest pixels to its floor (saturating their amplified noise), this gradient is the same
    for every pixel of a block: the term sets the level of ``t``, the smoothness prior its shape.
    """
    h, w = t.shape[-2:]
    size = max(1, min(patch, h, w))
    y_means = F.avg_pool2d(y.mean(dim=1, keepdim=True), kernel_size=size, stride=size)
    t_means = F.avg_pool2d(t.mean(dim=1, keepdim=True), kernel_size=size, stride=size)
    return (y_means / t_means.clamp_min(1e-6) - level).pow(2).mean()


def color_constancy(u: torch.Tensor) -> torch.Tensor:
    """Zero-DCE's colour constancy (grey-world) term: ``sum over channel pairs (p, q) of
    (J_p - J_q)^2`` with ``J_c`` the mean of channel ``c`` of each image, averaged over the batch."""
    means = u.mean(dim=(2, 3))  # B x 3
    r, g, b = means[:, 0], means[:, 1], means[:, 2]
    return ((r - g).pow(2) + (r - b).pow(2) + (g - b).pow(2)).mean()


def illumination_bound(y: torch.Tensor, t: torch.Tensor, floor: float = 1e-4) -> torch.Tensor:
    """The Retinex bound ``t >= y`` as a penalty: ``mean relu(log y - log t)`` over pixels and channels.

    The reflectance ``y / t`` of a scene lies in ``[0, 1]``, so the illumination is at least the
    observed image (LIME, Guo et al., TIP 2017, estimates it from ``max_c y``). RUAS's IEM clips its
    output ``u = clamp(y / t, 0, 1)``, so wherever ``t < y`` the detail there is lost. ``L_t``'s
    fidelity ``MSE(t, y)`` pulls ``t`` onto ``y`` from both sides; this hinge penalises only the side
    that clips, by how many stops (natural log) it clips, the same for dark and bright pixels.
    ``floor`` keeps the logarithm finite on black pixels.
    """
    return F.relu(torch.log(y.clamp_min(floor)) - torch.log(t.clamp_min(floor))).mean()


def add_exposure_denoise_iem_terms(
    loss: torch.Tensor,
    y: torch.Tensor,
    t: torch.Tensor,
    u: torch.Tensor | None = None,
    *,
    exposure_weight: float = 0.0,
    exposure_level: float = 0.5,
    exposure_patch: int = 16,
    exposure_mode: str = "illumination",
    color_weight: float = 0.0,
    bound_weight: float = 0.0,
) -> torch.Tensor:
    """``loss`` (the IEM's ``L_t``) plus the IEM terms of the ``exposure_denoise`` objective, each only
    when its weight is non-zero, added in this order: the exposure term (:func:`illumination_exposure`
    on ``y`` and ``t``, or :func:`exposure_control` on ``u`` for ``exposure_mode="output"``),
    :func:`color_constancy` of ``u`` and :func:`illumination_bound` of ``y`` and ``t``. ``t`` is the
    last illumination ``t_K`` and ``u`` the raw IEM output ``u_K`` (``None``: recomputed as
    ``clamp(y / t_K, 0, 1)``, the IEM's last step, where a term needs it). Training and the search
    both call this, so the two optimise the same objective."""
    if exposure_mode not in EXPOSURE_MODES:
        raise ValueError(f"unknown exposure mode {exposure_mode!r}; expected one of {', '.join(EXPOSURE_MODES)}")
    needs_u = color_weight or (exposure_weight and exposure_mode == "output")
    if needs_u and u is None:
        u = torch.clamp(y / t, 0.0, 1.0)
    if exposure_weight:
        if exposure_mode == "illumination":
            exposure = illumination_exposure(y, t, exposure_level, exposure_patch)
        else:
            exposure = exposure_control(u, exposure_level, exposure_patch)
        loss = loss + exposure_weight * exposure
    if color_weight:
        loss = loss + color_weight * color_constancy(u)
    if bound_weight:
        loss = loss + bound_weight * illumination_bound(y, t)
    return loss


def _cells(x: torch.Tensor) -> torch.Tensor:
    """``x`` (B x C x H x W, H and W cropped to even) as B x C x H/2 x W/2 x 4: the 2 x 2 cells,
    pixels in the order top-left, top-right, bottom-left, bottom-right."""
    b, c, h, w = x.shape
    x = x[..., : h - h % 2, : w - w % 2]
    x = x.reshape(b, c, h // 2, 2, w // 2, 2).permute(0, 1, 2, 4, 3, 5)
    return x.reshape(b, c, h // 2, w // 2, 4)


# the eight ordered pairs of 4-neighbours inside a 2 x 2 cell (indices as in _cells)
_NEIGHBOUR_PAIRS = torch.tensor([[0, 1], [1, 0], [0, 2], [2, 0], [1, 3], [3, 1], [2, 3], [3, 2]])


def neighbor_subsample(x: torch.Tensor, choice: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Neighbor2Neighbor's random neighbour sub-sampler: in every 2 x 2 cell, ``g1`` takes one pixel
    and ``g2`` one of its two horizontal / vertical neighbours in that cell. ``choice`` (B x H/2 x
    W/2 integers in ``0..7``) picks the ordered pair per cell; the same choice applies to every
    channel, so ``g1(f(u))`` and ``g1(u)`` sample the same pixels when given the same ``choice``."""
    cells = _cells(x)
    pairs = _NEIGHBOUR_PAIRS.to(choice.device)[choice]  # B x h x w x 2
    first = pairs[..., 0].unsqueeze(1).unsqueeze(-1).expand(-1, x.shape[1], -1, -1, 1)
    second = pairs[..., 1].unsqueeze(1).unsqueeze(-1).expand(-1, x.shape[1], -1, -1, 1)
    return cells.gather(-1, first).squeeze(-1), cells.gather(-1, second).squeeze(-1)


def neighbor2neighbor_loss(
    denoiser,
    u: torch.Tensor,
    *,
    gamma: float = 2.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Neighbor2Neighbor (Huang et al., CVPR 2021) on one batch of noisy images ``u``:
    ``||f(g1(u)) - g2(u)||^2 + gamma * ||f(g1(u)) - g2(u) - (g1(f(u)) - g2(f(u)))||^2`` (both as
    means), with ``f(u)`` in the regulariser computed without gradient, as the paper does.

    ``g1, g2``: :func:`neighbor_subsample` with one random neighbour pair per 2 x 2 cell, drawn from
    ``generator`` (on the CPU) so that training stays reproducible.
    """
    b, _, h, w = u.shape
    if h < 2 or w < 2:
        return u.new_zeros(())
    choice = torch.randint(0, len(_NEIGHBOUR_PAIRS), (b, h // 2, w // 2), generator=generator).to(u.device)
    g1_u, g2_u = neighbor_subsample(u, choice)
    prediction = denoiser(g1_u)
    residual = prediction - g2_u
    loss = residual.pow(2).mean()
    if gamma:
        with torch.no_grad():
            g1_f, g2_f = neighbor_subsample(denoiser(u), choice)
        loss = loss + gamma * (residual - (g1_f - g2_f)).pow(2).mean()
    return loss


def diagonal_downsample(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero-Shot Noise2Noise's two fixed downsamplers: per 2 x 2 cell, the mean of the main diagonal
    (top-left, bottom-right) and of the anti-diagonal (top-right, bottom-left)."""
    cells = _cells(x)
    return 0.5 * (cells[..., 0] + cells[..., 3]), 0.5 * (cells[..., 1] + cells[..., 2])


def zero_shot_n2n_loss(denoiser, u: torch.Tensor, *, consistency: float = 1.0) -> torch.Tensor:
    """Zero-Shot Noise2Noise (Mansour & Heckel, CVPR 2023) on noisy images ``u`` with the
    denoiser ``f``: the residual term ``(||f(D1 u) - D2 u||^2 + ||f(D2 u) - D1 u||^2) / 2`` (each
    half-resolution copy predicts the other) plus ``consistency`` times the term
    ``(||f(D1 u) - D1 f(u)||^2 + ||f(D2 u) - D2 f(u)||^2) / 2`` (denoising commutes with
    downsampling); ``D1, D2`` = :func:`diagonal_downsample`, all squared norms as means.
    """
    h, w = u.shape[-2:]
    if h < 2 or w < 2:
        return u.new_zeros(())
    d1, d2 = diagonal_downsample(u)
    f1, f2 = denoiser(d1), denoiser(d2)
    loss = 0.5 * ((f1 - d2).pow(2).mean() + (f2 - d1).pow(2).mean())
    if consistency:
        full_1, full_2 = diagonal_downsample(denoiser(u))
        loss = loss + consistency * 0.5 * ((f1 - full_1).pow(2).mean() + (f2 - full_2).pow(2).mean())
    return loss


def denoise_loss(denoiser, u: torch.Tensor, method: str = "neighbor2neighbor", *, consistency: float = 2.0,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """The denoising loss ``method`` (one of :data:`DENOISERS`) of ``denoiser`` on ``u``; ``consistency``
    is Neighbor2Neighbor's ``gamma`` or Zero-Shot Noise2Noise's consistency weight (unused by ``fidelity``)."""
    if method == "neighbor2neighbor":
        return neighbor2neighbor_loss(denoiser, u, gamma=consistency, generator=generator)
    if method == "zsn2n":
        return zero_shot_n2n_loss(denoiser, u, consistency=consistency)
    if method == "fidelity":
        return (denoiser(u) - u).pow(2).mean()
    raise ValueError(f"unknown denoising loss {method!r}; expected one of {', '.join(DENOISERS)}")
