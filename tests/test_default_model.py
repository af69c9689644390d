"""The model shipped inside the package (ruas_nni/pretrained/default.pt), which `ruas-nni enhance` uses
when no --checkpoint is given (issue 4, item 4)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ruas_nni.cli import main
from ruas_nni.inference.enhance import default_checkpoint_path
from ruas_nni.inference.metrics import count_parameters
from ruas_nni.model.checkpoint import load_checkpoint

AUTHORS_LOL_PSNR = 16.446
MAX_PARAMETERS = 5000


@pytest.fixture(scope="module")
def default_model():
    path = default_checkpoint_path()
    assert path is not None, "ruas_nni/pretrained/default.pt is missing"
    return path, load_checkpoint(path)


def test_default_model_is_small_and_documented(default_model) -> None:
    path, checkpoint = default_model
    network = checkpoint.build()
    assert count_parameters(network) <= MAX_PARAMETERS
    assert path.stat().st_size < 100_000
    metadata = checkpoint.metadata
    assert metadata["parameters"] == count_parameters(network)
    for key in ("genotype_source", "training", "lol_eval15", "commands"):
        assert key in metadata, f"default.pt metadata lacks {key!r}"
    assert metadata["training"]["recipe"]["data"], "the training folders must be recorded"
    assert not any("lol_eval15" in folder for folder in metadata["training"]["recipe"]["data"])
    sidecar = path.with_suffix(".json")
    assert json.loads(sidecar.read_text())["lol_eval15"] == metadata["lol_eval15"]


def test_enhance_without_checkpoint_beats_the_authors_lol_checkpoint(default_model, shared_data: Path,
                                                                    tmp_path: Path) -> None:
    """`ruas-nni enhance` (no --checkpoint) on the 15 LOL test inputs, scored independently of our
    metrics module (scikit-image's PSNR on the written 8-bit PNGs): at least 16.446 dB."""
    from skimage.metrics import peak_signal_noise_ratio

    eval15 = shared_data / "lol_eval15"
    assert main(["enhance", str(eval15 / "low"), "-o", str(tmp_path), "--quiet"]) == 0
    values = []
    for truth in sorted((eval15 / "high").iterdir()):
        with Image.open(truth) as a, Image.open(tmp_path / f"{truth.stem}.png") as b:
            values.append(peak_signal_noise_ratio(np.asarray(a.convert("RGB")), np.asarray(b.convert("RGB")), data_range=255))
    assert len(values) == 15
    mean = float(np.mean(values))
    assert mean >= AUTHORS_LOL_PSNR
    recorded = default_model[1].metadata["lol_eval15"]["psnr"]
    assert mean == pytest.approx(recorded, abs=0.01)
