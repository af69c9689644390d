"""The cached ONNX graph: ``ruas-nni enhance`` without PyTorch (``ruas_nni.inference.graph_cache``).

Real photos (LIME, DICM, LOL from ``../shared``), the authors' ``lol.pt`` and the real ONNX Runtime."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

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
    # The compiled native libraries (the cache's native/ folder) are not what these tests look at:
    # every test's cache shares the session's (conftest's RUAS_NNI_CACHE_DIR), so each C source is
    # compiled once per session instead of once per test. The ONNX graphs stay in each test's own.
    shared = Path(os.environ["RUAS_NNI_CACHE_DIR"]) / "native"
    shared.mkdir(parents=True, exist_ok=True)
    cache.mkdir(parents=True, exist_ok=True)
    if not (cache / "native").is_symlink():
        (cache / "native").symlink_to(shared, target_is_directory=True)
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


def test_graph_enhancer_equals_the_enhancer_bit_for_bit_tiled_or_not(reference_dir, photos, tmp_path):
    """The PyTorch-free enhancer is the ``Enhancer``'s ONNX Runtime engine exactly, on one tile or many."""
    from ruas_nni.inference.enhance import Enhancer, load_model
    from ruas_nni.inference.graph_cache import graph_for
    from ruas_nni.inference.graph_enhancer import GraphEnhancer
    from ruas_nni.inference.tiling import plan_tiles

    checkpoint, path = load_model(reference_dir / "lol.pt")
    graph, cached = graph_for(path, "final", use_cache=False)
    assert graph is not None and not cached and graph.halo > 0
    rgb = np.asarray(Image.open(photos / "lime_10.bmp").convert("RGB"))  # 1039 x 789
    with Enhancer(checkpoint, engine="onnxruntime", workers=2) as enhancer:
        expected = enhancer.submit_uint8(rgb).result()
    for tile_pixels in (0, 60_000):
        with GraphEnhancer(graph, workers=2, max_tile_pixels=tile_pixels) as fast:
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


def test_no_cache_writes_nothing_and_the_key_follows_content_stage_and_exposure(reference_dir, photos, tmp_path):
    from ruas_nni.inference.graph_cache import cache_key

    checkpoint = reference_dir / "lol.pt"
    cache = tmp_path / "cache"
    _enhance(cache, photos / "lime_8.bmp", "-o", tmp_path / "out", "--checkpoint", checkpoint, "--no-cache")
    assert _entries(cache) == [] and (tmp_path / "out" / "lime_8.png").is_file()
    keys = {cache_key(checkpoint, "final"), cache_key(checkpoint, "iem"), cache_key(checkpoint, "final", 0.45),
            cache_key(checkpoint, "final", 0.45, 0.5), cache_key(reference_dir / "upe.pt", "final")}
    assert len(keys) == 5
    copy = tmp_path / "renamed.pt"
    shutil.copy(checkpoint, copy)
    assert cache_key(copy, "final") == cache_key(checkpoint, "final")


@pytest.mark.parametrize("exposure", [["--exposure", "0.45", "--exposure-gamma", "0.5"], ["--exposure", "0.3"]])
def test_exposure_normalisation_runs_in_onnxruntime_without_torch(reference_dir, photos, tmp_path, exposure):
    """The gain is measured by a small ONNX Runtime graph of the IEM on the area-downsampled copy and
    fed to the main graph as its second input: within one 8-bit level of the torch engine, no PyTorch
    once cached, tiled equal to untiled."""
    checkpoint = reference_dir / "lol.pt"
    cache = tmp_path / "cache"
    _enhance(cache, photos, "-o", tmp_path / "first", "--checkpoint", checkpoint, *exposure)
    loaded, _ = _enhance(cache, photos, "-o", tmp_path / "cached", "--checkpoint", checkpoint, *exposure)
    assert loaded == "", f"a cached-graph run imported {loaded}"
    _enhance(cache, photos, "-o", tmp_path / "tiled", "--checkpoint", checkpoint, *exposure, "--tile-pixels", "30000")
    _enhance(cache, photos, "-o", tmp_path / "torch", "--checkpoint", checkpoint, *exposure, "--engine", "torch")
    cached, tiled, torch_engine, plain = (_pixels(tmp_path / n) for n in ("cached", "tiled", "torch", "first"))
    assert len(cached) == 4
    for name in cached:
        assert np.array_equal(cached[name], tiled[name]), name
        assert np.array_equal(cached[name], plain[name]), name
        assert np.abs(cached[name] - torch_engine[name]).max() <= 1, name


def test_the_enhancer_runs_exposure_models_in_the_graph_engines(reference_dir, photos):
    """``Enhancer(engine="onnxruntime")`` (the Python API, ``evaluate``) takes exposure models too, and so
    does ``auto`` (the native engine where a C compiler is found): within one level of the torch engine;
    the PyTorch-free enhancer equals the ``Enhancer`` with the same engine."""
    from ruas_nni.inference.enhance import Enhancer, auto_engine, load_model
    from ruas_nni.inference.graph import build_graph
    from ruas_nni.inference.graph_enhancer import GraphEnhancer

    checkpoint = load_model(reference_dir / "lol.pt")[0].with_exposure(0.45, 0.5)
    rgb = np.asarray(Image.open(photos / "lime_10.bmp").convert("RGB"))
    with Enhancer(checkpoint, engine="torch", workers=2) as slow:
        expected = slow.submit_uint8(rgb).result()
    graph = build_graph(checkpoint, "final")
    for engine in dict.fromkeys(("onnxruntime", auto_engine())):
        with Enhancer(checkpoint, engine=engine, workers=2) as fast:
            assert fast.engine == engine
            got = fast.submit_uint8(rgb).result()
        assert np.abs(expected.astype(int) - got).max() <= 1, engine
        with GraphEnhancer(graph, engine=engine, workers=2) as alone:
            assert np.array_equal(alone.submit_uint8(rgb).result(), got), engine


def test_an_unwritable_cache_is_a_warning_not_a_failure(tmp_path, caplog):
    from ruas_nni.inference.graph_cache import CachedGraph, read_entry, write_entry

    blocked = tmp_path / "file-not-folder"
    blocked.write_text("x")
    graph = CachedGraph(b"onnx bytes", 17, 6, "final")
    assert write_entry("k", graph, blocked) is None
    assert "cannot write the ONNX graph cache" in caplog.text
    assert write_entry("k", graph, tmp_path / "cache") is not None
    assert read_entry("k", tmp_path / "cache") == graph
    assert not [p for p in (tmp_path / "cache" / "onnx").iterdir() if p.suffix != ".ruasgraph"]  # no temporaries
