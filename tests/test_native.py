"""The native engine: the folded network as generated C, compiled with the system's C compiler.

Needs a C compiler (skips without one); every test compiles real code and runs it on real or random
networks against the folded PyTorch network."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

from ruas_nni.base.errors import UsageError
from ruas_nni.inference import native
from ruas_nni.inference.enhance import Enhancer
from ruas_nni.inference.fold import FoldedRUAS
from ruas_nni.model.checkpoint import Checkpoint
from ruas_nni.model.export import NetworkOptions, export
from ruas_nni.model.genotype import PAPER_GENOTYPE, Genotype

pytestmark = pytest.mark.skipif(native.compiler() is None, reason="needs a C compiler (cc, gcc or clang)")

EVERY_OPERATION = Genotype(
    iem=("conv_3x3", "dilconv_3x3", "resconv_3x3", "skip_connect", "resdilconv_3x3", "conv_1x1", "skip_connect"),
    nrm=("skip_connect", "conv_3x3", "resconv_1x1", "dilconv_3x3", "skip_connect", "resconv_3x3", "conv_1x1"),
)
ALL_SKIPS = Genotype(iem=("skip_connect",) * 7, nrm=("skip_connect",) * 7)


def _checkpoint(genotype=PAPER_GENOTYPE, seed: int = 0, **options) -> Checkpoint:
    torch.manual_seed(seed)
    network = export(genotype, NetworkOptions(**options))
    return Checkpoint.from_network(network, genotype, NetworkOptions(**options))


@pytest.fixture(scope="module")
def libraries(tmp_path_factory):
    """One library folder for the module: a source compiled once serves every test that needs it."""
    return tmp_path_factory.mktemp("native")


def _session(folded: FoldedRUAS, folder, gain_input: bool = False) -> native.NativeSession:
    return native.NativeSession(*native.native_source(folded, gain_input=gain_input), folder)


@pytest.mark.parametrize("stage", ["final", "iem"])
@pytest.mark.parametrize("genotype", [PAPER_GENOTYPE, EVERY_OPERATION, ALL_SKIPS], ids=["paper", "every-op", "skips"])
def test_native_code_equals_the_folded_network(stage, genotype, libraries):
    folded = FoldedRUAS(_checkpoint(genotype).build(), stage).eval()
    session = _session(folded, libraries)
    for shape in ((1, 3, 1, 1), (1, 3, 37, 53), (2, 3, 40, 24), (1, 3, 5, 70)):
        image = torch.rand(*shape, generator=torch.Generator().manual_seed(2)) * 0.4
        with torch.inference_mode():
            expected = folded(image).numpy()
        got = session.run(["enhanced"], {"image": image.numpy()})[0]
        assert got.shape == expected.shape
        assert np.abs(got - expected).max() <= 5e-6, shape


def test_every_height_streams_right(libraries):
    """The network streams through the image in bands of rows kept in rings: every height from 1 to
    3 bands past the longest lag (where a ring too short or a band boundary would show), two widths."""
    folded = FoldedRUAS(_checkpoint(EVERY_OPERATION, seed=4).build(), "final").eval()
    session = _session(folded, libraries)
    for height in range(1, 64):
        image = torch.rand(1, 3, height, 9 + height % 11, generator=torch.Generator().manual_seed(height)) * 0.4
        with torch.inference_mode():
            expected = folded(image).numpy()
        assert np.abs(session.run(None, {"image": image.numpy()})[0] - expected).max() <= 5e-6, height


@pytest.mark.parametrize("shape", [(1, 1, 3), (3, 2, 12)], ids=["smallest", "widest"])
def test_scalable_space_shapes_run_natively(shape, libraries, tmp_path):
    """A network of RUASSpace.scalable()'s shapes (NRM width 3 and 12, 1-3 stages and cells) runs in the
    native engine as in PyTorch, and loads as a checkpoint like any genotype."""
    from ruas_nni.model.checkpoint import load_checkpoint, save_checkpoint
    from search_spaces.ruas import RUASSpace, shape_of

    sample = {**EVERY_OPERATION.to_sample(), "iem/stages": shape[0], "nrm/cells": shape[1], "nrm/width": shape[2]}
    torch.manual_seed(3)
    network = RUASSpace.scalable().freeze(sample)
    options = NetworkOptions(**shape_of(sample))
    path = save_checkpoint(Checkpoint.from_network(network, Genotype.from_sample(sample), options), tmp_path / "m.pt")
    checkpoint = load_checkpoint(path)
    assert checkpoint.options.nrm_channels == shape[2] and checkpoint.options.iem_stages == shape[0]
    folded = FoldedRUAS(checkpoint.build()).eval()
    image = torch.rand(1, 3, 29, 37, generator=torch.Generator().manual_seed(4)) * 0.4
    with torch.inference_mode():
        expected = network(image).numpy()
        assert np.abs(folded(image).numpy() - expected).max() <= 5e-6
    got = _session(folded, libraries).run(None, {"image": image.numpy()})[0]
    assert np.abs(got - expected).max() <= 5e-6


def test_warm_start_variants_and_exposure_gains(libraries):
    image = torch.rand(1, 3, 30, 41, generator=torch.Generator().manual_seed(1)) * 0.4
    for warm_start in ("plain", "fixed"):
        folded = FoldedRUAS(_checkpoint(warm_start=warm_start).build()).eval()
        with torch.inference_mode():
            expected = folded(image).numpy()
        got = _session(folded, libraries).run(None, {"image": image.numpy()})[0]
        assert np.abs(got - expected).max() <= 5e-6, warm_start
    checkpoint = _checkpoint()
    paths = set()
    for exposure, gamma in ((0.45, 0.5), (0.3, 1.0), (0.4, 0.7)):  # sqrt, none and powf
        folded = FoldedRUAS(checkpoint.with_exposure(exposure, gamma).build()).eval()
        gain = torch.tensor([[[[1.7]]]])
        with torch.inference_mode():
            expected = folded(image, gain).numpy()
        session = _session(folded, libraries, gain_input=True)
        got = session.run(None, {"image": image.numpy(), "gain": gain.numpy()})[0]
        assert np.abs(got - expected).max() <= 5e-6, (exposure, gamma)
        paths.add(session.path)
    assert len(paths) == 1  # the exponent is a parameter: one library for every override


def test_tiles_equal_the_whole_image_bit_for_bit(reference_dir):
    """Every pixel runs the same instructions, so tiles are exact, not only within rounding; and the
    engine agrees with PyTorch on the authors' network and a real photo."""
    from ruas_nni.base.images import read_image, to_uint
    from ruas_nni.model.checkpoint import load_checkpoint

    checkpoint = load_checkpoint(reference_dir / "lol.pt")
    image = read_image(reference_dir / "inputs" / "lol22_crop.png").rgb
    with Enhancer(checkpoint, engine="torch", max_tile_pixels=0, workers=1) as plain:
        expected = plain(image)
    with Enhancer(checkpoint, engine="native", max_tile_pixels=0, workers=1) as whole:
        assert whole.engine == "native"
        untiled = whole(image)
    with Enhancer(checkpoint, engine="native", memory_budget=1, workers=2) as tiled:
        assert len(tiled.plan(*image.shape[1:])) > 4
        got = tiled(image)
        eight_bit = tiled.submit_uint8(to_uint(image)).result()
    assert torch.equal(got, untiled)
    assert (got - expected).abs().max().item() <= 2e-6
    assert np.abs(eight_bit.astype(int) - to_uint(expected).astype(int)).max() <= 1


def test_one_library_per_architecture_kept_in_the_cache(tmp_path, monkeypatch):
    """Two checkpoints of one genotype share one compiled library (the weights are an argument), and a
    cached library loads without a compiler."""
    first = FoldedRUAS(_checkpoint(seed=0).build()).eval()
    second = FoldedRUAS(_checkpoint(seed=1).build()).eval()
    (source_a, params_a), (source_b, params_b) = native.native_source(first), native.native_source(second)
    assert source_a == source_b and not np.array_equal(params_a, params_b)
    session = native.NativeSession(source_a, params_a, tmp_path)
    assert session.path.parent == tmp_path / "native" and len(list(session.path.parent.glob("*.so"))) == 1
    monkeypatch.setenv("CC", "/nonexistent/cc")
    assert native.compiler() is None
    again = native.NativeSession(source_b, params_b, tmp_path)  # no compiler needed: loaded from the cache
    assert again.path == session.path
    image = np.random.default_rng(0).random((1, 3, 20, 30), dtype=np.float32) * 0.4
    with torch.inference_mode():
        expected = second(torch.from_numpy(image)).numpy()
    assert np.abs(again.run(None, {"image": image})[0] - expected).max() <= 5e-6
    other = FoldedRUAS(_checkpoint(EVERY_OPERATION).build()).eval()
    with pytest.raises(native.NativeUnavailable, match="no C compiler"):
        _session(other, tmp_path / "empty")


def test_without_a_working_compiler(tmp_path, monkeypatch):
    checkpoint = _checkpoint(EVERY_OPERATION, seed=3)
    monkeypatch.setenv("RUAS_NNI_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("CC", "false")  # exists, fails: the code "does not compile"
    with pytest.raises(UsageError, match="engine` native: .*false could not compile"):
        Enhancer(checkpoint, engine="native")
    with Enhancer(checkpoint, engine="auto") as auto:  # says why, then ONNX Runtime
        assert auto.engine == "onnxruntime"
    monkeypatch.setenv("RUAS_NNI_NATIVE", "0")
    with Enhancer(checkpoint, engine="auto") as off:
        assert off.engine == "onnxruntime"


def test_cli_native_engine_needs_a_compiler(tmp_path, reference_dir):
    """``--engine native`` without a compiler is one line naming the flag; ``auto`` with a compiler that
    fails says so in one line and writes the same images as ``--engine onnxruntime``."""
    from PIL import Image

    source = reference_dir / "inputs" / "lol22_crop.png"
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "RUAS_NNI_CACHE_DIR": str(tmp_path / "cache"),
           "CC": "/nonexistent/cc", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "ruas_nni", "enhance", str(source), "--checkpoint", str(reference_dir / "lol.pt"),
               "--quiet"]
    failed = subprocess.run([*command, "-o", str(tmp_path / "n"), "--engine", "native"], env=env,
                            capture_output=True, text=True, timeout=300)
    assert failed.returncode == 2 and "--engine native: no C compiler found" in failed.stderr
    assert "Traceback" not in failed.stderr and not (tmp_path / "n").exists()
    auto = subprocess.run([*command, "-o", str(tmp_path / "a")], env={**env, "CC": "false"}, capture_output=True,
                          text=True, timeout=300)
    assert auto.returncode == 0, auto.stderr
    assert "could not compile" in auto.stderr and "using onnxruntime" in auto.stderr and "Traceback" not in auto.stderr
    ort = subprocess.run([*command, "-o", str(tmp_path / "o"), "--engine", "onnxruntime"], env=env,
                         capture_output=True, text=True, timeout=300)
    assert ort.returncode == 0, ort.stderr
    a, o = (np.asarray(Image.open(tmp_path / d / "lol22_crop.png")) for d in ("a", "o"))
    assert np.array_equal(a, o)


def test_the_source_is_the_same_in_every_process():
    """The generated C (hence the cache keys of the graph and the library) does not depend on the
    process's string hashing."""
    code = ("import hashlib, torch; from ruas_nni.inference.native import native_source; "
            "from ruas_nni.inference.fold import FoldedRUAS; from ruas_nni.model.export import export; "
            "from ruas_nni.model.genotype import PAPER_GENOTYPE; torch.manual_seed(0); "
            "print(hashlib.sha256(native_source(FoldedRUAS(export(PAPER_GENOTYPE)).eval())[0].encode()).hexdigest())")
    digests = {subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONHASHSEED": seed},
                              capture_output=True, text=True, check=True, timeout=300).stdout for seed in ("1", "2")}
    assert len(digests) == 1


def test_a_damaged_cached_library_is_compiled_again(tmp_path, caplog):
    """A cache entry that is not what was written (garbage, or cut short: which the loader may accept
    and then crash on) is compiled again, with a warning, before anything loads it. (Each damaged
    entry sits in a folder of its own: overwriting a loaded library's file in place would change code
    that is mapped.)"""
    scratch_before = set(Path(tempfile.gettempdir()).glob("ruas-native-*"))
    folded = FoldedRUAS(_checkpoint(seed=5).build()).eval()
    source, params = native.native_source(folded)
    good = native.NativeSession(source, params, tmp_path / "good").path
    image = np.random.default_rng(1).random((1, 3, 12, 17), dtype=np.float32) * 0.4
    with torch.inference_mode():
        expected = folded(torch.from_numpy(image)).numpy()
    for label, damage in (("garbage", b"not a library"), ("cut", good.read_bytes()[:4096])):
        folder = tmp_path / label
        entry = folder / "native" / good.name
        entry.parent.mkdir(parents=True)
        entry.write_bytes(damage)
        (folder / "native" / good.with_suffix(".sha256").name).write_text(good.with_suffix(".sha256").read_text())
        with caplog.at_level("WARNING", logger="ruas_nni.inference.native"):
            session = native.NativeSession(source, params, folder)
        assert "is damaged; compiling it again" in caplog.text and session.path == entry, label
        assert entry.read_bytes() == good.read_bytes(), label
        assert np.abs(session.run(None, {"image": image})[0] - expected).max() <= 5e-6, label
        caplog.clear()
    assert set(Path(tempfile.gettempdir()).glob("ruas-native-*")) <= scratch_before  # no compiler scratch left
