"""Every loss term of RUAS pinned against independent values (spec Sec. 2, the losses' docstrings).

The oracle below is plain numpy, written from the formulas (not from ``ruas_nni.training.losses``): explicit
loops over the 24 neighbour offsets and over pixel pairs, float64 throughout. Hand-computed tiny
cases pin the numbers themselves, so that a changed constant (the smoothness coefficient, a
fidelity weight, the factor 2 of TV) or a dropped term (TV's horizontal part) fails.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from ruas_nni.model.network import Enhancement
from ruas_nni.training import losses
from ruas_nni.training.losses import (
    REFERENCE_SMOOTH_COEFFICIENT,
    illumination_loss,
    noise_loss,
    rgb_to_ycbcr,
    smoothness,
    smoothness_coefficient,
    total_variation,
)

pytestmark = pytest.mark.usefixtures("one_thread")

# --------------------------------------------------------------------------------------------
# The oracle (numpy, float64, from the formulas).

OFFSETS = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3) if (dy, dx) != (0, 0)]


def np_smoothness(g: np.ndarray, t: np.ndarray, c: float) -> float:
    """R(g, t) = sum over the 24 offsets q - p with |dy|,|dx| <= 2 of mean(w) * mean(|t(p) - t(q)|),
    w = exp(c * sum_channels (g(p) - g(q))^2); p, q both inside the image."""
    _, _, h, w = t.shape
    total = 0.0
    for dy, dx in OFFSETS:
        weights, diffs = [], []
        for i in range(h):
            for j in range(w):
                qi, qj = i + dy, j + dx
                if not (0 <= qi < h and 0 <= qj < w):
                    continue
                weights.append(np.exp(c * ((g[:, :, i, j] - g[:, :, qi, qj]) ** 2).sum(axis=1)))  # per batch item
                diffs.append(np.abs(t[:, :, i, j] - t[:, :, qi, qj]))  # per batch item and channel
        if not weights:
            continue
        total += float(np.mean(weights)) * float(np.mean(diffs))
    return total


def np_tv(x: np.ndarray) -> float:
    """2 * (mean squared vertical + mean squared horizontal differences of one sample) / batch,
    the sums taken over the whole batch (authors' TVLoss)."""
    b, c, h, w = x.shape
    vertical = sum((x[n, k, i + 1, j] - x[n, k, i, j]) ** 2 for n in range(b) for k in range(c)
                   for i in range(h - 1) for j in range(w))
    horizontal = sum((x[n, k, i, j + 1] - x[n, k, i, j]) ** 2 for n in range(b) for k in range(c)
                     for i in range(h) for j in range(w - 1))
    v = vertical / (c * (h - 1) * w) if h > 1 else 0.0
    hz = horizontal / (c * h * (w - 1)) if w > 1 else 0.0
    return 2.0 * (v + hz) / b


def np_ycbcr(rgb: np.ndarray) -> np.ndarray:
    """BT.601 studio swing: Y = 16 + 65.738 R/256 ..., written with the usual 0..1 coefficients."""
    r, g, b = rgb[:, 0], rgb[:, 1], rgb[:, 2]
    y = 16 / 255 + 0.257 * r + 0.504 * g + 0.098 * b
    cb = 128 / 255 - 0.148 * r - 0.291 * g + 0.439 * b
    cr = 128 / 255 + 0.439 * r - 0.368 * g - 0.071 * b
    return np.stack([y, cb, cr], axis=1)


def np_mse(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean((a - b) ** 2))


def np_illumination(y: np.ndarray, t: np.ndarray, c: float = -0.005, guide: str = "rgb") -> float:
    g = np_ycbcr(y) if guide == "ycbcr" else y
    return 0.5 * np_mse(t, y) + np_smoothness(g, t, c)


def np_noise(x: np.ndarray, u: np.ndarray) -> float:
    return 1e-7 * np_mse(x, u) + np_tv(x)


YCBCR_REL = 1e-7
"""The library keeps the YCbCr matrix in float32 (its entries are not exact in float64)."""


def _t(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a))


def _rand(rng: np.random.Generator, *shape: int, scale: float = 1.0) -> np.ndarray:
    return rng.random(shape) * scale


# --------------------------------------------------------------------------------------------
# Constants.


def test_smoothness_constants():
    # -0.5 * 0.1 * 0.1 as the authors compute it (one ulp from -0.005).
    assert REFERENCE_SMOOTH_COEFFICIENT == pytest.approx(-0.005, rel=1e-12)
    assert smoothness_coefficient(None) == pytest.approx(-0.005, rel=1e-12)
    assert smoothness_coefficient(0.1) == pytest.approx(-50.0, rel=1e-12)
    assert smoothness_coefficient(2.0) == pytest.approx(-0.125, rel=1e-12)
    with pytest.raises(ValueError):
        smoothness_coefficient(0.0)


def test_the_24_offsets():
    """The smoothness visits 12 half-offsets, each counted twice: every offset with |dy|, |dx| <= 2."""
    half = set(losses._HALF_OFFSETS)
    assert len(half) == 12
    both = half | {(-dy, -dx) for dy, dx in half}
    assert both == set(OFFSETS)


# --------------------------------------------------------------------------------------------
# Hand-computed cases (numbers written out).


def test_tv_of_a_3x3_ramp_by_hand():
    # x = [[0,1,2],[3,4,5],[6,7,8]] / 8: vertical differences 3/8 (6 of them), horizontal 1/8 (6).
    # TV = 2 * ((3/8)^2 + (1/8)^2) / 1 = 2 * (9 + 1) / 64 = 0.3125.
    x = torch.arange(9, dtype=torch.float64).view(1, 1, 3, 3) / 8
    assert total_variation(x).item() == pytest.approx(0.3125, rel=1e-12, abs=0)
    # Transposed: the same (each direction on its own below).
    assert total_variation(x.transpose(-1, -2)).item() == pytest.approx(0.3125, rel=1e-12, abs=0)


def test_tv_horizontal_and_vertical_terms_by_hand():
    # Columns differ, rows equal: only the horizontal term. x = [[0, 1, 3]] * 2 rows, 1 channel.
    # horizontal diffs^2: 1, 4 per row -> sum 10 over 2 rows, divided by 1*2*2 = 4 -> 2.5; TV = 5.
    x = torch.tensor([[[[0.0, 1.0, 3.0], [0.0, 1.0, 3.0]]]], dtype=torch.float64)
    assert total_variation(x).item() == pytest.approx(5.0, rel=1e-12)
    # Rows differ only: the vertical term, same value.
    assert total_variation(x.transpose(-1, -2)).item() == pytest.approx(5.0, rel=1e-12)
    # A batch of two identical samples: sums double, divided by batch 2 -> same 5.0.
    assert total_variation(torch.cat([x, x])).item() == pytest.approx(5.0, rel=1e-12)
    # Two channels, second constant: sum stays, element count of a sample doubles -> 2.5.
    two = torch.cat([x, torch.zeros_like(x)], dim=1)
    assert total_variation(two).item() == pytest.approx(2.5, rel=1e-12)


def test_smoothness_of_a_row_by_hand():
    # One row [0, 1, 3], guide = t: only offsets (0, +-1), (0, +-2) fit.
    #   (0, 1): |dt| = 1, 2 -> mean 1.5;  w = exp(-0.005 * 1), exp(-0.005 * 4) -> mean of both
    #   (0, 2): |dt| = 3     -> mean 3;    w = exp(-0.005 * 9)
    # R = 2 * (1.5 * (e^-0.005 + e^-0.02) / 2 + 3 * e^-0.045) = 8.6988...
    row = torch.tensor([[[[0.0, 1.0, 3.0]]]], dtype=torch.float64)
    expected = 2 * (1.5 * (math.exp(-0.005) + math.exp(-0.02)) / 2 + 3 * math.exp(-0.045))
    assert expected == pytest.approx(8.698802, abs=1e-6)
    assert smoothness(row, row).item() == pytest.approx(expected, rel=1e-12)
    # The intended sigma 0.5 (c = -2): same pairs, sharper weights.
    expected_sigma = 2 * (1.5 * (math.exp(-2) + math.exp(-8)) / 2 + 3 * math.exp(-18))
    assert smoothness(row, row, smoothness_coefficient(0.5)).item() == pytest.approx(expected_sigma, rel=1e-12)


def test_smoothness_of_a_3x3_image_by_hand():
    # t = guide = 1 channel, one bright centre pixel (value 2) on zeros.
    # Offsets with |dy|,|dx| <= 1 (8 of them): pairs that fit: 6 for (0,+-1),(+-1,0), 4 for diagonals;
    #   among them those touching the centre: 2 (axis) / 2 (diagonal) with |dt| = 2, w = exp(-0.005*4).
    #   axis:     mean w = (2 e^-0.02 + 4) / 6, mean |dt| = 4/6
    #   diagonal: mean w = (2 e^-0.02 + 2) / 4, mean |dt| = 4/4
    # Offsets with max(|dy|,|dx|) = 2 never touch the centre with a partner inside: |dt| = 0.
    t = torch.zeros(1, 1, 3, 3, dtype=torch.float64)
    t[0, 0, 1, 1] = 2.0
    e = math.exp(-0.02)
    expected = 4 * ((2 * e + 4) / 6 * 4 / 6) + 4 * ((2 * e + 2) / 4 * 1.0)
    assert smoothness(t, t).item() == pytest.approx(expected, rel=1e-12)
    assert np_smoothness(t.numpy(), t.numpy(), -0.005) == pytest.approx(expected, rel=1e-12)


def test_ycbcr_of_primaries_by_hand():
    colours = torch.tensor([[0.0, 0, 0], [1, 1, 1], [1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype=torch.float64)
    image = colours.T.reshape(1, 3, 1, 5)
    got = rgb_to_ycbcr(image)[0, :, 0].T
    expected = torch.tensor([
        [16 / 255, 128 / 255, 128 / 255],
        [16 / 255 + 0.859, 128 / 255, 128 / 255],
        [16 / 255 + 0.257, 128 / 255 - 0.148, 128 / 255 + 0.439],
        [16 / 255 + 0.504, 128 / 255 - 0.291, 128 / 255 - 0.368],
        [16 / 255 + 0.098, 128 / 255 + 0.439, 128 / 255 - 0.071],
    ], dtype=torch.float64)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)


def test_noise_loss_fidelity_weight_by_hand():
    # A constant x has TV 0: L_n = 1e-7 * MSE(x, u) = 1e-7 * 0.25.
    x = torch.full((1, 3, 4, 4), 0.5, dtype=torch.float64)
    u = torch.zeros_like(x)
    assert noise_loss(x, u).item() == pytest.approx(0.25e-7, rel=1e-12)
    assert noise_loss(x, u, fidelity_weight=2.0, tv_weight=0.0).item() == pytest.approx(0.5, rel=1e-12)


def test_illumination_loss_fidelity_weight_by_hand():
    # A constant t has no smoothness term: L_t = 0.5 * MSE(t, y).
    y = torch.full((1, 3, 3, 3), 0.2, dtype=torch.float64)
    t = torch.full_like(y, 0.6)
    assert illumination_loss(y, t).item() == pytest.approx(0.5 * 0.16, rel=1e-12)
    assert illumination_loss(y, t, fidelity_weight=1.0).item() == pytest.approx(0.16, rel=1e-12)


# --------------------------------------------------------------------------------------------
# Random inputs against the oracle.


@pytest.mark.parametrize("shape", [(2, 3, 7, 6), (1, 3, 2, 9), (1, 3, 9, 1), (3, 1, 5, 5)])
def test_tv_matches_the_oracle(shape):
    rng = np.random.default_rng(sum(shape))
    x = _rand(rng, *shape)
    assert total_variation(_t(x)).item() == pytest.approx(np_tv(x), rel=1e-12)


@pytest.mark.parametrize("shape,scale", [((2, 3, 6, 7), 1.0), ((1, 3, 3, 2), 6.0), ((2, 3, 1, 5), 3.0),
                                         ((1, 3, 8, 8), 12.0)])
@pytest.mark.parametrize("sigma", [None, 0.3, 4.0])
def test_smoothness_matches_the_oracle(shape, scale, sigma):
    """``scale`` > 1 makes guide differences large, so that the weights are far from 1 and the
    coefficient matters (with c = -0.005 and images in [0, 1] every weight is nearly 1)."""
    rng = np.random.default_rng(len(shape) + int(scale))
    g, t = _rand(rng, *shape, scale=scale), _rand(rng, *shape)
    c = -0.005 if sigma is None else -1 / (2 * sigma * sigma)
    got = smoothness(_t(g), _t(t), smoothness_coefficient(sigma)).item()
    assert got == pytest.approx(np_smoothness(g, t, c), rel=1e-10)


def test_default_coefficient_matters_on_bright_guides():
    """-0.005 and -0.006 are distinguishable at the tolerance used above."""
    rng = np.random.default_rng(0)
    g, t = _rand(rng, 1, 3, 6, 6, scale=10.0), _rand(rng, 1, 3, 6, 6)
    a, b = np_smoothness(g, t, -0.005), np_smoothness(g, t, -0.006)
    assert abs(a - b) / a > 1e-3
    assert smoothness(_t(g), _t(t)).item() == pytest.approx(a, rel=1e-10)


@pytest.mark.parametrize("guide", ["rgb", "ycbcr"])
@pytest.mark.parametrize("sigma", [None, 0.2])
def test_illumination_loss_matches_the_oracle(guide, sigma):
    rng = np.random.default_rng(7)
    y, t = _rand(rng, 2, 3, 6, 5, scale=4.0), _rand(rng, 2, 3, 6, 5)
    c = -0.005 if sigma is None else -1 / (2 * sigma * sigma)
    got = illumination_loss(_t(y), _t(t), smooth_sigma=sigma, guide=guide).item()
    assert got == pytest.approx(np_illumination(y, t, c, guide), rel=YCBCR_REL if guide == "ycbcr" else 1e-10)
    # The smoothness weight and switching it off.
    plain = illumination_loss(_t(y), _t(t), smooth_weight=0.0, smooth_sigma=sigma, guide=guide).item()
    assert plain == pytest.approx(0.5 * np_mse(t, y), rel=1e-12)


def test_ycbcr_matches_the_oracle():
    rng = np.random.default_rng(3)
    rgb = _rand(rng, 2, 3, 4, 5)
    np.testing.assert_allclose(rgb_to_ycbcr(_t(rgb)).numpy(), np_ycbcr(rgb), rtol=0, atol=1e-6)


def test_noise_loss_matches_the_oracle():
    rng = np.random.default_rng(11)
    x, u = _rand(rng, 2, 3, 5, 6), _rand(rng, 2, 3, 5, 6, scale=30.0)  # large MSE: the 1e-7 term shows
    assert noise_loss(_t(x), _t(u)).item() == pytest.approx(np_noise(x, u), rel=1e-12)
    assert 1e-7 * np_mse(x, u) > 1e-6 * np_tv(x)  # the fidelity term is above the tolerance


# --------------------------------------------------------------------------------------------
# The search evaluator's use of the losses.


class _StubModel(torch.nn.Module):
    """A fixed "network": ``iem(y)`` and ``enhance(y)`` return given tensors, recording calls."""

    def __init__(self, u, ts, x):
        super().__init__()
        self.u, self.ts, self.x = u, ts, x
        self.calls: list[str] = []
        self.nrm = SimpleNamespace()  # not None: the NRM exists
        self.w = torch.nn.Parameter(torch.zeros(1))

    def iem(self, y):
        self.calls.append("iem")
        return self.u, self.ts

    def enhance(self, y):
        self.calls.append("enhance")
        return Enhancement(self.x, self.u, self.ts)


def _evaluator(**options):
    from search_spaces.evaluator import ReferenceFreeLosses

    module = ReferenceFreeLosses(**options)
    rng = np.random.default_rng(5)
    y = _rand(rng, 2, 3, 6, 6, scale=3.0)
    t0, t1 = _rand(rng, 2, 3, 6, 6), _rand(rng, 2, 3, 6, 6)
    u, x = _rand(rng, 2, 3, 6, 6), _rand(rng, 2, 3, 6, 6, scale=20.0)
    model = _StubModel(_t(u), [_t(t0), _t(t1)], _t(x))
    module.set_model(model)
    return module, model, y, t1, u, x


@pytest.mark.parametrize("options,c,guide", [({}, -0.005, "rgb"), ({"smooth_sigma": 0.25, "smooth_guide": "ycbcr"},
                                                                      -8.0, "ycbcr")])
def test_evaluator_losses_match_the_oracle(options, c, guide):
    module, model, y, t_last, u, x = _evaluator(**options)
    out = module.training_step(_t(y), 0)
    iem = np_illumination(y, t_last, c, guide)  # the LAST illumination, guide y
    nrm = np_noise(x, u)  # TV of the final output, fidelity to the IEM output
    rel = YCBCR_REL if guide == "ycbcr" else 1e-10
    assert out["iem"].item() == pytest.approx(iem, rel=rel)
    assert out["nrm"].item() == pytest.approx(nrm, rel=1e-10)
    assert out["loss"].item() == pytest.approx(iem + nrm, rel=rel)
    # A batch given as a list (image, label) is read the same way.
    assert module.training_step([_t(y), None], 0)["loss"].item() == pytest.approx(iem + nrm, rel=rel)


def test_evaluator_iem_alone_runs_no_nrm():
    module, model, y, t_last, u, x = _evaluator()
    module.requested_losses = frozenset({"iem"})
    out = module.training_step(_t(y), 0)
    assert model.calls == ["iem"]
    assert set(out) == {"iem", "loss"}
    assert out["loss"].item() == pytest.approx(np_illumination(y, t_last), rel=1e-10)


def test_evaluator_optimiser_is_the_references(monkeypatch):
    from search_spaces.evaluator import ReferenceFreeLosses

    monkeypatch.setattr(ReferenceFreeLosses, "trainer", property(lambda self: SimpleNamespace(max_epochs=4)))
    module = ReferenceFreeLosses()
    module.set_model(torch.nn.Linear(2, 2))
    [optimizer], [scheduler] = module.configure_optimizers()
    group = optimizer.param_groups[0]
    assert isinstance(optimizer, torch.optim.SGD)
    assert (group["lr"], group["momentum"], group["weight_decay"]) == (0.005, 0.9, 3e-4)
    assert scheduler["interval"] == "epoch"
    assert isinstance(scheduler["scheduler"], torch.optim.lr_scheduler.CosineAnnealingLR)
    assert scheduler["scheduler"].eta_min == 0.001
    assert scheduler["scheduler"].T_max == 4
