"""The NRM's strength per photo (network option ``denoise_sigma``, ruas_nni/model/strength.py).

* the noise estimate measures the noise of real pixel values and ignores smooth shading;
* ``x = u - a n``: ``a = 0`` leaves the NRM's input, ``a = 1`` is the network without the option;
* every engine (PyTorch, folded, native, ONNX Runtime) computes the same ``a`` and the same output, and
  a tiled enhancement equals the whole one; the option travels in checkpoints and is validated.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ruas_nni.base.images import read_image
from ruas_nni.inference import native
from ruas_nni.inference.enhance import Enhancer
from ruas_nni.inference.fold import fold
from ruas_nni.model.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from ruas_nni.model.export import NetworkOptions, export
from ruas_nni.model.genotype import PAPER_GENOTYPE
from ruas_nni.model.strength import noise_sigma, nrm_strength
from ruas_nni.model.tone import ToneOptions

pytestmark = pytest.mark.usefixtures("one_thread")


def _immerkaer_everywhere(rgb: np.ndarray) -> float:
    """The estimate at every interior pixel (the definition, without the sampling)."""
    grey = torch.from_numpy(rgb.astype(np.float32)).mean(dim=2)[None, None]
    mask = torch.tensor([[1.0, -2, 1], [-2, 4, -2], [1, -2, 1]]).view(1, 1, 3, 3)
    return math.sqrt(math.pi / 2) / 6 * float(F.conv2d(grey, mask).abs().mean())


def test_the_noise_estimate_measures_noise_and_not_shading():
    rng = np.random.default_rng(0)
    rows, columns = np.mgrid[0:200, 0:300].astype(np.float32)
    shading = np.stack([0.1 + rows / 400, 0.2 + columns / 600, 0.3 + (rows + columns) / 1000], axis=2)
    assert noise_sigma(shading) < 1e-5  # the mask cancels planes
    noisy = shading + rng.normal(0.0, 0.02, shading.shape).astype(np.float32)
    # three independent channels of sigma 0.02: their mean has sigma 0.02 / sqrt(3)
    assert noise_sigma(noisy) == pytest.approx(0.02 / math.sqrt(3), rel=0.05)
    assert noise_sigma(noisy) == pytest.approx(_immerkaer_everywhere(noisy), rel=0.03)  # the sampling is unbiased
    eight_bit = np.clip(np.rint(noisy * 255), 0, 255).astype(np.uint8)
    assert noise_sigma(eight_bit, 255.0) == pytest.approx(noise_sigma(noisy), rel=0.05)
    assert noise_sigma(np.zeros((2, 9, 3), np.float32)) == 0.0  # no 3 x 3 neighbourhood
    assert math.isnan(noise_sigma(np.full((5, 5, 3), np.nan, np.float32)))
    with pytest.raises(ValueError, match="H x W x 3"):
        noise_sigma(np.zeros((3, 5, 5), np.float32))


def test_the_strength_follows_the_noise_the_nrm_will_see():
    assert nrm_strength(0.01, 2.0, 0.04) == pytest.approx(0.5)
    assert nrm_strength(0.01, 8.0, 0.04) == 1.0  # LOL-like: lifted eightfold, the NRM works fully
    assert nrm_strength(0.0, 3.0, 0.04) == 0.0
    assert nrm_strength(math.nan, 2.0, 0.04) == 1.0 and nrm_strength(0.01, math.inf, 0.04) == 1.0


def _checkpoint(denoise_sigma: float | None, seed: int = 0) -> Checkpoint:
    torch.manual_seed(seed)
    options = NetworkOptions(iem_stages=1, nrm_cells=1, exposure=0.45, exposure_gamma=0.5, tone=ToneOptions(),
                             denoise_sigma=denoise_sigma)
    network = export(PAPER_GENOTYPE, options)
    with torch.no_grad():  # a head large enough that the NRM's correction shows
        network.nrm.head.weight.mul_(20.0)
    return Checkpoint.from_network(network, PAPER_GENOTYPE, options)


@pytest.fixture(scope="module")
def photo(demo_data) -> torch.Tensor:
    path = sorted((demo_data.eval / "low").glob("*.png"))[0]
    return read_image(path).rgb[:, :70, :90]


def test_the_strength_scales_the_nrms_correction(photo):
    plain = _checkpoint(None).build()
    scaled = _checkpoint(0.04).build()
    y = photo[None]
    with torch.no_grad():
        gain, strength = scaled.gain_and_strength(y)
        assert plain.gain_and_strength(y)[1] is None
        assert 0.0 < float(strength) <= 1.0
        u = scaled.enhance_iem(y)
        full = plain(y)
        assert torch.equal(scaled(y, gain, torch.zeros(1)), u)  # a = 0: the NRM's input
        assert torch.equal(scaled(y, gain, torch.ones(1)), full)  # a = 1: the network without the option
        half = scaled(y, gain, torch.full((1,), 0.5))
        assert torch.allclose(half, u + 0.5 * (full - u), atol=1e-6)
        assert torch.equal(scaled(y), scaled(y, gain, strength))  # measured on y by default


def test_every_engine_and_every_tiling_uses_the_whole_photos_strength(photo, tmp_path):
    checkpoint = load_checkpoint(save_checkpoint(_checkpoint(0.02), tmp_path / "scaled.pt"))
    assert checkpoint.options.denoise_sigma == 0.02
    network = checkpoint.build()
    with torch.inference_mode():
        expected = network(photo[None])[0].clamp(0.0, 1.0)
        assert torch.allclose(fold(network)(photo[None].clone())[0].clamp(0.0, 1.0), expected, atol=2e-6)
    engines = ["torch", "onnxruntime"] + (["native"] if native.compiler() is not None else [])
    for engine in engines:
        with Enhancer(checkpoint, engine=engine, workers=1) as whole:
            output = whole(photo)
        with Enhancer(checkpoint, engine=engine, workers=2, max_tile_pixels=1500) as tiled:
            pieces = tiled(photo)
        assert (output - expected).abs().max() <= 1e-5, engine
        assert (pieces - output).abs().max() <= 1e-5, engine  # rounding of the convolutions on other sizes
        gain, strength = whole.exposure(photo)
        assert float(strength) == pytest.approx(float(network.gain_and_strength(photo[None])[1]), rel=1e-5), engine


def test_the_option_is_checked_and_kept_out_of_checkpoints_without_it():
    assert "denoise_sigma" not in NetworkOptions().to_dict()
    assert NetworkOptions(denoise_sigma=0.05).to_dict()["denoise_sigma"] == 0.05
    for bad in (0.0, 1.5, "0.1", True):
        with pytest.raises(ValueError, match="denoise_sigma"):
            NetworkOptions(denoise_sigma=bad)
    # without exposure normalisation there is no lift to measure: the option is inert
    network = export(PAPER_GENOTYPE, replace(NetworkOptions(), denoise_sigma=0.05))
    assert network.denoise_sigma is None
