"""`ruas-nni demo --quick`: the whole pipeline (search, train, enhance, score) on the built-in demo
data, end to end, in a shortened form (`make demo` runs the full-length one)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from ruas_nni.model.checkpoint import load_checkpoint
from ruas_nni.model.genotype import Genotype

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def quick_demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("demo") / "run"
    completed = subprocess.run([sys.executable, "-m", "ruas_nni", "demo", "--quick", "--quiet", "--out", str(out)],
                               cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr[-3000:]
    return out, completed.stdout


def test_quick_demo_runs_search_training_enhancement_and_scoring(quick_demo) -> None:
    out, stdout = quick_demo
    arch = json.loads((out / "search" / "arch.json").read_text())
    genotype = Genotype.from_any(arch)
    assert arch["strategy"] == "cooperative"
    model = load_checkpoint(out / "train" / "model.pt")
    assert model.genotype == genotype, "the demo must train the searched genotype"
    assert model.metadata["complete"] is True

    scores = json.loads((out / "scores.json").read_text())
    names = sorted(p.name for p in (out / "data" / "eval" / "low").iterdir())
    assert sorted(scores["per_image"]) == names
    for name in names:
        with Image.open(out / "enhanced" / name) as enhanced, Image.open(out / "data" / "eval" / "low" / name) as low:
            assert enhanced.size == low.size
        with Image.open(out / "side_by_side" / name) as picture:
            assert picture.size == (3 * low.size[0] + 8, low.size[1])
    # even a short run brightens the dark inputs towards their ground truth
    assert scores["mean"]["psnr"] > scores["input_as_is"]["mean"]["psnr"]

    for path in ("search/arch.json", "train/model.pt", "enhanced", "side_by_side", "scores.json"):
        assert str(out / path) in stdout
    assert f"PSNR {scores['mean']['psnr']:.3f} dB" in stdout


def test_demo_runs_again_in_its_folder_but_refuses_a_foreign_one(quick_demo, tmp_path: Path) -> None:
    out, _ = quick_demo
    again = subprocess.run([sys.executable, "-m", "ruas_nni", "demo", "--quick", "--quiet", "--out", str(out)],
                           cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "replacing the results of an earlier demo" in again.stdout
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("precious")
    refused = subprocess.run([sys.executable, "-m", "ruas_nni", "demo", "--quick", "--quiet", "--out", str(foreign)],
                             cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2
    assert "holds no earlier demo" in refused.stderr and len(refused.stderr.strip().splitlines()) == 1
    assert (foreign / "thesis.tex").read_text() == "precious"
