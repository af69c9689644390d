"""How hard the NRM denoises one photo: its noise as the NRM will see it (not in the paper).

The NRM learns to denoise LOL's low-light captures, whose sensor noise the exposure gain lifts eight-
to tenfold. Most photos users take are less noisy at the NRM's input: brighter JPEGs lifted twofold.
There the learnt denoiser only smooths, and a smoothed edge spreads into the flat pixels beside it:
the steps that the no-reference ``post`` counts, and a colour shift (docs/tone.md, "The NRM's
strength"). So the NRM's correction ``n = u - NRM(u)`` is scaled per image by

``a = min(sigma_u / sigma_0, 1)``, ``x = u - a n``,

where ``sigma_0`` is the network option ``denoise_sigma`` and ``sigma_u = sigma(y) * lift`` estimates
the noise at the NRM's input:

* ``sigma(y)``: Immerkaer's fast estimate ("Fast noise variance estimation", CVIU 1996) on the
  whole photo's grey ``(R + G + B) / 3``: ``sqrt(pi / 2) / 6`` times the mean absolute response to
  the mask ``[[1, -2, 1], [-2, 4, -2], [1, -2, 1]]``, which cancels any plane and is blind to smooth
  shading. The mean is taken at every 8th row and every other column of the interior
  (:data:`ROW_STRIDE`, :data:`COLUMN_STRIDE`: an unbiased sample of a sixteenth of the pixels);
* ``lift``: the mean of the tone policy's output over the mean of the input, both on the small copy
  the gain is measured on (:func:`ruas_nni.model.network.exposure_gain`; the shoulder policy's mean
  comes with its gain, :func:`ruas_nni.model.tone.shoulder_gain_and_mean`), so every tile of a photo
  gets the same ``a``.

Measured with the default model (docs/tone.md): ``sigma_u`` is 0.017-0.088 on the 50 ``lol_val`` photos
(median 0.037) and 0.001-0.055 on the 119 real photos (median about 0.008).

NumPy only: the graph engines compute ``a`` without importing PyTorch.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["noise_sigma", "nrm_strength"]

_IMMERKAER = math.sqrt(math.pi / 2.0) / 6.0

ROW_STRIDE = 8
COLUMN_STRIDE = 2
"""The centres the estimate averages over: every 8th interior row, every other column (a sixteenth
of the pixels, 15,000 at 600 x 400; 0.3 ms there, instead of 7 ms for all)."""


def noise_sigma(rgb: np.ndarray, scale: float = 1.0) -> float:
    """Immerkaer's noise estimate of the grey of ``rgb`` (``H x W x 3``; values divided by ``scale`` in
    ``[0, 1]``), sampled at the centres of :data:`ROW_STRIDE` and :data:`COLUMN_STRIDE`; 0 for an
    image under 3 x 3 pixels.
    NaN when the image holds a non-finite value."""
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"noise_sigma: expected an H x W x 3 image, got shape {tuple(rgb.shape)}")
    height, width = int(rgb.shape[0]), int(rgb.shape[1])
    if height < 3 or width < 3:
        return 0.0
    count = (height - 2 + ROW_STRIDE - 1) // ROW_STRIDE  # the centres' rows: 1, 1 + ROW_STRIDE, ...
    # the grey of the rows above, at and below each sampled centre (only those rows are read)
    rows = []
    for r in range(3):
        part = rgb[r:r + ROW_STRIDE * count:ROW_STRIDE]
        rows.append(part[..., 0].astype(np.float32) + part[..., 1] + part[..., 2])  # 10x numpy's sum(axis=2)

    def columns(row: np.ndarray, c: int) -> np.ndarray:
        return row[:, c:width - 2 + c:COLUMN_STRIDE]

    top = columns(rows[0], 0) + columns(rows[0], 2) - 2.0 * columns(rows[0], 1)
    middle = 4.0 * columns(rows[1], 1) - 2.0 * (columns(rows[1], 0) + columns(rows[1], 2))
    bottom = columns(rows[2], 0) + columns(rows[2], 2) - 2.0 * columns(rows[2], 1)
    response = np.abs(top + middle + bottom, dtype=np.float32)
    return float(_IMMERKAER * float(response.mean(dtype=np.float64)) / (3.0 * float(scale)))


def nrm_strength(sigma: float, lift: float, denoise_sigma: float) -> float:
    """``a = min(sigma * lift / denoise_sigma, 1)`` (module docstring); 1 when ``sigma`` or ``lift``
    is not finite, so a diverged measurement never switches the denoiser off."""
    value = sigma * lift
    if not math.isfinite(value):
        return 1.0
    return float(min(max(value, 0.0) / denoise_sigma, 1.0))
