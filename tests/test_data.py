import numpy as np
import pytest
import torch
from PIL import Image

from ruas_nni.base.images import ImageReadError, find_images, read_image, write_png
from ruas_nni.training.demo_data import make_demo_data


def test_8bit_read_matches_the_authors_conversion(tmp_path):
    array = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    Image.fromarray(array).save(tmp_path / "a.png")
    image = read_image(tmp_path / "a.png")
    expected = torch.from_numpy(array.astype(np.float32) / 255.0).permute(2, 0, 1)
    assert image.bit_depth == 8 and image.alpha is None and torch.equal(image.rgb, expected)


def test_png_round_trips_at_8_and_16_bits_with_alpha(tmp_path):
    rgb, alpha = torch.rand(3, 9, 4), torch.rand(1, 9, 4)
    for depth, tol in ((8, 0.5 / 255), (16, 0.5 / 65535)):
        path = write_png(tmp_path / f"x{depth}.png", rgb, alpha, depth)
        back = read_image(path)
        assert back.bit_depth == depth
        assert (back.rgb - rgb).abs().max() <= tol + 1e-7
        assert (back.alpha - alpha).abs().max() <= tol + 1e-7
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x16.png", "x8.png"]


def test_exif_rotation_and_grayscale(tmp_path):
    array = np.zeros((4, 6), np.uint8)
    array[0, :] = 200
    image = Image.fromarray(array)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    image.save(tmp_path / "r.jpg", exif=exif, quality=100)
    loaded = read_image(tmp_path / "r.jpg")
    assert loaded.rgb.shape == (3, 6, 4)
    assert torch.equal(loaded.rgb[0], loaded.rgb[1])


def test_unreadable_files_give_one_line_reasons(tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "text.jpg").write_text("hello")
    with pytest.raises(ImageReadError, match="empty"):
        read_image(tmp_path / "empty.png")
    with pytest.raises(ImageReadError, match="not an image"):
        read_image(tmp_path / "text.jpg")
    with pytest.raises(ImageReadError, match="no such file"):
        read_image(tmp_path / "missing.png")


def test_find_images_sorts_and_skips_non_images(tmp_path):
    for name in ("b.png", "a.JPG", "notes.txt", ".hidden.png"):
        (tmp_path / name).write_bytes(b"x")
    assert [p.name for p in find_images([tmp_path])] == ["a.JPG", "b.png"]
    with pytest.raises(FileNotFoundError):
        find_images([tmp_path / "nope"])


def test_demo_data_is_deterministic_and_dark(tmp_path, demo_data):
    again = make_demo_data(tmp_path / "again")
    first = sorted(p.relative_to(demo_data.root) for p in demo_data.root.rglob("*.png"))
    second = sorted(p.relative_to(again.root) for p in again.root.rglob("*.png"))
    assert first == second and len(first) == 12
    for rel in first:
        assert (demo_data.root / rel).read_bytes() == (again.root / rel).read_bytes()
    for low in (demo_data.eval / "low").iterdir():
        low_mean = np.asarray(Image.open(low)).mean()
        high_mean = np.asarray(Image.open(demo_data.eval / "high" / low.name)).mean()
        assert low_mean < 0.45 * high_mean
