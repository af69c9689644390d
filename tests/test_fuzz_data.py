"""Property-based fuzzing of the image loader: any bytes give a clean image or a clean error."""

import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from ruas_nni.base.images import ImageReadError, LoadedImage, read_image, write_png

MODES = ("L", "RGB", "RGBA", "LA", "P", "CMYK", "I;16", "1")
FORMATS = {"PNG": ".png", "JPEG": ".jpg", "BMP": ".bmp", "TIFF": ".tif", "WEBP": ".webp", "GIF": ".gif"}
SAVABLE = {
    "PNG": {"L", "RGB", "RGBA", "LA", "P", "I;16", "1"},
    "JPEG": {"L", "RGB", "CMYK"},
    "BMP": {"L", "RGB", "P", "1"},
    "TIFF": {"L", "RGB", "RGBA", "CMYK", "I;16", "1", "P"},
    "WEBP": {"RGB", "RGBA"},
    "GIF": {"L", "P"},
}


def _encode(array: np.ndarray, mode: str, fmt: str) -> bytes:
    rgb = Image.fromarray(array)
    if mode == "I;16":
        image = Image.fromarray(array[:, :, 0].astype(np.uint16) * 257)
    elif mode == "RGBA":
        image = Image.fromarray(np.dstack([array, array[:, :, :1]]))
    else:
        image = rgb.convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def _check_clean(image: LoadedImage) -> None:
    assert image.rgb.dtype == torch.float32 and image.rgb.shape[0] == 3
    assert image.rgb.shape[1] >= 1 and image.rgb.shape[2] >= 1
    assert torch.isfinite(image.rgb).all() and image.rgb.min() >= 0 and image.rgb.max() <= 1
    if image.alpha is not None:
        assert image.alpha.shape == (1, *image.rgb.shape[1:])
    assert image.bit_depth in (8, 16)


@st.composite
def encoded_images(draw):
    fmt = draw(st.sampled_from(sorted(FORMATS)))
    mode = draw(st.sampled_from(sorted(SAVABLE[fmt])))
    h = draw(st.integers(1, 24))
    w = draw(st.integers(1, 24))
    seed = draw(st.integers(0, 2**16))
    array = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    return fmt, mode, (h, w), _encode(array, mode, fmt)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sample=encoded_images())
def test_every_valid_image_loads_at_its_size(tmp_path, sample):
    fmt, mode, (h, w), data = sample
    path = tmp_path / f"img{FORMATS[fmt]}"
    path.write_bytes(data)
    image = read_image(path)
    _check_clean(image)
    assert image.rgb.shape[1:] == (h, w), (fmt, mode)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sample=encoded_images(), cut=st.floats(0, 1), flips=st.lists(st.tuples(st.floats(0, 1), st.integers(0, 255)),
                                                                    max_size=6))
def test_corrupted_bytes_give_an_image_or_an_image_read_error(tmp_path, sample, cut, flips):
    fmt, _mode, _size, data = sample
    corrupted = bytearray(data[: max(0, int(len(data) * cut))] if cut < 0.95 else data)
    for where, value in flips:
        if corrupted:
            corrupted[int(where * (len(corrupted) - 1))] = value
    path = tmp_path / f"bad{FORMATS[fmt]}"
    path.write_bytes(bytes(corrupted))
    try:
        image = read_image(path)
    except ImageReadError as exc:
        message = str(exc)
        assert message and "\n" not in message and "Traceback" not in message
    else:
        _check_clean(image)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(h=st.integers(1, 16), w=st.integers(1, 16), depth=st.sampled_from([8, 16]), alpha=st.booleans(),
       seed=st.integers(0, 1000))
def test_written_pngs_read_back(tmp_path, h, w, depth, alpha, seed):
    generator = torch.Generator().manual_seed(seed)
    rgb = torch.rand(3, h, w, generator=generator)
    a = torch.rand(1, h, w, generator=generator) if alpha else None
    back = read_image(write_png(tmp_path / "out.png", rgb, a, depth))
    top = 255 if depth == 8 else 65535
    assert back.bit_depth == depth and (back.alpha is not None) == alpha
    assert (back.rgb - rgb).abs().max() <= 0.5 / top + 1e-6


@pytest.mark.parametrize("damage", ["idat-crc", "cut-in-idat", "no-iend"])
def test_a_damaged_16_bit_png_is_an_image_read_error_not_a_crash(tmp_path, damage):
    """torchvision's PNG decoder crashes the process (SIGSEGV) on a 16-bit PNG whose IDAT CRC is wrong
    (found by the fuzz test above): read_image must say what is wrong in one line instead. Run in a
    child process, so that a crash fails this test rather than ending the suite."""
    path = tmp_path / "damaged.png"
    write_png(path, torch.rand(3, 9, 7, generator=torch.Generator().manual_seed(0)), bit_depth=16)
    assert read_image(path).bit_depth == 16  # whole, it reads at 16 bits
    data = bytearray(path.read_bytes())
    idat = data.index(b"IDAT")
    length = int.from_bytes(data[idat - 4:idat], "big")
    if damage == "idat-crc":
        data[idat + 4 + length] ^= 0xFF
    elif damage == "cut-in-idat":
        data = data[:idat + 4 + length // 2]
    else:
        data = data[:data.index(b"IEND") - 4]
    path.write_bytes(bytes(data))
    code = ("import sys\nfrom ruas_nni.base.images import ImageReadError, read_image\n"
            f"try:\n    read_image({str(path)!r})\nexcept ImageReadError as exc:\n    print(exc)\n    sys.exit(3)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            cwd=Path(__file__).resolve().parents[1])
    assert result.returncode == 3, (result.returncode, result.stderr[-500:])
    assert len(result.stdout.strip().splitlines()) == 1 and "16-bit PNG" in result.stdout
