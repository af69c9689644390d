"""Where the NRM's weights start when no pretrained denoiser is given (not in the paper).

The authors start the NRM from a pretrained denoiser (``denoise.pt``). Without one, :func:`identity_start`
makes ``x = u`` at first, and :func:`lowpass_start` makes the NRM a fixed low-pass filter, for any
genotype: every cell passes its input through unchanged, and the stem and head together compute
``n = u - B * u`` (paper Eq. 5: ``x = u - n``), so ``x = B * u`` with ``B`` the 5x5 binomial kernel
(``[1, 4, 6, 4, 1] / 16`` in each direction, standard deviation 1 pixel). Training then adapts all
weights. On real low-light photos the IEM output's noise is spatially correlated, so
self-supervised denoising losses from single images learn little of it (docs/objectives.md); a
low-pass start keeps a known-good denoiser as the point the loss refines.
"""

from __future__ import annotations

import torch
from torch import nn

from .network import DistillationCell, NoiseRemoval
from .ops import Convolution, ResidualConvolution

__all__ = ["NRM_STARTS", "identity_start", "lowpass_start", "BINOMIAL_3X3"]

NRM_STARTS = ("identity", "lowpass", "random")
"""How an NRM without pretrained weights starts: ``x = u``, ``x = B * u``, or the layers' own initialisation."""

BINOMIAL_3X3 = torch.outer(torch.tensor([1.0, 2.0, 1.0]), torch.tensor([1.0, 2.0, 1.0])) / 16.0
"""The 3x3 binomial kernel; applied twice it is the 5x5 binomial ``B`` of :func:`lowpass_start`."""


def identity_start(nrm: NoiseRemoval) -> None:
    """``x = u`` at first: the head (the noise estimate ``n``) starts at zero; other layers keep their
    random initialisation."""
    with torch.no_grad():
        nrm.head.weight.zero_()
        nrm.head.bias.zero_()


def _transparent_cell(cell: DistillationCell) -> None:
    """Make ``cell`` return its (non-negative) input: every edge the identity, ``fuse`` reads ``d1``."""
    for name in ("e1", "e2", "e3", "e4", "e5", "e6", "e7"):
        edge = getattr(cell, name)
        if isinstance(edge, Convolution):
            weight = edge.op.weight
            weight.zero_()
            edge.op.bias.zero_()
            if not isinstance(edge, ResidualConvolution):  # conv(x) = x; a residual one is x + 0
                centre = weight.shape[-1] // 2
                for channel in range(weight.shape[0]):
                    weight[channel, channel, centre, centre] = 1.0
        elif not isinstance(edge, nn.Identity):
            raise ValueError(f"cannot make edge {name} ({type(edge).__name__}) the identity")
    cell.fuse.weight.zero_()
    cell.fuse.bias.zero_()
    for channel in range(cell.channels):  # d1 = act(e1(h)) = h for h >= 0
        cell.fuse.weight[channel, channel, 0, 0] = 1.0


def lowpass_start(nrm: NoiseRemoval) -> None:
    """``x = B * u`` at first (``B``: 5x5 binomial, see the module docstring), for any genotype.

    The stem writes ``B3 * u`` to channels 0-2 and ``u`` to channels 3-5 (both non-negative for an
    image, so the cells' LeakyReLUs pass them), the cells pass them on, and the head computes
    ``n = u - B3 * (B3 * u)``. An NRM narrower than 6 channels (3 to 5, :meth:`RUASSpace.scalable
    <search_spaces.ruas.RUASSpace.scalable>`) has no room for both: its stem passes ``u`` and its
    head computes ``n = u - B3 * u``, so it starts as the 3x3 binomial low-pass ``x = B3 * u``."""
    channels = nrm.stem.out_channels
    if channels < 3:
        raise ValueError(f"a low-pass NRM start needs at least 3 NRM channels, got {channels}")
    used = 6 if channels >= 6 else 3
    with torch.no_grad():
        for cell in nrm.cells:
            _transparent_cell(cell)
        # the stem's channels beyond those the filter uses keep their random start, and the head reads
        # none of them: the start is the filter all the same, and those channels learn (all-zero, they
        # would get no gradient, and a 12-channel NRM would train as a 6-channel one)
        nrm.stem.weight[:used].zero_()
        nrm.stem.bias[:used].zero_()
        nrm.head.weight.zero_()
        nrm.head.bias.zero_()
        for channel in range(3):
            if used == 6:
                nrm.stem.weight[channel, channel] = BINOMIAL_3X3
                nrm.stem.weight[channel + 3, channel, 1, 1] = 1.0
                nrm.head.weight[channel, channel + 3, 1, 1] = 1.0
                nrm.head.weight[channel, channel] = -BINOMIAL_3X3
            else:
                nrm.stem.weight[channel, channel, 1, 1] = 1.0
                nrm.head.weight[channel, channel] = -BINOMIAL_3X3
                nrm.head.weight[channel, channel, 1, 1] += 1.0
