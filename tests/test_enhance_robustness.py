"""``ruas-nni enhance`` on mixed folders: every readable image enhanced, every unreadable file named in
one line, inputs never overwritten, outputs complete or absent."""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ruas_nni.model.checkpoint import Checkpoint, save_checkpoint
from ruas_nni.model.export import NetworkOptions, export
from ruas_nni.model.genotype import PAPER_GENOTYPE


@pytest.fixture(scope="module")
def model_path(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    checkpoint = Checkpoint.from_network(export(PAPER_GENOTYPE), PAPER_GENOTYPE, NetworkOptions())
    return save_checkpoint(checkpoint, tmp_path_factory.mktemp("model") / "model.pt")


def _enhance(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ruas_nni", "enhance", *args, "--quiet"], capture_output=True,
                          text=True)


def _digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def _png_bit_depth(path: Path) -> int:
    return path.read_bytes()[24]


def _rgb(height: int, width: int, seed: int) -> np.ndarray:
    return (np.random.default_rng(seed).random((height, width, 3)) * 90).astype(np.uint8)


def _exif_rotated_jpeg(path: Path) -> None:
    image = Image.fromarray(_rgb(20, 30, 7))
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    image.save(path, exif=exif.tobytes())


def _make_mixed_folder(folder: Path) -> dict[str, tuple[int, int]]:
    """Good images of many kinds; returns their expected output sizes (width, height)."""
    from ruas_nni.base.images import write_png

    folder.mkdir()
    Image.fromarray(_rgb(21, 34, 1)[:, :, 0], "L").save(folder / "gray.png")
    rgba = np.dstack([_rgb(19, 23, 2), np.linspace(0, 255, 19 * 23).reshape(19, 23).astype(np.uint8)])
    Image.fromarray(rgba, "RGBA").save(folder / "alpha.png")
    write_png(folder / "deep.png", torch.rand(3, 15, 17) * 0.3, bit_depth=16)
    Image.fromarray(_rgb(16, 24, 3)).convert("CMYK").save(folder / "print.jpg")
    Image.fromarray(_rgb(12, 13, 4)).convert("P", palette=Image.Palette.ADAPTIVE).save(folder / "palette.png")
    _exif_rotated_jpeg(folder / "rotated.jpg")
    Image.fromarray(np.zeros((1, 1, 3), np.uint8)).save(folder / "dot.png")
    Image.fromarray(_rgb(37, 53, 5)).save(folder / "odd.bmp")
    return {"gray": (34, 21), "alpha": (23, 19), "deep": (17, 15), "print": (24, 16), "palette": (13, 12),
            "rotated": (20, 30), "dot": (1, 1), "odd": (53, 37)}


def _add_bad_files(folder: Path) -> list[str]:
    good = io.BytesIO()
    Image.fromarray(_rgb(40, 40, 6)).save(good, format="PNG")
    (folder / "truncated.png").write_bytes(good.getvalue()[: len(good.getvalue()) // 2])
    (folder / "notes.jpg").write_text("not an image at all\n")
    (folder / "empty.png").write_bytes(b"")
    return ["truncated.png", "notes.jpg", "empty.png"]


def test_mixed_folder(tmp_path, model_path):
    source = tmp_path / "in"
    expected = _make_mixed_folder(source)
    bad = _add_bad_files(source)
    before = _digests(source)
    out = tmp_path / "out"
    result = _enhance(str(source), "-o", str(out), "--checkpoint", str(model_path))
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    for name in bad:
        mentions = [line for line in lines if name in line]
        assert len(mentions) == 1, (name, result.stderr)
        assert mentions[0].startswith(str(source / name) + ": ")
        assert not (out / f"{Path(name).stem}.png").exists()
    assert f"{len(bad)} of {len(expected) + len(bad)} input(s) failed" in result.stderr
    for stem, size in expected.items():
        written = out / f"{stem}.png"
        with Image.open(written) as image:
            assert image.size == size, stem
            if stem == "alpha":
                assert image.mode == "RGBA"
                alpha = np.asarray(image)[:, :, 3]
                with Image.open(source / "alpha.png") as original:
                    assert np.array_equal(alpha, np.asarray(original)[:, :, 3])
            if stem == "deep":
                assert _png_bit_depth(written) == 16
            elif stem != "alpha":
                assert image.mode == "RGB" and _png_bit_depth(written) == 8
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{stem}.png" for stem in expected)
    assert all(p.stat().st_size > 0 for p in out.iterdir())
    assert _digests(source) == before


def test_all_good_exits_zero_and_keeps_existing_outputs(tmp_path, model_path):
    source = tmp_path / "in"
    source.mkdir()
    Image.fromarray(_rgb(10, 12, 1)).save(source / "a.png")
    Image.fromarray(_rgb(10, 12, 2)).save(source / "b.jpg")
    out = tmp_path / "out"
    assert _enhance(str(source), "-o", str(out), "--checkpoint", str(model_path)).returncode == 0
    (out / "a.png").write_bytes(b"keep me")
    again = _enhance(str(source), "-o", str(out), "--checkpoint", str(model_path))
    assert again.returncode == 0 and "kept 2 existing output(s)" in again.stderr
    assert (out / "a.png").read_bytes() == b"keep me"
    replaced = _enhance(str(source), "-o", str(out), "--checkpoint", str(model_path), "--overwrite")
    assert replaced.returncode == 0
    assert Image.open(out / "a.png").size == (12, 10)


def test_output_folder_is_the_input_folder(tmp_path, model_path):
    source = tmp_path / "photos"
    source.mkdir()
    Image.fromarray(_rgb(9, 11, 1)).save(source / "night.png")
    Image.fromarray(_rgb(9, 11, 2)).save(source / "street.jpg")
    before = _digests(source)
    result = _enhance(str(source), "-o", str(source), "--checkpoint", str(model_path))
    assert result.returncode == 0, result.stderr
    after = _digests(source)
    assert {k: after[k] for k in before} == before  # no input touched
    assert (source / "night_enhanced.png").exists() and (source / "street.png").exists()
    assert "night.png" in result.stderr and "night_enhanced.png" in result.stderr and "overwrite an input" in result.stderr


def test_inputs_with_the_same_stem_do_not_overwrite_each_other(tmp_path, model_path):
    source = tmp_path / "in"
    source.mkdir()
    Image.fromarray(_rgb(8, 8, 1)).save(source / "a.jpg")
    Image.fromarray(_rgb(6, 7, 2)).save(source / "a.png")
    out = tmp_path / "out"
    result = _enhance(str(source), "-o", str(out), "--checkpoint", str(model_path))
    assert result.returncode == 0, result.stderr
    assert Image.open(out / "a_jpg.png").size == (8, 8)
    assert Image.open(out / "a_png.png").size == (7, 6)
    assert not (out / "a.png").exists()
    assert "same output name" in result.stderr


def test_recursive_keeps_sub_folders(tmp_path, model_path):
    source = tmp_path / "in"
    (source / "day1").mkdir(parents=True)
    (source / "day2").mkdir()
    Image.fromarray(_rgb(5, 6, 1)).save(source / "day1" / "x.png")
    Image.fromarray(_rgb(5, 6, 2)).save(source / "day2" / "x.png")
    out = tmp_path / "out"
    result = _enhance(str(source), "-o", str(out), "--checkpoint", str(model_path), "--recursive")
    assert result.returncode == 0, result.stderr
    assert (out / "day1" / "x.png").exists() and (out / "day2" / "x.png").exists()


def test_garbage_checkpoint_is_refused_in_one_line(tmp_path):
    source = tmp_path / "in"
    source.mkdir()
    Image.fromarray(_rgb(5, 6, 1)).save(source / "x.png")
    garbage = tmp_path / "model.pt"
    garbage.write_bytes(os.urandom(300))
    result = _enhance(str(source), "-o", str(tmp_path / "out"), "--checkpoint", str(garbage))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_usage_errors_exit_2(tmp_path, model_path):
    assert _enhance(str(tmp_path / "missing"), "-o", str(tmp_path / "o"), "--checkpoint", str(model_path)).returncode == 2
    (tmp_path / "empty").mkdir()
    assert _enhance(str(tmp_path / "empty"), "-o", str(tmp_path / "o"), "--checkpoint", str(model_path)).returncode == 2
    result = _enhance(str(tmp_path / "empty"), "-o", str(tmp_path / "o"), "--png-compression", "12")
    assert result.returncode == 2 and "Traceback" not in result.stderr


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0,
                    reason="running as root: chmod 000 does not stop root from reading a file")
def test_unreadable_file_is_named(tmp_path, model_path):
    source = tmp_path / "in"
    source.mkdir()
    Image.fromarray(_rgb(5, 6, 1)).save(source / "secret.png")
    Image.fromarray(_rgb(5, 6, 2)).save(source / "fine.png")
    (source / "secret.png").chmod(0)
    try:
        result = _enhance(str(source), "-o", str(tmp_path / "out"), "--checkpoint", str(model_path))
    finally:
        (source / "secret.png").chmod(0o644)
    assert result.returncode == 1
    assert "secret.png: permission denied" in result.stderr and "Traceback" not in result.stderr


def test_an_interrupted_write_leaves_no_partial_png(tmp_path, monkeypatch):
    from ruas_nni.inference.enhance import write_enhanced

    def interrupted_save(self, fp, *args, **kwargs):
        fp.write(b"\x89PNG\r\n\x1a\n partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(Image.Image, "save", interrupted_save)
    with pytest.raises(KeyboardInterrupt):
        write_enhanced(tmp_path / "x.png", torch.rand(3, 4, 5), None, 8)
    assert list(tmp_path.iterdir()) == []


def test_plan_jobs_never_targets_an_input(tmp_path):
    from ruas_nni.inference.enhance import plan_jobs

    for name in ("a.png", "a_enhanced.png", "b.jpg", "b.png", "c.tif", "x.jpg", "y.jpg"):
        (tmp_path / name).write_bytes(name.encode())
    os.link(tmp_path / "a.png", tmp_path / "x.png")  # x.jpg's output name is a hard link to an input
    (tmp_path / "y.png").symlink_to(tmp_path / "c.tif")  # y.jpg's output name is a symlink to an input
    inputs = [tmp_path / n for n in ("a.png", "a_enhanced.png", "b.jpg", "b.png", "c.tif", "x.jpg", "y.jpg")]
    sources = [(p, tmp_path) for p in inputs] + [(tmp_path / "c.tif", None)]  # the same file twice: once
    plan = plan_jobs(sources, tmp_path, overwrite=True)
    targets = [job.target for job in plan.jobs + plan.existing]
    assert len(plan.jobs) == len(inputs) and len(set(targets)) == len(targets)
    protected = {p.resolve() for p in inputs} | {tmp_path / "x.png", tmp_path / "y.png"}
    assert not any(t in protected or t.resolve() in protected for t in targets)
    by_source = {job.source.name: job.target.name for job in plan.jobs}
    assert by_source["a.png"] == "a_enhanced_2.png"  # a_enhanced.png is an input
    assert by_source["b.jpg"] == "b_jpg.png" and by_source["b.png"] == "b_png.png"
    assert by_source["x.jpg"] == "x_enhanced.png" and by_source["y.jpg"] == "y_enhanced.png"
    assert len(plan.notes) >= 5


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_failure_inside_the_network_fails_that_file_only(tmp_path, model_path, monkeypatch, capsys, workers):
    from ruas_nni.cli import main
    from ruas_nni.inference.enhance import Enhancer
    from ruas_nni.inference.graph_enhancer import GraphEnhancer

    source = tmp_path / "in"
    source.mkdir()
    Image.fromarray(_rgb(10, 12, 1)).save(source / "fine.png")
    Image.fromarray(_rgb(13, 17, 2)).save(source / "huge.png")
    original, original_ort = Enhancer.run_window, GraphEnhancer._window

    def run_window(self, window, *gain):
        if window.shape[-2:] == (13, 17):
            raise RuntimeError("out of memory (simulated)")
        return original(self, window, *gain)

    def ort_window(self, batch, *gain):  # the PyTorch-free engine with a cached graph (the default on CPU)
        if batch.shape[-2:] == (13, 17):
            raise RuntimeError("out of memory (simulated)")
        return original_ort(self, batch, *gain)

    monkeypatch.setattr(Enhancer, "run_window", run_window)
    monkeypatch.setattr(GraphEnhancer, "_window", ort_window)
    status = main(["enhance", str(source), "-o", str(tmp_path / "out"), "--checkpoint", str(model_path), "--quiet",
                   "--workers", workers])
    stderr = capsys.readouterr().err
    assert status == 1
    assert f"{source / 'huge.png'}: enhancement failed (RuntimeError: out of memory (simulated))" in stderr
    assert (tmp_path / "out" / "fine.png").exists() and not (tmp_path / "out" / "huge.png").exists()
