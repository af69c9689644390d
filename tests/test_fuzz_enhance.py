"""Property-based: ``ruas-nni enhance`` on random images in random modes and formats, with random byte
corruptions, either writes a PNG of the image's size or names the file in one clean line (the image
loader's own fuzzing is in ``test_fuzz_data.py``)."""

from __future__ import annotations

import contextlib
import io
import random
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from PIL import Image

from ruas_nni.cli import main
from ruas_nni.model.checkpoint import Checkpoint, save_checkpoint
from ruas_nni.model.export import NetworkOptions, export
from ruas_nni.model.genotype import PAPER_GENOTYPE

MODES = ["RGB", "L", "RGBA", "LA", "P", "CMYK", "I;16", "1", "I", "F"]
FORMATS = {"PNG": ".png", "JPEG": ".jpg", "BMP": ".bmp", "TIFF": ".tif", "PPM": ".ppm", "WEBP": ".webp"}


@pytest.fixture(scope="module")
def model_path(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    checkpoint = Checkpoint.from_network(export(PAPER_GENOTYPE), PAPER_GENOTYPE, NetworkOptions())
    return save_checkpoint(checkpoint, tmp_path_factory.mktemp("fuzz-model") / "model.pt")


def _encode(mode: str, fmt: str, height: int, width: int, seed: int) -> bytes | None:
    rng = np.random.default_rng(seed)
    if mode == "I;16":
        image = Image.fromarray((rng.random((height, width)) * 65535).astype(np.uint16))
    else:
        image = Image.fromarray((rng.random((height, width, 3)) * 255).astype(np.uint8)).convert(mode)
    buffer = io.BytesIO()
    try:
        image.save(buffer, format=fmt)
    except (OSError, ValueError, KeyError):
        return None  # this format cannot hold this mode: nothing to test
    return buffer.getvalue()


def _corrupt(data: bytes, how: str, seed: int) -> bytes:
    rng = random.Random(seed)
    if how == "truncate":
        return data[: rng.randrange(0, len(data))]
    if how == "flip":
        corrupted = bytearray(data)
        for _ in range(rng.randint(1, 8)):
            corrupted[rng.randrange(len(corrupted))] = rng.randrange(256)
        return bytes(corrupted)
    if how == "junk":
        return bytes(rng.randrange(256) for _ in range(rng.randint(0, 64)))
    return data


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(mode=st.sampled_from(MODES), fmt=st.sampled_from(sorted(FORMATS)), height=st.integers(1, 24),
       width=st.integers(1, 24), corruption=st.sampled_from(["none", "none", "truncate", "flip", "junk"]),
       seed=st.integers(0, 2**16), wrong_suffix=st.booleans())
def test_enhance_gives_a_png_or_one_clean_line(model_path, mode, fmt, height, width, corruption, seed, wrong_suffix):
    data = _encode(mode, fmt, height, width, seed)
    if data is None:
        event("format cannot hold this mode")
        return
    data = _corrupt(data, corruption, seed)
    with tempfile.TemporaryDirectory() as tmp:
        source, out = Path(tmp) / "in", Path(tmp) / "out"
        source.mkdir()
        path = source / f"x{'.png' if wrong_suffix else FORMATS[fmt]}"
        path.write_bytes(data)
        errors = io.StringIO()
        with contextlib.redirect_stderr(errors):
            status = main(["enhance", str(source), "-o", str(out), "--checkpoint", str(model_path), "--quiet",
                           "--workers", "1"])
        stderr = errors.getvalue()
        event(f"exit status {status}")
        assert "Traceback" not in stderr
        assert path.read_bytes() == data  # the input is never modified
        written = out / "x.png"
        leftovers = [p.name for p in out.iterdir() if p.name.startswith(".")] if out.exists() else []
        assert leftovers == []  # no temporary file left behind
        if status == 0:
            assert stderr.strip() == ""
            from ruas_nni.base.images import read_image

            expected = read_image(path)
            with Image.open(written) as image:
                image.load()
                assert image.size == expected.size
        else:
            assert status == 1, stderr
            lines = stderr.strip().splitlines()
            assert lines[0].startswith(f"{path}: ") and len(lines[0]) > len(f"{path}: ")
            assert lines[-1] == "1 of 1 input(s) failed" and len(lines) == 2
            assert not written.exists()
