"""``ruas-nni evaluate`` and the metrics behind it (spec Sec. 5; lol_eval15_metrics.json)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ruas_nni.base.errors import UsageError
from ruas_nni.cli import main
from ruas_nni.inference.evaluation import evaluate, find_pairs, side_by_side
from ruas_nni.inference.metrics import psnr, quantize_8bit, score_image, ssim
from ruas_nni.model.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from ruas_nni.model.export import NetworkOptions, export
from ruas_nni.model.genotype import PAPER_GENOTYPE


def _levels(values: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(values.astype(np.float32) / 255.0)


def test_psnr_is_computed_on_the_8bit_rounded_output() -> None:
    rng = np.random.default_rng(0)
    target = rng.integers(30, 200, size=(3, 16, 20))
    # 25 levels brighter, plus less than half a level of noise that the 8-bit rounding removes
    output = _levels(target + 25) + torch.from_numpy(rng.uniform(-0.45, 0.45, size=(3, 16, 20)).astype(np.float32)) / 255.0
    expected = -10.0 * math.log10((25.0 / 255.0) ** 2)
    assert psnr(output, _levels(target)) == pytest.approx(expected, abs=1e-4)


def test_output_is_clamped_before_scoring() -> None:
    target = torch.ones(3, 8, 8)
    assert math.isinf(psnr(torch.full((3, 8, 8), 1.7), target))  # clamped to 1: identical to the target
    assert psnr(torch.full((3, 8, 8), 1.7), torch.full((3, 8, 8), 0.9)) == pytest.approx(20.0, abs=1e-3)
    assert torch.equal(quantize_8bit(torch.tensor([-0.3, 0.5 / 255.0 + 1e-4, 2.0])), torch.tensor([0.0, 1 / 255.0, 1.0]))


def test_ssim_is_one_for_identical_images_and_drops_with_noise() -> None:
    rng = np.random.default_rng(1)
    target = _levels(rng.integers(0, 256, size=(3, 40, 40)))
    assert ssim(target, target) == pytest.approx(1.0, abs=1e-6)
    noisy = (target + 0.2 * torch.from_numpy(rng.standard_normal((3, 40, 40)).astype(np.float32))).clamp(0, 1)
    assert ssim(noisy, target) < 0.9


def test_size_mismatch_is_an_error() -> None:
    with pytest.raises(ValueError, match="differ in size"):
        score_image(torch.zeros(3, 8, 8), torch.zeros(3, 8, 9))


def _paired(root: Path, low: list[str], high: list[str]) -> Path:
    for side, names in (("low", low), ("high", high)):
        (root / side).mkdir(parents=True, exist_ok=True)
        for name in names:
            Image.fromarray(np.full((12, 10, 3), 40, np.uint8)).save(root / side / name)
    return root


def test_find_pairs_natural_order_and_mismatches(tmp_path: Path) -> None:
    pairs = find_pairs(_paired(tmp_path / "ok", ["10.png", "2.png", "b.png"], ["2.png", "10.png", "b.png"]))
    assert [p.name for p in pairs] == ["2.png", "10.png", "b.png"]
    with pytest.raises(UsageError, match="no ground truth for 3.png"):
        find_pairs(_paired(tmp_path / "bad", ["1.png", "3.png"], ["1.png"]))
    (tmp_path / "nohigh" / "low").mkdir(parents=True)
    with pytest.raises(UsageError, match="high/ is missing"):
        find_pairs(tmp_path / "nohigh")


def test_side_by_side_layout() -> None:
    panels = [torch.zeros(3, 5, 7), torch.full((3, 5, 7), 0.5), torch.ones(3, 5, 7)]
    picture = side_by_side(panels, separator=2)
    assert picture.shape == (3, 5, 7 * 3 + 2 * 2)
    assert torch.equal(picture[:, :, 7:9], torch.ones(3, 5, 2))
    assert torch.equal(picture[:, :, 9:16], panels[1])


def _demo_checkpoint(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    network = export(PAPER_GENOTYPE, NetworkOptions())
    return save_checkpoint(Checkpoint.from_network(network, PAPER_GENOTYPE, NetworkOptions()), tmp_path / "model.pt")


def test_evaluate_cli_writes_json_and_side_by_side(demo_data, tmp_path: Path, capsys) -> None:
    checkpoint = _demo_checkpoint(tmp_path)
    out_json = tmp_path / "scores.json"
    pictures = tmp_path / "sbs"
    code = main(["evaluate", "--checkpoint", str(checkpoint), "--data", str(demo_data.eval), "--json", str(out_json),
                 "--side-by-side", str(pictures), "--quiet"])
    assert code == 0
    scores = json.loads(out_json.read_text())
    assert set(scores) == {"mean", "per_image", "exposure_matched"}
    matched = scores["exposure_matched"]
    assert sorted(matched["per_image"]) == sorted(scores["per_image"])
    assert set(matched["mean"]) == {"psnr", "ssim", "output_brightness", "reference_brightness"}
    names = sorted(p.name for p in (demo_data.eval / "low").iterdir())
    assert sorted(scores["per_image"]) == names
    direct = evaluate(load_checkpoint(checkpoint), find_pairs(demo_data.eval))
    for name, values in scores["per_image"].items():
        assert values["psnr"] == pytest.approx(direct.per_image[name].psnr)
        assert values["ssim"] == pytest.approx(direct.per_image[name].ssim)
    assert scores["mean"]["psnr"] == pytest.approx(np.mean([v["psnr"] for v in scores["per_image"].values()]))
    assert "mean" in capsys.readouterr().out
    for name in names:
        with Image.open(pictures / name) as picture, Image.open(demo_data.eval / "low" / name) as low:
            assert picture.size == (3 * low.size[0] + 8, low.size[1])


def test_evaluate_cli_bad_folder_exits_2(tmp_path: Path, capsys) -> None:
    assert main(["evaluate", "--checkpoint", "x.pt", "--data", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no such folder" in err[0]


def test_authors_lol_checkpoint_reproduces_the_published_scores(reference_dir: Path, shared_data: Path, tmp_path) -> None:
    """lol.pt on the 15 LOL test pairs: 16.446 dB / 0.4993, and every per-image value."""
    reference = json.loads((reference_dir / "lol_eval15_metrics.json").read_text())["checkpoints"]["lol"]["final"]
    out_json = tmp_path / "lol.json"
    assert main(["evaluate", "--checkpoint", str(reference_dir / "lol.pt"), "--data", str(shared_data / "lol_eval15"),
                 "--json", str(out_json), "--quiet"]) == 0
    scores = json.loads(out_json.read_text())
    # The reference values are rounded to 4 decimals (+-5e-5); float noise adds little (the mean PSNR
    # moves by 6e-8 on ATen's scalar kernels; every value measured within 4.4e-5 of the reference).
    # 1e-4 covers both; rounding and comparing (round(psnr, 3) == 16.446) would flip at a boundary.
    assert scores["mean"]["psnr"] == pytest.approx(reference["mean_psnr"], rel=0, abs=1e-4)
    assert scores["mean"]["ssim"] == pytest.approx(reference["mean_ssim"], rel=0, abs=1e-4)
    assert (reference["mean_psnr"], reference["mean_ssim"]) == pytest.approx((16.446, 0.4993), abs=5e-4)  # published
    assert set(scores["per_image"]) == set(reference["per_image"])
    for name, values in reference["per_image"].items():
        assert scores["per_image"][name]["psnr"] == pytest.approx(values["psnr"], rel=0, abs=1e-4)
        assert scores["per_image"][name]["ssim"] == pytest.approx(values["ssim"], rel=0, abs=1e-4)


def test_exposure_matched_scores_undo_a_global_exposure_error() -> None:
    from ruas_nni.inference.metrics import exposure_matched

    torch.manual_seed(0)
    target = torch.rand(3, 32, 32) * 0.8
    darker = target * 0.5
    scaled, gain = exposure_matched(darker, target)
    assert gain == pytest.approx(2.0, rel=1e-5)
    assert score_image(scaled, target).psnr > score_image(darker, target).psnr + 10
    assert exposure_matched(torch.zeros(3, 4, 4), target[:, :4, :4])[1] == 1.0


def test_exposure_matching_is_one_global_gain_that_keeps_a_colour_cast() -> None:
    """Exposure matching corrects brightness, not colour: one gain for all channels. A grey target
    (0.4 everywhere, mean 0.4) and a blue-cast output (channels 0.1, 0.2, 0.5, mean 0.8 / 3): the gain
    is 0.4 / (0.8 / 3) = 1.5 and the matched output 0.15, 0.3, 0.75, still blue. Scaling each channel
    to the target's channel mean would return grey 0.4 everywhere, hiding the cast from the scores
    (the darker-copy test above cannot tell the two apart: its channels are all off by the same 0.5)."""
    from ruas_nni.inference.metrics import exposure_matched

    target = torch.full((3, 4, 5), 0.4)
    output = torch.tensor([0.1, 0.2, 0.5]).view(3, 1, 1).expand(3, 4, 5)
    scaled, gain = exposure_matched(output, target)
    assert gain == pytest.approx(1.5, rel=1e-6)
    expected = torch.tensor([0.15, 0.3, 0.75]).view(3, 1, 1).expand(3, 4, 5)
    torch.testing.assert_close(scaled, expected, rtol=0, atol=1e-6)
    # the matched output is still far from the grey target: its colour error stays in the score
    assert psnr(scaled, target) < 15  # mean squared error (0.25^2 + 0.1^2 + 0.35^2) / 3: 11.9 dB
