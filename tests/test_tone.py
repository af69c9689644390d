"""The shoulder tone policy (network option ``tone``, :mod:`ruas_nni.model.tone`).

* the curve's values checked by hand: the straight line below the knee, the exponential shoulder
  above it, the hue-preserving mix, the toe;
* nothing is clipped: a pixel far brighter than the gain would make white stays below 1, where the
  older policy clips;
* the gain is bounded by the photo's own level (``max_ratio``) and reaches ``E`` where it may;
* the unfolded network, the folded one, ONNX Runtime, the native engine and the cached-graph
  enhancer (numpy gain) compute the same output; tiled equals untiled;
* the option round-trips through a checkpoint, ``--exposure`` on a model without normalisation of
  its own picks the shoulder policy, bad options fail in one line.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from ruas_nni.base.images import read_image, write_png
from ruas_nni.cli import main
from ruas_nni.inference.enhance import Enhancer, load_model
from ruas_nni.model.checkpoint import load_checkpoint, save_checkpoint
from ruas_nni.model.export import NetworkOptions
from ruas_nni.model.network import apply_gain
from ruas_nni.model.tone import BLUR_TAPS, ToneOptions, blur_norm, dequantise, shoulder_curve, solve_shoulder_gain

pytestmark = pytest.mark.usefixtures("one_thread")


def _pixel(*rgb: float) -> torch.Tensor:
    return torch.tensor(rgb, dtype=torch.float64).view(1, 3, 1, 1)


def test_the_curve_by_hand() -> None:
    plain = ToneOptions(knee=0.0, toe=0.0, hue=0.0)
    got = shoulder_curve(_pixel(0.5, 1.0, 2.0), torch.tensor([2.0]), 1.0, plain).flatten().tolist()
    assert got == pytest.approx([1 - math.exp(-1.0), 1 - math.exp(-2.0), 1 - math.exp(-4.0)], abs=1e-12)
    knee = ToneOptions(knee=0.6, toe=0.0, hue=0.0)
    got = shoulder_curve(_pixel(0.1, 0.3, 0.9), torch.tensor([2.0]), 1.0, knee).flatten().tolist()
    # z = 0.2, 0.6 (straight line up to the knee), 1.8: 0.6 + 0.4 * (1 - exp(-(1.8 - 0.6) / 0.4))
    assert got == pytest.approx([0.2, 0.6, 0.6 + 0.4 * (1 - math.exp(-3.0))], abs=1e-12)
    toe = ToneOptions(knee=0.0, toe=0.04, hue=0.0)
    got = shoulder_curve(_pixel(0.0, 0.21, 0.96), torch.tensor([1.0]), 0.5, toe).flatten().tolist()
    assert got == pytest.approx([0.0, 1 - math.exp(-(0.5 - 0.2)), 1 - math.exp(-(1.0 - 0.2))], abs=1e-12)
    hue = ToneOptions(knee=0.0, toe=0.0, hue=1.0)
    x = _pixel(0.2, 0.4, 0.1)
    got = shoulder_curve(x, torch.tensor([1.0]), 1.0, hue).flatten()
    expected = torch.tensor([0.2, 0.4, 0.1], dtype=torch.float64) * ((1 - math.exp(-0.4)) / 0.4)
    assert torch.allclose(got, expected, atol=1e-12)  # every channel by one ratio: the chromaticity is kept
    half = ToneOptions(knee=0.0, toe=0.0, hue=0.5)
    mixed = shoulder_curve(x, torch.tensor([1.0]), 1.0, half).flatten()
    per_channel = 1 - torch.exp(-torch.tensor([0.2, 0.4, 0.1], dtype=torch.float64))
    assert torch.allclose(mixed, 0.5 * per_channel + 0.5 * expected, atol=1e-12)


def test_the_shoulder_is_smooth_at_the_knee() -> None:
    tone = ToneOptions(knee=0.7, toe=0.0, hue=0.0)
    z = torch.tensor([0.7 - 1e-6, 0.7, 0.7 + 1e-6], dtype=torch.float64).view(1, 3, 1, 1)
    values = shoulder_curve(z, torch.tensor([1.0]), 1.0, tone).flatten()
    assert float(values[1] - values[0]) == pytest.approx(1e-6, rel=1e-4)  # slope 1 below
    assert float(values[2] - values[1]) == pytest.approx(1e-6, rel=1e-4)  # and 1 just above


def test_nothing_is_clipped_where_the_older_policy_clips() -> None:
    x = torch.tensor([0.05, 0.5, 1.0, 2.0], dtype=torch.float64).view(1, 1, 2, 2).expand(1, 3, 2, 2)
    new = shoulder_curve(x, torch.tensor([1.5]), 0.5, ToneOptions(knee=0.7))[0, 0].flatten()
    assert float(new.max()) < 1.0 and bool((new.diff() > 0).all())  # monotone, below white
    old = apply_gain(x.clamp(0, 1), torch.tensor([1.5]), 0.5)[0, 0].flatten()
    assert old.tolist()[1:] == [1.0, 1.0, 1.0]  # the older policy: x = 0.5 is already white
    assert float(new[1]) < 240 / 255 and float(new[2]) < 250 / 255


@pytest.mark.parametrize("hue", [0.0, 0.3])
def test_black_pixels_give_the_search_a_finite_gradient(hue: float) -> None:
    """The curve ``v ** 0.5`` has an infinite slope at 0: black pixels (every 8-bit photo has some) made
    the cooperative search's IEM hypergradient non-finite and its steps skipped. The gradient is finite
    now, and the values are those of the plain power."""
    tone = ToneOptions(hue=hue)
    x = torch.tensor([0.0, 0.0, 1e-13, 0.01, 0.2, 0.7]).view(1, 3, 1, 2).requires_grad_()
    out = shoulder_curve(dequantise(x, tone), torch.tensor([1.3]), 0.5, tone)
    out.sum().backward()
    assert bool(torch.isfinite(x.grad).all()), x.grad
    with torch.no_grad():
        plain = shoulder_curve(dequantise(x, tone).clamp_min(0.0), torch.tensor([1.3]), 0.5,
                               replace(tone, toe=1e-30))  # the power without the floor, to rounding
    assert torch.allclose(out.detach(), plain, atol=2e-6)


def test_a_diverged_network_gets_a_nan_gain_not_an_error() -> None:
    # a search whose weights went non-finite must see a non-finite loss (and skip the step), as with
    # the older policy, not a crash inside the gain's histogram
    x = np.full((3, 8, 8), 0.5)
    x[1, 2, 3] = np.nan
    assert math.isnan(solve_shoulder_gain(x, 0.1, 0.45, 0.5, ToneOptions()))
    x[1, 2, 3] = np.inf
    assert math.isnan(solve_shoulder_gain(x, 0.1, 0.45, 0.5, ToneOptions()))
    assert math.isfinite(solve_shoulder_gain(np.full((3, 8, 8), 0.5), 0.1, 0.45, 0.5, ToneOptions()))


@pytest.mark.parametrize("options, gamma", [
    ({}, 0.5),  # the shipped policy's shape: a knee, the hue mix, the square root
    ({"knee": 0.0, "hue": 0.0}, 1.0),  # 1 - exp(-z) per channel, no tone curve
    ({"toe": 0.02, "hue": 1.0}, 0.7),  # a toe, hue-preserving only, a general power
])
def test_the_gain_reaches_e_or_stops_at_the_photos_own_bound(options: dict, gamma: float) -> None:
    # the solve sums the curve over bins of g(x); the curve itself, on every pixel, is the reference
    rng = np.random.default_rng(0)
    x = rng.uniform(0.0, 1.0, (3, 40, 50))
    x[:, :2] = 0.0  # black pixels (g(0) = 0, a bin of their own)
    tone = ToneOptions(max_ratio=10.0, **options)
    ok = solve_shoulder_gain(x, 0.2, 0.45, gamma, tone)
    assert float(shoulder_curve(torch.from_numpy(x)[None], torch.tensor([ok]), gamma, tone).mean()) == \
        pytest.approx(0.45, abs=1e-6)
    bounded = solve_shoulder_gain(x, 0.01, 0.45, gamma, tone)  # a near-black photo: at most 10 x its mean
    assert float(shoulder_curve(torch.from_numpy(x)[None], torch.tensor([bounded]), gamma, tone).mean()) == \
        pytest.approx(0.10, abs=1e-6)
    assert bounded < ok
    black = solve_shoulder_gain(np.zeros((3, 4, 4)), 0.0, 0.45, gamma, tone)
    assert float(shoulder_curve(torch.zeros(1, 3, 4, 4), torch.tensor([black]), gamma, tone).abs().max()) == 0.0
    capped = ToneOptions(max_gain=0.5, **options)
    assert solve_shoulder_gain(x, 0.2, 0.45, gamma, capped) == 0.5


def test_the_blur_is_normalised_inside_the_image() -> None:
    assert sum(BLUR_TAPS) == pytest.approx(1.0, abs=1e-15)
    assert blur_norm(10, 30) == pytest.approx(1.0, abs=1e-15)
    assert blur_norm(0, 30) == pytest.approx(42 / 64, abs=1e-15)  # taps 20 + 15 + 6 + 1 inside
    assert blur_norm(29, 30) == pytest.approx(42 / 64, abs=1e-15)
    assert blur_norm(1, 30) == pytest.approx(57 / 64, abs=1e-15)
    flat = torch.full((1, 3, 9, 11), 0.02, dtype=torch.float64)  # a flat dark patch stays flat, borders too
    assert torch.allclose(dequantise(flat, ToneOptions()), flat, atol=1e-15)


def test_dequantisation_smooths_one_level_steps_in_the_dark_only() -> None:
    tone = ToneOptions(dequantise=0.3)
    rows, columns = torch.meshgrid(torch.arange(24), torch.arange(24), indexing="ij")
    checker = ((rows + columns) % 2).to(torch.float64).expand(1, 3, 24, 24)
    dark = 0.02 + checker * (1 / 255) / 0.26  # one 8-bit level apart, after an illumination of 0.26
    bright = 0.8 + checker * 0.1
    smooth = dequantise(dark, tone)[..., 4:20, 4:20]
    assert float(smooth.max() - smooth.min()) < 0.2 * float(dark.max() - dark.min())
    kept = dequantise(bright, tone)[..., 4:20, 4:20]
    weight = math.exp(-0.85 / 0.3)  # the blurred largest channel is 0.85 there
    assert float((kept - bright[..., 4:20, 4:20]).abs().max()) == pytest.approx(weight * 0.05, rel=1e-6)
    assert torch.equal(dequantise(dark, ToneOptions(dequantise=0.0)), dark)


def test_the_white_point_stays_below_white() -> None:
    rng = np.random.default_rng(1)
    x = rng.uniform(0.0, 0.3, (3, 50, 60))
    x[:, :5, :12] = 3.0  # 2 % of the photo far brighter than the rest (a lit wall)
    tone = ToneOptions()
    gain = solve_shoulder_gain(x, 0.05, 0.45, 0.5, tone)
    out = shoulder_curve(torch.from_numpy(x)[None], torch.tensor([gain]), 0.5, tone)
    assert float(out[0, :, :5, :12].max()) <= tone.white_level + 1e-6
    assert float(out.mean()) < 0.45  # the photo is not lifted as far as E: its white point holds it


def _shoulder_model():
    checkpoint = load_model(None)[0]
    return replace(checkpoint, options=replace(checkpoint.options, tone=ToneOptions(knee=0.0, toe=0.01, hue=0.4)))


def _scene(height: int = 45, width: int = 61) -> torch.Tensor:
    generator = torch.Generator().manual_seed(5)
    y = torch.rand(3, height, width, generator=generator) ** 3 * 0.3
    y[:, 5:15, 10:30] = 0.6  # a lamp-lit wall among dark pixels (153 of 255)
    return y


@pytest.mark.parametrize("engine", ["torch", "onnxruntime", "native"])
def test_every_engine_computes_the_unfolded_networks_output(engine: str) -> None:
    checkpoint = _shoulder_model()
    y = _scene()
    network = checkpoint.build()
    with torch.no_grad():
        expected = network.enhance(y[None]).final[0].clamp(0, 1)
    with Enhancer(checkpoint, engine=engine, workers=1) as enhancer:
        got = enhancer(y)
    assert float((got - expected).abs().max()) < 2e-5


@pytest.mark.parametrize("engine", ["onnxruntime", "native", "torch"])
def test_tiled_equals_untiled(engine: str) -> None:
    checkpoint = _shoulder_model()
    y = _scene(90, 120)
    with Enhancer(checkpoint, workers=1, max_tile_pixels=0, engine=engine) as whole, \
            Enhancer(checkpoint, workers=1, max_tile_pixels=2500, engine=engine) as tiled:
        difference = float((whole(y) - tiled(y)).abs().max())
    # PyTorch's vectorised exp and pow round a row's tail differently from its body, so a tile's
    # pixels can differ in the last bits there; the graph engines are exact
    assert difference == 0.0 if engine != "torch" else difference < 1e-6


def test_the_cached_graph_enhancer_solves_the_same_gain(tmp_path: Path) -> None:
    """`ruas-nni enhance` runs the cached graph and solves the gain with numpy, without PyTorch."""
    checkpoint = _shoulder_model()
    model = tmp_path / "shoulder.pt"
    save_checkpoint(checkpoint, model)
    photo = tmp_path / "in" / "scene.png"
    photo.parent.mkdir()
    write_png(photo, _scene())
    assert main(["enhance", str(photo.parent), "-o", str(tmp_path / "out"), "--checkpoint", str(model), "--quiet"]) == 0
    saved = read_image(tmp_path / "out" / "scene.png").rgb
    with Enhancer(checkpoint, workers=1) as enhancer:
        expected = enhancer(read_image(photo).rgb)
    assert float((saved - expected).abs().max()) <= 1.01 / 255


def test_options_round_trip_and_exposure_for_any_model(tmp_path: Path) -> None:
    checkpoint = _shoulder_model()
    path = save_checkpoint(checkpoint, tmp_path / "m.pt")
    assert load_checkpoint(path).options.tone == checkpoint.options.tone
    assert "tone" not in NetworkOptions().to_dict()  # checkpoints without it are written as before
    plain = load_model(None)[0].with_exposure(0)
    assert plain.options.tone is None
    turned_on = plain.with_exposure(0.4)
    assert turned_on.options.exposure == 0.4 and turned_on.options.tone == ToneOptions()
    shipped = load_model(None)[0]
    assert shipped.with_exposure(0.4).options.tone == shipped.options.tone  # a model's own policy is kept
    clip = replace(shipped, options=replace(shipped.options, tone=None))
    assert clip.with_exposure(0.4).options.tone is None
    with pytest.raises(ValueError, match="unknown tone option"):
        NetworkOptions(exposure=0.4, tone={"shoulder": 1})
    with pytest.raises(ValueError, match="'knee'"):
        ToneOptions(knee=1.5)
