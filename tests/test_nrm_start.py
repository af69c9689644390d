"""The NRM's starts without pretrained weights (ruas_nni/model/nrm_start.py) on real images: the
low-pass start is the 5x5 binomial for every genotype (the 3x3 one below 6 channels), the identity
start is ``x = u``."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ruas_nni.base.images import read_image
from ruas_nni.model.export import NetworkOptions, export
from ruas_nni.model.genotype import PAPER_GENOTYPE, Genotype
from ruas_nni.model.nrm_start import BINOMIAL_3X3, identity_start, lowpass_start
from ruas_nni.model.ops import OPERATION_NAMES

# every operation on some NRM edge, each in a different position than in the paper's genotype
EVERY_OP = Genotype(iem=PAPER_GENOTYPE.iem, nrm=tuple(reversed(OPERATION_NAMES)))


def _binomial_5x5(u: torch.Tensor) -> torch.Tensor:
    """``B3 * (B3 * u)`` per channel, zero padding (the stem's and the head's)."""
    kernel = BINOMIAL_3X3.view(1, 1, 3, 3).repeat(3, 1, 1, 1)
    once = F.conv2d(u, kernel, padding=1, groups=3)
    return F.conv2d(once, kernel, padding=1, groups=3)


@pytest.fixture(scope="module")
def photo(demo_data) -> torch.Tensor:
    path = sorted((demo_data.eval / "low").glob("*.png"))[0]
    return read_image(path).rgb[:, :96, :128].unsqueeze(0)


@pytest.mark.parametrize("genotype", [PAPER_GENOTYPE, EVERY_OP], ids=["paper", "every-op"])
def test_lowpass_start_is_the_binomial_filter(photo, genotype):
    net = export(genotype)
    lowpass_start(net.nrm)
    with torch.no_grad():
        out = net.nrm(photo)
    expected = _binomial_5x5(photo)
    assert torch.allclose(out, expected, atol=2e-6), float((out - expected).abs().max())
    # a real filter: it removes detail (the output differs from the input and is smoother)
    tv = lambda x: (x[..., 1:, :] - x[..., :-1, :]).abs().mean()  # noqa: E731
    assert tv(out) < 0.8 * tv(photo)


def test_identity_start_returns_the_input(photo):
    torch.manual_seed(0)
    net = export(PAPER_GENOTYPE)
    identity_start(net.nrm)
    with torch.no_grad():
        assert torch.equal(net.nrm(photo), photo)


@pytest.mark.parametrize("channels", [3, 4])
def test_a_narrow_lowpass_start_is_the_3x3_binomial(photo, channels):
    """An NRM of 3-5 channels (RUASSpace.scalable's width 3) has no room for B3 * u and u at once:
    it starts as the 3x3 binomial filter instead."""
    net = export(EVERY_OP, NetworkOptions(nrm_channels=channels))
    lowpass_start(net.nrm)
    with torch.no_grad():
        out = net.nrm(photo)
    expected = F.conv2d(photo, BINOMIAL_3X3.view(1, 1, 3, 3).repeat(3, 1, 1, 1), padding=1, groups=3)
    assert torch.allclose(out, expected, atol=2e-6), float((out - expected).abs().max())


def test_lowpass_start_needs_three_channels():
    net = export(PAPER_GENOTYPE, NetworkOptions(nrm_channels=2))
    with pytest.raises(ValueError, match="at least 3 NRM channels"):
        lowpass_start(net.nrm)


@pytest.mark.parametrize("channels", [3, 6, 12])
def test_lowpass_start_trains(photo, channels):
    """The start is not a dead end: every searched edge and the fuse receive gradients, and so does
    every channel of a wider NRM than the filter needs (all-zero, they would never move)."""
    torch.manual_seed(0)
    net = export(PAPER_GENOTYPE, NetworkOptions(nrm_channels=channels))
    lowpass_start(net.nrm)
    out = net.nrm(photo)
    (out - photo).pow(2).mean().backward()
    fuse_grads = [cell.fuse.weight.grad.abs().sum() for cell in net.nrm.cells]
    assert all(g > 0 for g in fuse_grads)
    assert net.nrm.stem.weight.grad.abs().sum() > 0
    head = net.nrm.head.weight.grad.abs().sum(dim=(0, 2, 3))  # per input channel of the head
    assert bool((head > 0).all()), head
