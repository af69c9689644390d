"""``ruas-nni evaluate --no-reference`` and its measures (docs/no_reference.md): values computed by hand
on tiny uint8 images, every threshold on both sides, the two modes end to end, and the one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ruas_nni.cli import main
from ruas_nni.inference.no_reference import (
    NoReferenceResult,
    PhotoMeasures,
    brightness,
    clip_fraction,
    colour_cast,
    crush_fraction,
    evaluate_no_reference,
    find_low_light,
    measure,
    posterisation,
)


def _image(pixels) -> np.ndarray:
    """``H x W x 3`` uint8 from nested lists of RGB triples (or of grey levels)."""
    array = np.asarray(pixels, dtype=np.uint8)
    return np.repeat(array[..., None], 3, axis=2) if array.ndim == 2 else array


# ---------------------------------------------------------------------------- measures, by hand

def test_clip_one_of_four_pixels_and_its_thresholds() -> None:
    low = _image([[199, 10], [200, 10]])
    out = _image([[250, 249], [255, 100]])
    # (0,0): out 250 >= 250 and in 199 < 200: clipped; (0,1): out 249; (1,0): in 200 is not < 200
    assert clip_fraction(low, out) == 0.25
    # the max channel decides: one channel at 250 is enough, in the output; one at 200 rules out, in the input
    low = np.zeros((1, 2, 3), np.uint8)
    low[0, 1, 2] = 200
    out = np.zeros((1, 2, 3), np.uint8)
    out[0, :, 1] = 250
    assert clip_fraction(low, out) == 0.5


def test_crush_and_its_thresholds() -> None:
    low = _image([[3, 3, 2, 40]])
    out = _image([[5, 6, 0, 0]])
    # in 3 / out 5: crushed; out 6: not; in 2: not (it was black already); in 40 / out 0: crushed
    assert crush_fraction(low, out) == 0.5


def test_brightness_is_the_mean_of_all_channels_on_0_to_1() -> None:
    out = np.zeros((1, 2, 3), np.uint8)
    out[0, 0] = (255, 0, 0)
    out[0, 1] = (51, 51, 51)
    assert brightness(out) == pytest.approx((255 + 3 * 51) / 6 / 255)


def test_posterisation_counts_horizontal_and_vertical_pairs() -> None:
    # 1 x 3: two horizontal pairs, no vertical ones
    low = _image([[10, 11, 13]])
    assert posterisation(low, _image([[0, 8, 20]])) == 0.5    # step 1 -> jump 8: yes; step 2 -> jump 12: no
    assert posterisation(low, _image([[0, 7, 20]])) == 0.0    # jump 7 is not >= 8
    assert posterisation(_image([[10, 12]]), _image([[0, 100]])) == 0.0  # input step 2 is not <= 1
    assert posterisation(_image([[10, 10]]), _image([[100, 92]])) == 1.0  # step 0, jump 8 downwards
    # 2 x 2: four pairs (two horizontal, two vertical); one vertical pair posterised
    low = _image([[50, 50], [51, 60]])
    out = _image([[100, 100], [108, 140]])
    # horizontal: (100,100) jump 0; (108,140) in step 9. vertical: 50->51 step 1 jump 8: yes; 50->60 step 10
    assert posterisation(low, out) == 0.25
    assert posterisation(_image([[5]]), _image([[200]])) == 0.0  # one pixel: no pairs


def test_cast_of_a_known_tint_and_its_pixel_thresholds() -> None:
    low = np.full((1, 1, 3), 12, np.uint8)                    # neutral: (1/3, 1/3, 1/3)
    out = np.array([[[60, 30, 30]]], np.uint8)               # (1/2, 1/4, 1/4)
    cast, pixels = colour_cast(low, out)
    assert pixels == 1 and cast == pytest.approx(100 * (1 / 2 - 1 / 3))
    assert colour_cast(np.full((1, 1, 3), 11, np.uint8), out) == (0.0, 0)   # input max 11 < 12: none qualifies
    # output max channel: 25 and 230 out, 26 and 229 in (0.1 * 255 = 25.5, 0.9 * 255 = 229.5)
    low = np.full((1, 4, 3), 100, np.uint8)
    out = np.array([[[25, 0, 0], [26, 0, 0], [229, 229, 0], [230, 0, 0]]], np.uint8)
    cast, pixels = colour_cast(low, out)
    assert pixels == 2
    # output chromaticities (1, 0, 0) and (1/2, 1/2, 0): mean (3/4, 1/4, 0) against (1/3, 1/3, 1/3)
    assert cast == pytest.approx(100 * (3 / 4 - 1 / 3))


def test_cast_averages_per_pixel_chromaticities_not_summed_colours() -> None:
    low = np.array([[[100, 100, 100], [20, 20, 20]]], np.uint8)
    out = np.array([[[200, 0, 0], [30, 30, 30]]], np.uint8)
    # per pixel (1, 0, 0) and (1/3, 1/3, 1/3): mean red 2/3; summed colours would give 230 / 290
    assert colour_cast(low, out)[0] == pytest.approx(100 * (2 / 3 - 1 / 3))


def test_measure_checks_types_and_sizes() -> None:
    with pytest.raises(ValueError, match="differ in size"):
        measure(np.zeros((2, 3, 3), np.uint8), np.zeros((3, 2, 3), np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        measure(np.zeros((2, 2, 3), np.float32), np.zeros((2, 2, 3), np.uint8))
    m = measure(_image([[199, 10], [200, 10]]), _image([[250, 249], [255, 100]]))
    assert (m.clip, m.width, m.height) == (0.25, 2, 2)
    assert m.artefact == pytest.approx(m.clip + m.crush + m.post + m.cast / 100)


def _photo(clip=0.0, crush=0.0, bright=0.5, post=0.0, cast=0.0) -> PhotoMeasures:
    return PhotoMeasures(clip, crush, bright, post, cast, cast_pixels=1, width=1, height=1)


def test_mean_worst_and_ranking() -> None:
    result = NoReferenceResult({"a.png": _photo(clip=0.1, bright=0.4, cast=2.0),
                                "b.png": _photo(post=0.3, bright=0.6, cast=1.0),
                                "c.png": _photo(crush=0.05, bright=0.5, cast=8.0)})
    assert result.mean["clip"] == pytest.approx(0.1 / 3)
    assert result.mean["bright"] == pytest.approx(0.5)
    assert result.worst == {"clip": 0.1, "crush": 0.05, "bright": 0.4, "post": 0.3, "cast": 8.0}
    assert result.worst_image == {"clip": "a.png", "crush": "c.png", "bright": "a.png", "post": "b.png", "cast": "c.png"}
    # artefact: a 0.12, b 0.31, c 0.13
    assert result.ranked() == ["b.png", "c.png", "a.png"]
    payload = result.to_dict()
    assert set(payload) == {"mean", "worst", "worst_image", "per_image"}
    assert set(payload["per_image"]["a.png"]) == {"clip", "crush", "bright", "post", "cast", "cast_pixels",
                                                  "artefact", "width", "height"}


# ---------------------------------------------------------------------------- the command

def _write(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


@pytest.fixture(scope="module")
def tiny_real(tmp_path_factory) -> Path:
    """Three real low-light images: 40 x 48 crops of the demo data's photographs (scikit-image's),
    darkened with the demo data's camera model, so that the default model is quick on them."""
    from importlib import resources

    from ruas_nni.training.demo_data import EVAL_PHOTOS, SEED, synthesize_low_light

    folder = tmp_path_factory.mktemp("tiny") / "low"
    rng = np.random.default_rng(SEED)
    for name, file_name in EVAL_PHOTOS.items():
        with Image.open(str(resources.files("skimage") / "data" / file_name)) as image:
            photo = np.asarray(image.convert("RGB"))[100:140, 100:148]
        _write(folder / f"{name}.png", synthesize_low_light(photo, 0.06, rng))
    return folder


def _one_error_line(capsys) -> str:
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert "Traceback" not in captured.err
    return lines[0]


def test_model_mode_on_real_images_writes_json_sheet_and_last_line(tiny_real: Path, tmp_path: Path, capsys,
                                                                   one_thread) -> None:
    import torch

    from ruas_nni.base.images import read_image, to_uint
    from ruas_nni.inference.enhance import Enhancer, load_model

    out_json, sheet = tmp_path / "m.json", tmp_path / "sheet.png"
    code = main(["evaluate", "--no-reference", str(tiny_real), "--json", str(out_json), "--contact-sheet", str(sheet),
                 "--sheet-rows", "2", "--quiet"])
    assert code == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].split()[:6] == ["image", "clip", "crush", "bright", "post", "cast"]
    assert lines[-3].startswith("mean") and lines[-2].startswith("worst")
    assert lines[-1] == (f"wrote measures to {out_json} and a contact sheet of the 2 worst photos (input | output) "
                         f"to {sheet}")
    payload = json.loads(out_json.read_text())
    names = sorted(p.name for p in tiny_real.iterdir())
    assert sorted(payload["per_image"]) == names
    assert payload["settings"]["mode"] == "model"
    # the same numbers as enhancing with the default model by hand, the output rounded to 8 bits
    checkpoint, _ = load_model(None)
    with Enhancer(checkpoint, fold=False, device=torch.device("cpu")) as enhancer:
        for name in names:
            rgb = read_image(tiny_real / name).rgb
            expected = measure(to_uint(rgb), to_uint(enhancer(rgb))).to_dict()
            assert payload["per_image"][name] == pytest.approx(expected)
    values = [payload["per_image"][n]["post"] for n in names]
    assert payload["mean"]["post"] == pytest.approx(np.mean(values))
    assert payload["worst"]["post"] == pytest.approx(max(values))
    assert payload["worst"]["bright"] == pytest.approx(min(payload["per_image"][n]["bright"] for n in names))
    with Image.open(sheet) as picture:
        assert picture.format == "PNG"
        assert 2 * 320 < picture.height < 3 * 320  # two rows of 320-pixel panels plus captions


def test_outputs_mode_scores_given_pngs_against_inputs_of_another_format(tmp_path: Path, capsys) -> None:
    rng = np.random.default_rng(0)
    lows, outs = {}, {}
    for stem in ("2", "10"):
        lows[stem] = rng.integers(0, 60, (12, 16, 3), dtype=np.uint8)
        outs[stem] = np.clip(lows[stem].astype(int) * 5, 0, 255).astype(np.uint8)
        outs[stem][0, 0] = 255  # one clipped pixel (the input is < 60)
        _write(tmp_path / "low" / f"{stem}.bmp", lows[stem])
        _write(tmp_path / "out" / f"{stem}.png", outs[stem])
    target = tmp_path / "m.json"
    assert main(["evaluate", "--no-reference", str(tmp_path / "out"), "--inputs", str(tmp_path / "low"),
                 "--json", str(target), "--quiet"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert [line.split()[0] for line in out[1:3]] == ["2.bmp", "10.bmp"]  # input names, natural order
    assert out[-1] == f"wrote measures to {target}"
    payload = json.loads(target.read_text())
    assert payload["settings"]["mode"] == "outputs"
    for stem in ("2", "10"):
        assert payload["per_image"][f"{stem}.bmp"] == pytest.approx(measure(lows[stem], outs[stem]).to_dict())
        assert payload["per_image"][f"{stem}.bmp"]["clip"] >= 1 / (12 * 16)
    photos = find_low_light(tmp_path / "low")
    assert [p.name for p in photos] == ["2.bmp", "10.bmp"]


def test_evaluate_no_reference_keeps_only_the_worst_thumbnails(tmp_path: Path) -> None:
    from ruas_nni.inference.no_reference import NoReferencePhoto, contact_sheet

    photos = []
    for index, jump in enumerate((0, 40, 20)):  # artefacts grow with the output's checkerboard
        low = np.full((6, 6, 3), 30, np.uint8)
        out = np.full((6, 6, 3), 100, np.uint8)
        out[::2, ::2] += np.uint8(jump)
        photos.append(NoReferencePhoto(f"{index}.png", _write(tmp_path / "low" / f"{index}.png", low),
                                       _write(tmp_path / "out" / f"{index}.png", out)))
    result = evaluate_no_reference(photos, sheet_rows=2)
    assert list(result.per_image) == ["0.png", "1.png", "2.png"]
    assert set(result.sheet) == {"1.png", "2.png"}
    assert result.ranked(result.sheet) == ["1.png", "2.png"]
    assert contact_sheet(result)[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def pair_dirs(tmp_path: Path) -> tuple[Path, Path]:
    low = np.full((8, 10, 3), 20, np.uint8)
    _write(tmp_path / "low" / "a.jpg", low)
    _write(tmp_path / "out" / "a.png", low * 4)
    return tmp_path / "out", tmp_path / "low"


@pytest.mark.parametrize("argv, words", [
    ([], ["--data", "--no-reference"]),
    (["--data", "x", "--no-reference", "y"], ["--data", "--no-reference", "one of them"]),
    (["--data", "x", "--inputs", "y"], ["--inputs", "--no-reference"]),
    (["--data", "x", "--contact-sheet", "s.png"], ["--contact-sheet", "--no-reference"]),
    (["--no-reference", "x", "--side-by-side", "y"], ["--side-by-side", "--contact-sheet"]),
    (["--no-reference", "x", "--inputs", "y", "--checkpoint", "c.pt"], ["--checkpoint", "--inputs"]),
    (["--no-reference", "x", "--inputs", "y", "--exposure", "0.4"], ["--exposure", "no model runs"]),
])
def test_wrong_flag_combinations_are_one_line(argv, words, tmp_path: Path, capsys) -> None:
    assert main(["evaluate", *argv]) == 2
    line = _one_error_line(capsys)
    assert line.startswith("ruas-nni evaluate: error: ")
    for word in words:
        assert word in line


def test_bad_folders_and_files_are_one_line_and_write_nothing(pair_dirs, tmp_path: Path, capsys) -> None:
    outputs, inputs = pair_dirs
    target = tmp_path / "m.json"
    sheet = tmp_path / "s.png"

    def fails(*argv: str) -> str:
        assert main(["evaluate", "--no-reference", *argv, "--json", str(target), "--contact-sheet", str(sheet)]) == 2
        assert not target.exists() and not sheet.exists()
        assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary files left
        return _one_error_line(capsys)

    assert "no such folder" in fails(str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    assert "no image files" in fails(str(tmp_path / "empty"))
    assert "--inputs" in fails(str(outputs), "--inputs", str(tmp_path / "missing"))
    _write(inputs / "b.png", np.zeros((8, 10, 3), np.uint8))
    line = fails(str(outputs), "--inputs", str(inputs))
    assert "no output for b.png" in line
    (inputs / "b.png").unlink()
    _write(outputs / "a.png", np.zeros((8, 9, 3), np.uint8))  # one column short
    line = fails(str(outputs), "--inputs", str(inputs))
    assert str(outputs / "a.png") in line and "9x8" in line and "10x8" in line
    (outputs / "a.png").write_bytes(b"not a picture")
    line = fails(str(outputs), "--inputs", str(inputs))
    assert str(outputs / "a.png") in line and "cannot read the output" in line
    (outputs / "a.jpg").write_bytes(b"")
    assert "share the stem" in fails(str(outputs), "--inputs", str(inputs))


def test_bad_output_paths_are_one_line(pair_dirs, tmp_path: Path, capsys) -> None:
    outputs, inputs = pair_dirs
    assert main(["evaluate", "--no-reference", str(outputs), "--inputs", str(inputs),
                 "--contact-sheet", str(tmp_path / "sheet.jpg")]) == 2
    assert ".png" in _one_error_line(capsys)
    assert main(["evaluate", "--no-reference", str(outputs), "--inputs", str(inputs), "--json", str(tmp_path)]) == 2
    assert "--json" in _one_error_line(capsys)
