"""Full-reference image quality: PSNR and SSIM exactly as the project's reference numbers define them.

The definitions are those of ``../shared/reference/ruas_official/lol_eval15_metrics.json`` (spec
Sec. 5), which the authors' LOL checkpoint scores 16.446 dB / 0.4993 under on the 15 LOL test pairs:

* the enhanced image is **clamped to [0, 1] and rounded to 8 bits** before scoring (what a saved
  PNG holds), see :func:`quantize_8bit`;
* **PSNR** over all RGB values of one image, data range 1;
* **SSIM** with an 11 x 11 Gaussian window, sigma 1.5, the usual ``K1 = 0.01``, ``K2 = 0.03``,
  computed per RGB channel and averaged, data range 1 (torchmetrics'
  ``structural_similarity_index_measure`` defaults).

Both come from torchmetrics rather than our own arithmetic; the mean over a data set is the plain
mean of the per-image values.

A diagnostic beside them, :func:`exposure_matched`: the output scaled so that its mean equals the
ground truth's before scoring. It separates how well an enhancer exposes each image (which the
plain scores punish hard) from everything else (noise, colour, local contrast).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

__all__ = ["ImageScores", "quantize_8bit", "psnr", "ssim", "score_image", "exposure_matched", "count_parameters"]

SSIM_KERNEL_SIZE = 11
SSIM_SIGMA = 1.5
DATA_RANGE = 1.0


@dataclass(frozen=True)
class ImageScores:
    """PSNR (dB) and SSIM of one image, or their means over a data set."""

    psnr: float
    ssim: float

    def to_dict(self) -> dict[str, float]:
        return {"psnr": self.psnr, "ssim": self.ssim}


def quantize_8bit(image: torch.Tensor) -> torch.Tensor:
    """Clamp to ``[0, 1]`` and round to the nearest of the 256 8-bit levels (stays float)."""
    return torch.round(image.detach().float().clamp(0.0, 1.0) * 255.0) / 255.0


def _batched(image: torch.Tensor) -> torch.Tensor:
    if image.dim() == 3:
        return image.unsqueeze(0)
    if image.dim() != 4 or image.shape[0] != 1:
        raise ValueError(f"expected one image (3 x H x W or 1 x 3 x H x W), got shape {tuple(image.shape)}")
    return image


def _check_pair(output: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    output, target = _batched(output), _batched(target)
    if output.shape != target.shape:
        raise ValueError(f"output {tuple(output.shape)} and ground truth {tuple(target.shape)} differ in size")
    return quantize_8bit(output), target.detach().float()


def psnr(output: torch.Tensor, target: torch.Tensor) -> float:
    """PSNR in dB of one enhanced image against its ground truth (both ``3 x H x W`` in [0, 1]).

    ``output`` is clamped and rounded to 8 bits first; ``target`` is taken as it is (it was read
    from an 8-bit file)."""
    output, target = _check_pair(output, target)
    return float(peak_signal_noise_ratio(output, target, data_range=DATA_RANGE))


def ssim(output: torch.Tensor, target: torch.Tensor) -> float:
    """SSIM (Gaussian window 11, sigma 1.5, per channel then averaged, data range 1) of one image,
    after clamping and rounding ``output`` to 8 bits."""
    output, target = _check_pair(output, target)
    value = structural_similarity_index_measure(
        output, target, gaussian_kernel=True, sigma=SSIM_SIGMA, kernel_size=SSIM_KERNEL_SIZE, data_range=DATA_RANGE
    )
    return float(value)


def score_image(output: torch.Tensor, target: torch.Tensor) -> ImageScores:
    """Both metrics of one image."""
    return ImageScores(psnr(output, target), ssim(output, target))


def exposure_matched(output: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, float]:
    """``output`` with its exposure matched to ``target``: the output is clamped to ``[0, 1]`` (what
    a saved image shows) and multiplied by ``gain = mean(target) / mean(output)`` (means over all
    pixels and channels); returns the scaled image (to be clamped and rounded by :func:`score_image`)
    and ``gain``. A black output is returned unchanged with ``gain = 1``."""
    clamped = output.detach().float().clamp(0.0, 1.0)
    mean = float(clamped.mean())
    gain = float(target.detach().float().mean()) / mean if mean > 0 else 1.0
    return clamped * gain, gain


def count_parameters(module: nn.Module) -> int:
    """Number of trainable and frozen parameters of ``module`` (paper Table 2's "Size")."""
    return sum(p.numel() for p in module.parameters())
