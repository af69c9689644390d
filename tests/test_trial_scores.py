"""A comparison trial's scores are ``evaluate``'s scores of the same checkpoint on the same data.

The fast test compares ``score_checkpoint`` with ``evaluate`` and with a PSNR / parameter count
computed here by hand; the slow one runs a whole (tiny) trial and re-evaluates the model it saved.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ruas_nni.experiments.settings import TrialSettings
from ruas_nni.experiments.trial_runner import Reporter, run_trial, score_checkpoint
from ruas_nni.inference.enhance import Enhancer, load_model
from ruas_nni.inference.evaluation import evaluate, find_pairs

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def small_pairs(demo_data, tmp_path_factory) -> Path:
    """The demo's evaluation pairs, cropped to 96 x 128 (top-left offset 40, 60) to keep this fast."""
    root = tmp_path_factory.mktemp("pairs")
    for side in ("low", "high"):
        (root / side).mkdir()
        for path in sorted((demo_data.eval / side).glob("*.png")):
            with Image.open(path) as image:
                pixels = np.asarray(image.convert("RGB"))[40:136, 60:188]
            Image.fromarray(pixels).save(root / side / path.name)
    return root


def _hand_psnr(output: torch.Tensor, target_path: Path) -> float:
    """PSNR (data range 1) of the 8-bit rounded output against the 8-bit ground truth, in numpy."""
    out8 = np.round(np.clip(output.numpy().astype(np.float64), 0, 1) * 255)
    with Image.open(target_path) as image:
        target = np.asarray(image.convert("RGB")).astype(np.float64).transpose(2, 0, 1)
    mse = np.mean((out8 / 255 - target / 255) ** 2)
    return 10 * math.log10(1.0 / mse)


def test_score_checkpoint_is_evaluate(small_pairs):
    checkpoint = load_model(None)[0]
    pairs = find_pairs(small_pairs)
    assert [p.name for p in pairs] == ["camera.png", "chelsea.png", "coffee.png"]
    scores = score_checkpoint(checkpoint, pairs)
    evaluated = evaluate(checkpoint, pairs)
    assert scores["psnr"] == evaluated.mean.psnr
    assert scores["ssim"] == evaluated.mean.ssim
    assert 0 < scores["ssim"] < 1 and 5 < scores["psnr"] < 50
    assert scores["params"] == sum(p.numel() for p in checkpoint.build().parameters())
    assert scores["flops"] > 0

    # evaluate itself: the unfolded network, 8-bit rounding, PSNR averaged over the images.
    with Enhancer(checkpoint, fold=False, workers=1) as enhancer:
        hand = []
        for pair in pairs:
            with Image.open(pair.low) as image:
                low = torch.from_numpy(np.asarray(image.convert("RGB")).copy()).permute(2, 0, 1).float() / 255
            hand.append(_hand_psnr(enhancer(low), pair.high))
    assert [s.psnr for s in evaluated.per_image.values()] == pytest.approx(hand, abs=1e-4)
    assert scores["psnr"] == pytest.approx(sum(hand) / len(hand), abs=1e-4)


class _Recorder(Reporter):
    def __init__(self) -> None:
        self.finals: list[dict] = []
        self.intermediates: list[dict] = []

    def intermediate(self, metrics) -> None:
        self.intermediates.append(dict(metrics))

    def final(self, metrics) -> None:
        self.finals.append(dict(metrics))


@pytest.mark.slow
def test_a_trials_reported_scores_are_evaluates_on_its_model(demo_data, small_pairs, tmp_path):
    from ruas_nni.model.checkpoint import load_checkpoint

    settings = TrialSettings(data=(str(demo_data.train),), eval_data=str(small_pairs), epochs=1, steps=2, crop=32,
                             train_steps=2, threads=1)
    reporter = _Recorder()
    result = run_trial(settings, "cooperative", 0, tmp_path / "trial", reporter)
    assert reporter.finals == [result.metrics]
    record = json.loads((tmp_path / "trial" / "result.json").read_text())
    checkpoint = load_checkpoint(record["model"])
    evaluated = evaluate(checkpoint, find_pairs(small_pairs)).mean
    assert result.metrics["psnr"] == evaluated.psnr == result.metrics["default"]
    assert result.metrics["ssim"] == evaluated.ssim
    assert result.metrics["params"] == sum(p.numel() for p in checkpoint.build().parameters())
    assert record["metrics"] == result.metrics
