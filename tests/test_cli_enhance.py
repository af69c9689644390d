"""``ruas-nni enhance`` end to end, as a user runs it (a real subprocess)."""

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from ruas_nni.cli import main


def _run(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "ruas_nni", "enhance", *args], capture_output=True, text=True, cwd=cwd)


@pytest.mark.parametrize("ckpt,stage", [("lol", "final"), ("lol", "iem"), ("upe", "iem"), ("upe", "final")])
def test_enhance_reproduces_reference_within_one_level(reference_dir, tmp_path, ckpt, stage):
    out = tmp_path / "out"
    result = _run(str(reference_dir / "inputs"), "-o", str(out), "--checkpoint", str(reference_dir / f"{ckpt}.pt"),
                  "--stage", stage, "--quiet")
    assert result.returncode == 0, result.stderr
    for name in ("lol22_crop", "lime1_crop"):
        expected = np.load(reference_dir / "outputs" / ckpt / f"{name}.{stage}.npy")
        expected8 = np.round(np.clip(expected, 0, 1) * 255).astype(np.int16)
        written = Image.open(out / f"{name}.png")
        assert written.mode == "RGB" and written.size == (expected.shape[1], expected.shape[0])
        assert np.abs(np.asarray(written, dtype=np.int16) - expected8).max() <= 1


def test_enhance_without_checkpoint_says_what_is_needed(tmp_path, demo_data):
    from ruas_nni.inference.enhance import default_checkpoint_path

    if default_checkpoint_path() is not None:
        pytest.skip("a default model is shipped; covered by the default-model tests")
    result = _run(str(demo_data.eval / "low"), "-o", str(tmp_path / "out"))
    assert result.returncode == 2
    assert "--checkpoint" in result.stderr and "Traceback" not in result.stderr


def test_enhance_keeps_size_and_names_outputs_by_stem(tmp_path, reference_dir):
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray((np.random.default_rng(0).random((37, 53, 3)) * 80).astype(np.uint8)).save(src / "odd.jpg")
    Image.fromarray(np.zeros((1, 1, 3), np.uint8)).save(src / "tiny.bmp")
    code = main(["enhance", str(src), "-o", str(tmp_path / "out"), "--checkpoint", str(reference_dir / "lol.pt"), "--quiet"])
    assert code == 0
    assert Image.open(tmp_path / "out" / "odd.png").size == (53, 37)
    assert Image.open(tmp_path / "out" / "tiny.png").size == (1, 1)


def test_enhance_reports_bad_checkpoint_in_one_line(tmp_path, demo_data):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"\x00garbage")
    result = _run(str(demo_data.eval / "low"), "-o", str(tmp_path / "out"), "--checkpoint", str(bad))
    assert result.returncode == 2
    assert "bad.pt" in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_inference_path_does_not_import_nni_or_lightning():
    code = (
        "import sys, ruas_nni, ruas_nni.inference.enhance, ruas_nni.cli; "
        "from ruas_nni.cli import build_parser; build_parser(); "
        "bad = [m for m in sys.modules if m.split('.')[0] in ('nni', 'pytorch_lightning', 'lightning')]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
