"""Exposure normalisation between the IEM and the NRM (network option ``exposure``).

* off (the default, and every checkpoint without the option) the network, the folded network and the
  enhancer compute exactly what they computed before, and checkpoints are written as before;
* on, the gain ``k`` is measured on the area-downsampled whole image, so a tiled enhancement uses the
  same ``k`` on every tile and equals the untiled one; the IEM output is ``clamp(k u, 0, 1)``;
* ``enhance`` / ``evaluate`` take ``--exposure E`` for any model (0 = off); ``export-onnx`` refuses it;
* the training key ``exposure`` is validated and saved in the checkpoint.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ruas_nni.base.config import ConfigError
from ruas_nni.base.errors import UsageError
from ruas_nni.base.images import read_image
from ruas_nni.cli import main
from ruas_nni.inference.enhance import Enhancer, load_model
from ruas_nni.inference.fold import fold
from ruas_nni.inference.onnx_export import export_onnx
from ruas_nni.model.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from ruas_nni.model.export import NetworkOptions, export
from ruas_nni.model.genotype import PAPER_GENOTYPE
from ruas_nni.model.network import exposure_gain
from ruas_nni.training.config import load_train_config
from ruas_nni.training.demo_data import _photo, synthesize_low_light

pytestmark = pytest.mark.usefixtures("one_thread")

SMALL_TILES = 9000


def _clip_default() -> Checkpoint:
    """The shipped default's weights with the clip policy ``clamp(k u ** p, 0, 1)`` these tests are about
    (the shipped default uses the shoulder policy: tests/test_tone.py)."""
    checkpoint = load_model(None)[0]
    return replace(checkpoint, options=replace(checkpoint.options, tone=None))


def _photo_low(height: int = 160, width: int = 200) -> torch.Tensor:
    photo = _photo("coffee.png")[100:100 + height, 200:200 + width]
    low = synthesize_low_light(photo, 0.06, np.random.default_rng(0))
    return torch.from_numpy(low).permute(2, 0, 1).float() / 255


def test_options_default_off_and_written_as_before() -> None:
    assert NetworkOptions().exposure is None
    assert "exposure" not in NetworkOptions().to_dict()  # old checkpoints' options, byte for byte
    assert NetworkOptions(exposure=0.45).to_dict()["exposure"] == 0.45
    assert NetworkOptions.from_dict({"exposure": 0.4}).exposure == 0.4
    for bad in (0, 1.5, "0.4", True):
        with pytest.raises(ValueError, match="'exposure'"):
            NetworkOptions(exposure=bad)


def test_exposure_off_is_bit_exact_with_the_paper_network() -> None:
    """The v1-style network (the default model's weights with exposure off) against a hand-written
    IEM -> NRM forward."""
    checkpoint = load_model(None)[0].with_exposure(0)
    assert checkpoint.options.exposure is None
    net = checkpoint.build()
    y = _photo_low(64, 80)[None]
    with torch.no_grad():
        u, illuminations = net.iem(y)
        result = net.enhance(y)
        assert torch.equal(result.iem, u) and torch.equal(result.final, net.nrm(u))
        assert net.exposure_gain(y) is None
    with torch.inference_mode():
        assert torch.equal(fold(net)(y), fold(net)(y, None))


def test_gain_is_defined_on_the_downsampled_whole_image() -> None:
    torch.manual_seed(0)
    net = export(PAPER_GENOTYPE, NetworkOptions(exposure=0.45)).eval()
    y = _photo_low(300, 400)[None]  # factor ceil(400 / 256) = 2
    with torch.no_grad():
        small = F.avg_pool2d(y, 2, stride=2)
        expected = 0.45 / net.iem(small)[0].mean()
        gain = net.exposure_gain(y)
        assert gain.shape == (1,) and math.isclose(float(gain), float(expected), rel_tol=1e-6)
        u = net.iem(y)[0]
        result = net.enhance(y)
        assert torch.allclose(result.iem, (u * gain).clamp(0, 1))
        assert torch.allclose(result.final, net.nrm(result.iem))
        # a tile given the whole image's gain computes the whole image's numbers away from its border
        # (the IEM reaches 9 pixels)
        tile = y[..., 40:120, 60:200]
        assert torch.allclose(net.enhance(tile, gain).iem[..., 9:-9, 9:-9], result.iem[..., 49:111, 69:191], atol=1e-6)
    # the normalised IEM output has about the target mean
    assert abs(float(result.iem.mean()) - 0.45) < 0.1
    # thin images: the factor never exceeds a side
    thin = torch.rand(1, 3, 2, 900)
    assert exposure_gain(lambda s: s, thin, 0.5).shape == (1,)


@pytest.mark.parametrize("fold_network", [True, False])
@pytest.mark.parametrize("stage", ["final", "iem"])
def test_enhancer_tiled_equals_untiled_with_exposure(fold_network, stage) -> None:
    checkpoint = _clip_default().with_exposure(0.45)
    image = _photo_low()
    with Enhancer(checkpoint, stage=stage, fold=fold_network, max_tile_pixels=0, workers=1) as whole:
        expected = whole(image)
        gain, strength = whole.exposure(image)
        assert (strength is None) == (stage == "iem")  # the default's denoise_sigma: the NRM's strength
    for workers in (1, 2):
        with Enhancer(checkpoint, stage=stage, fold=fold_network, max_tile_pixels=SMALL_TILES, workers=workers) as tiled:
            assert len(tiled.plan(160, 200, min_tiles=workers)) >= 6
            got = tiled(image)
        assert (got - expected).abs().max().item() <= 1e-6
        # 8-bit: a float32 rounding difference may cross a half level
        assert (torch.round(got * 255) - torch.round(expected * 255)).abs().max().item() <= 1
    # and it is the network's own whole-image forward
    net = checkpoint.build()
    with torch.no_grad():
        result = net.enhance(image[None])
    reference = (result.final if stage == "final" else result.iem)[0].clamp(0, 1)
    assert (expected - reference).abs().max().item() <= 1e-5
    assert float(gain) != 1.0
    with Enhancer(load_model(None)[0].with_exposure(0), stage=stage, fold=fold_network, workers=1) as plain:
        assert plain.exposure(image) == (None, None)
        unnormalised = float(plain(image).mean())
    # the gain moves the mean to E (this photo's mean without it happens to be near 0.45, so a second E)
    assert abs(float(expected.mean()) - 0.45) < 0.05
    with Enhancer(checkpoint.with_exposure(0.3), stage=stage, fold=fold_network, workers=1) as darker:
        assert abs(float(darker(image).mean()) - 0.3) < 0.05 < abs(unnormalised - 0.3)


def test_folded_network_computes_its_own_gain() -> None:
    checkpoint = _clip_default().with_exposure(0.4)
    net = checkpoint.build()
    y = _photo_low(96, 120)[None]
    with torch.inference_mode():
        assert torch.allclose(fold(net)(y), net(y), atol=1e-5)
        assert torch.allclose(fold(net, "iem")(y), net.enhance(y).iem, atol=1e-6)


def test_with_exposure_and_round_trip(tmp_path: Path) -> None:
    checkpoint = load_model(None)[0].with_exposure(0)
    on = checkpoint.with_exposure(0.4)
    assert on.options.exposure == 0.4 and checkpoint.options.exposure is None
    assert on.with_exposure(0).options.exposure is None
    path = save_checkpoint(on, tmp_path / "model.pt")
    assert load_checkpoint(path).options.exposure == 0.4 and load_checkpoint(path).build().exposure == 0.4
    with pytest.raises(UsageError, match="normalises exposure"):
        export_onnx(on, tmp_path / "model.onnx")


def test_exposure_flag_of_enhance_and_evaluate(demo_data, tmp_path: Path, capsys) -> None:
    image = sorted((demo_data.eval / "low").iterdir())[0]
    outputs = {}
    # the default model normalises to 0.45 with tone curve 0.6; --exposure 0.45 is its own setting
    for name, extra in (("plain", []), ("own", ["--exposure", "0.45"]), ("e40", ["--exposure", "0.4", "--exposure-gamma", "1"]),
                        ("off", ["--exposure", "0"])):
        assert main(["enhance", str(image), "-o", str(tmp_path / name), "--quiet", *extra]) == 0
        outputs[name] = read_image(tmp_path / name / f"{image.stem}.png").rgb
    assert torch.equal(outputs["plain"], outputs["own"]) and not torch.equal(outputs["plain"], outputs["off"])
    assert not torch.equal(outputs["plain"], outputs["e40"])
    assert abs(float(outputs["e40"].mean()) - 0.4) < abs(float(outputs["off"].mean()) - 0.4)
    capsys.readouterr()
    assert main(["evaluate", "--data", str(demo_data.eval), "--quiet", "--exposure", "0.4"]) == 0
    assert "PSNR" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["enhance", str(image), "-o", str(tmp_path / "bad"), "--exposure", "1.5"])
    assert "expected a number 0-1" in capsys.readouterr().err


def test_training_key_is_validated_and_reaches_the_network() -> None:
    assert load_train_config(None, {}).exposure == 0.45  # the recommended recipe's default
    config = load_train_config(None, {"exposure": 0.4})
    assert config.network_options().exposure == 0.4
    for bad, message in ((1.5, "at most 1.0"), (0.0, "at least 0.01")):
        with pytest.raises(ConfigError, match=message):
            load_train_config(None, {"exposure": bad})


def test_fidelity_gamma_key_and_loss() -> None:
    from ruas_nni.training.losses import illumination_loss

    assert load_train_config(None, {}).fidelity_gamma == 1.0
    assert load_train_config(None, {"fidelity_gamma": 0.4}).fidelity_gamma == 0.4
    with pytest.raises(ConfigError, match="at most 1.0"):
        load_train_config(None, {"fidelity_gamma": 2.0})
    y = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    t = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    assert torch.equal(illumination_loss(y, t), illumination_loss(y, t, fidelity_gamma=1.0))
    only_fidelity = illumination_loss(y, t, smooth_weight=0.0, fidelity_gamma=0.4)
    assert torch.allclose(only_fidelity, 0.5 * ((t - y ** 0.4) ** 2).mean())


def test_exposure_gamma_tone_curve() -> None:
    assert "exposure_gamma" not in NetworkOptions(exposure=0.4).to_dict()
    assert NetworkOptions(exposure=0.4, exposure_gamma=0.6).to_dict()["exposure_gamma"] == 0.6
    with pytest.raises(ValueError, match="'exposure_gamma'"):
        NetworkOptions(exposure_gamma=0)
    checkpoint = _clip_default().with_exposure(0.45, 0.6)
    net = checkpoint.build()
    y = _photo_low(120, 160)[None]
    with torch.no_grad():
        u = net.iem(y)[0]
        expected_gain = 0.45 / net.iem(y)[0].pow(0.6).mean()  # 160 px: no downsampling
        gain = net.exposure_gain(y)
        assert math.isclose(float(gain), float(expected_gain), rel_tol=1e-5)
        assert torch.allclose(net.enhance(y).iem, (gain * u.pow(0.6)).clamp(0, 1))
    with torch.inference_mode():
        assert torch.allclose(fold(net)(y), net(y), atol=1e-5)
    assert load_train_config(None, {"exposure": 0.45, "exposure_gamma": 0.6}).network_options().exposure_gamma == 0.6


def test_random_network_checkpoint_with_exposure_builds() -> None:
    torch.manual_seed(0)
    options = NetworkOptions(exposure=0.5)
    net = export(PAPER_GENOTYPE, options)
    checkpoint = Checkpoint.from_network(net, PAPER_GENOTYPE, options)
    assert checkpoint.build().exposure == 0.5


def test_exposure_side_sets_the_small_copy_in_every_engine(tmp_path: Path) -> None:
    """The network option ``exposure_side``: the gain's small copy has at most that many pixels on its
    longest side, in the network, the folded network, every engine and every tiling; a checkpoint
    keeps it, and one without it is written as before."""
    assert "exposure_side" not in NetworkOptions(exposure=0.45).to_dict()
    for bad in (8, 5000, 96.0, True, "96"):
        with pytest.raises(ValueError, match="'exposure_side'"):
            NetworkOptions(exposure=0.45, exposure_side=bad)
    shipped = _clip_default()
    checkpoint = replace(shipped, options=replace(shipped.options, exposure_side=50))
    checkpoint = load_checkpoint(save_checkpoint(checkpoint, tmp_path / "side.pt"))
    assert checkpoint.options.exposure_side == 50
    network = checkpoint.build()
    image = _photo_low(120, 180)  # factor ceil(180 / 50) = 4, against 1 with the default side
    with torch.no_grad():
        small = F.avg_pool2d(image[None], 4, stride=4)
        u = network.iem(small)[0].clamp_min(0.0) ** network.exposure_gamma
        gain = network.exposure_gain(image[None])
        assert math.isclose(float(gain), network.exposure / float(u.mean()), rel_tol=1e-5)
        assert not math.isclose(float(gain), float(shipped.build().exposure_gain(image[None])), rel_tol=1e-3)
        expected = network(image[None])[0].clamp(0.0, 1.0)
    with torch.inference_mode():
        assert torch.allclose(fold(network)(image[None].clone())[0].clamp(0.0, 1.0), expected, atol=2e-6)
    for engine in ("torch", "onnxruntime", "native"):
        with Enhancer(checkpoint, engine=engine, workers=1, max_tile_pixels=0) as whole, \
                Enhancer(checkpoint, engine=engine, workers=2, max_tile_pixels=SMALL_TILES) as tiled:
            output = whole(image)
            assert (output - expected).abs().max() <= 1e-5, engine
            assert (tiled(image) - output).abs().max() <= 1e-6, engine
            assert float(whole.exposure(image)[0]) == pytest.approx(float(gain), rel=1e-6), engine
