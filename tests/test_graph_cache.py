"""The cached ONNX graph: ``ruas-nni enhance`` without PyTorch (``ruas_nni.inference.graph_cache``).

Real photos (LIME, DICM, LOL from ``../shared``), the authors' ``lol.pt`` and the real ONNX Runtime."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("onnxruntime")

# Reports at exit whether PyTorch (or NNI / Lightning) was imported during the command.
_PROBE = (
    "import atexit, sys\n"
    "def report():\n"
    "    loaded = sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'torchvision', 'nni', 'lightning', "
    "'pytorch_lightning'})\n"
    "    print('LOADED=' + ','.join(loaded), file=sys.stderr)\n"
    "atexit.register(report)\n"
    "from ruas_nni.cli import main\n"
    "sys.exit(main(sys.argv[1:]))\n"
)


def _enhance(cache, *args):
    env = dict(os.environ, RUAS_NNI_CACHE_DIR=str(cache))
    result = subprocess.run([sys.executable, "-c", _PROBE, "enhance", *map(str, args), "--quiet"],
                            capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr
    loaded = [line for line in result.stderr.splitlines() if line.startswith("LOADED=")]
    assert len(loaded) == 1, result.stderr
    return loaded[0][len("LOADED="):], result.stderr


@pytest.fixture(scope="module")
def photos(shared_data, tmp_path_factory):
    """A few real low-light photos of different sizes and formats (BMP, JPG, PNG)."""
    folder = tmp_path_factory.mktemp("photos")
    for name in ("unpaired/lime/8.bmp", "unpaired/lime/10.bmp", "unpaired/dicm/02.jpg", "lol_val/low/102.png"):
        source = shared_data / name
        if not source.exists():
            pytest.skip(f"needs {source}")
        shutil.copy(source, folder / f"{source.parent.name}_{source.name}")
    return folder


def _pixels(folder):
    return {p.name: np.asarray(Image.open(p), dtype=np.int16) for p in sorted(folder.glob("*.png"))}


def _entries(cache):
    return sorted((cache / "onnx").glob("*.ruasgraph")) if (cache / "onnx").is_dir() else []


def test_cached_graph_runs_without_torch_and_matches_the_torch_engine(reference_dir, photos, tmp_path):
    checkpoint = reference_dir / "lol.pt"
    cache = tmp_path / "cache"
    loaded, _ = _enhance(cache, photos, "-o", tmp_path / "first", "--checkpoint", checkpoint)
    assert "torch" in loaded  # the first run reads the checkpoint and writes the graph
    assert len(_entries(cache)) == 1
    loaded, _ = _enhance(cache, photos, "-o", tmp_path / "cached", "--checkpoint", checkpoint)
    assert loaded == "", f"a cached-graph run imported {loaded}"
    _enhance(cache, photos, "-o", tmp_path / "torch", "--checkpoint", checkpoint, "--engine", "torch")

    first, cached, torch_engine = (_pixels(tmp_path / name) for name in ("first", "cached", "torch"))
    assert sorted(cached) == sorted(torch_engine) and len(cached) == 4
    for name in cached:
        assert np.array_equal(cached[name], first[name]), name
        assert np.abs(cached[name] - torch_engine[name]).max() <= 1, name


def test_ort_enhancer_equals_the_enhancer_bit_for_bit_tiled_or_not(reference_dir, photos, tmp_path):
    """The PyTorch-free enhancer is the ``Enhancer``'s ONNX Runtime engine exactly, on one tile or many."""
    from ruas_nni.inference.enhance import Enhancer, load_model
    from ruas_nni.inference.graph_cache import OrtEnhancer, graph_for
    from ruas_nni.inference.tiling import plan_tiles

    checkpoint, path = load_model(reference_dir / "lol.pt")
    graph, cached = graph_for(path, "final", use_cache=False)
    assert graph is not None and not cached and graph.halo > 0
    rgb = np.asarray(Image.open(photos / "lime_10.bmp").convert("RGB"))  # 1039 x 789
    with Enhancer(checkpoint, engine="onnxruntime", workers=2) as enhancer:
        expected = enhancer.submit_uint8(rgb).result()
    for tile_pixels in (0, 60_000):
        with OrtEnhancer(graph, workers=2, max_tile_pixels=tile_pixels) as fast:
            assert len(plan_tiles(789, 1039, fast.halo, fast.max_tile_pixels)) == (21 if tile_pixels else 1)
            assert np.array_equal(fast.submit_uint8(rgb).result(), expected), tile_pixels


def test_a_damaged_cache_entry_is_rebuilt(reference_dir, photos, tmp_path):
    from ruas_nni.inference.graph_cache import CachedGraph, read_entry, write_entry

    checkpoint = reference_dir / "lol.pt"
    cache = tmp_path / "cache"
    _enhance(cache, photos, "-o", tmp_path / "good", "--checkpoint", checkpoint)
    (entry,) = _entries(cache)
    key = entry.stem
    good = read_entry(key, cache)
    assert good is not None

    damages = {
        "truncated": lambda: entry.write_bytes(entry.read_bytes()[: entry.stat().st_size // 2]),
        "flipped": lambda: entry.write_bytes(entry.read_bytes()[:-10] + b"\x00" * 10),
        "garbage": lambda: entry.write_bytes(b"not a graph at all"),
        "empty": lambda: entry.write_bytes(b""),
        # whole and checksummed, but not a graph ONNX Runtime can load
        "invalid onnx": lambda: write_entry(key, CachedGraph(b"\x08\x07garbage", good.halo, good.max_channels,
                                                             "final"), cache),
    }
    expected = _pixels(tmp_path / "good")
    for label, damage in damages.items():
        damage()
        out = tmp_path / label.replace(" ", "_")
        _, stderr = _enhance(cache, photos, "-o", out, "--checkpoint", checkpoint)
        assert "Traceback" not in stderr, label
        assert read_entry(key, cache) == good, f"{label}: the entry was not rewritten"
        got = _pixels(out)
        assert sorted(got) == sorted(expected) and all(np.array_equal(got[n], expected[n]) for n in got), label


def test_no_cache_and_exposure_models_write_nothing(reference_dir, photos, tmp_path):
    from ruas_nni.inference.graph_cache import cache_key, graph_for
    from ruas_nni.model.checkpoint import load_checkpoint

    checkpoint = reference_dir / "lol.pt"
    cache = tmp_path / "cache"
    _enhance(cache, photos, "-o", tmp_path / "out", "--checkpoint", checkpoint, "--no-cache")
    assert _entries(cache) == []
    # Exposure normalisation needs the whole image's gain: the ONNX Runtime graph cannot apply it, so
    # nothing is cached and the command runs the torch engine.
    os.environ["RUAS_NNI_CACHE_DIR"], saved = str(cache), os.environ.get("RUAS_NNI_CACHE_DIR")
    try:
        graph, _ = graph_for(checkpoint, "final", 0.45, None,
                             load=lambda: load_checkpoint(checkpoint).with_exposure(0.45))
    finally:
        if saved is None:
            del os.environ["RUAS_NNI_CACHE_DIR"]
        else:
            os.environ["RUAS_NNI_CACHE_DIR"] = saved
    assert graph is None and _entries(cache) == []
    loaded, _ = _enhance(cache, photos / "lime_8.bmp", "-o", tmp_path / "exposure", "--checkpoint", checkpoint,
                         "--exposure", "0.45")
    assert "torch" in loaded and (tmp_path / "exposure" / "lime_8.png").is_file()
    # The key follows the checkpoint's content, the stage and the exposure override.
    keys = {cache_key(checkpoint, "final"), cache_key(checkpoint, "iem"), cache_key(checkpoint, "final", 0.45),
            cache_key(reference_dir / "upe.pt", "final")}
    assert len(keys) == 4
    copy = tmp_path / "renamed.pt"
    shutil.copy(checkpoint, copy)
    assert cache_key(copy, "final") == cache_key(checkpoint, "final")
