"""Golden outputs: the network's numbers checked without ``../shared``.

``tests/golden/`` holds 64x64 crops of the built-in demo's low-light images and what the shipped
default model and a fixed-seed paper-genotype network make of them (see ``scripts/make_golden.py``,
which regenerates everything in one command). Any change to the arithmetic (an activation's slope,
a clamp, the warm start, an operation, the folding of the inference engine) moves these numbers.
Tolerances: 1e-5 on the float32 centre patches, one 8-bit level on the whole crops. Float noise
across machines: at most 1.0e-6 measured (AVX2 and ATen's scalar kernels, ATEN_CPU_CAPABILITY=default,
one or two threads, folded or not), so 1e-5 leaves a factor 10 for other CPUs and builds. The
comparisons are marked ``golden``: .ci/run runs them again on the scalar kernels.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from ruas_nni.inference.enhance import Enhancer

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "tests" / "golden"
REGENERATE = "if the change is deliberate, run `python scripts/make_golden.py` and commit tests/golden/"


def _load_script():
    spec = importlib.util.spec_from_file_location("make_golden", ROOT / "scripts" / "make_golden.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


make_golden = _load_script()


@pytest.fixture(scope="module")
def crops() -> dict[str, np.ndarray]:
    with np.load(GOLDEN / "inputs.npz") as data:
        return {name: data[name] for name in data.files}


def _golden(model: str) -> dict[str, np.ndarray]:
    with np.load(GOLDEN / f"{model}.npz") as data:
        return {name: data[name] for name in data.files}


def _check(got: torch.Tensor, golden: dict[str, np.ndarray], key: str, clip: bool = False) -> None:
    patch = torch.from_numpy(golden[f"{key}/f32"])
    if clip:
        patch = patch.clamp(0, 1)
    error = (make_golden.centre(got) - patch).abs().max().item()
    assert error <= 1e-5, f"{key}: float32 centre differs from the golden output by {error:.3g}; {REGENERATE}"
    levels = np.abs(make_golden.to_u8(got).astype(int) - golden[f"{key}/u8"].astype(int)).max()
    assert levels <= 1, f"{key}: 8-bit output differs from the golden output by {levels} levels; {REGENERATE}"


def test_golden_files_are_complete(crops):
    assert sorted(crops) == ["camera", "chelsea", "coffee"]
    assert all(c.shape == (64, 64, 3) and c.dtype == np.uint8 for c in crops.values())
    for model in make_golden.MODELS:
        golden = _golden(model)
        for name in crops:
            for stage in make_golden.STAGES:
                assert golden[f"{name}/{stage}/u8"].shape == (3, 64, 64)
                assert golden[f"{name}/{stage}/f32"].shape == (3, 16, 16)


def test_the_default_model_is_the_one_the_goldens_were_made_with():
    assert str(_golden("default")["sha256"]) == make_golden.sha256(make_golden.default_checkpoint_path()), (
        f"ruas_nni/pretrained/default.pt changed since tests/golden/ was written; {REGENERATE}")


@pytest.mark.golden
@pytest.mark.parametrize("model", make_golden.MODELS)
def test_network_outputs_match_the_golden_outputs(model, crops):
    network = make_golden.build(model)
    golden = _golden(model)
    for name, crop in crops.items():
        for stage, image in make_golden.outputs(network, crop).items():
            _check(image, golden, f"{name}/{stage}")


@pytest.mark.golden
@pytest.mark.parametrize("model", make_golden.MODELS)
@pytest.mark.parametrize("fold", [True, False])
def test_enhancer_outputs_match_the_golden_outputs(model, fold, crops):
    """The inference engine (folded or not, clipped to [0, 1]) gives the same numbers."""
    from ruas_nni.inference.enhance import load_model
    from ruas_nni.model.checkpoint import Checkpoint
    from ruas_nni.model.export import NetworkOptions
    from ruas_nni.model.genotype import PAPER_GENOTYPE

    if model == "default":
        checkpoint = load_model(None)[0]
    else:
        checkpoint = Checkpoint.from_network(make_golden.build(model), PAPER_GENOTYPE, NetworkOptions())
    golden = _golden(model)
    for stage in make_golden.STAGES:
        with Enhancer(checkpoint, stage=stage, fold=fold, workers=1) as enhancer:
            for name, crop in crops.items():
                got = enhancer(make_golden.as_input(crop)[0])
                _check(got, golden, f"{name}/{stage}", clip=True)


def test_golden_inputs_are_the_demo_images(demo_data):
    """The stored crops are still what the built-in demo data makes (else regenerate the goldens)."""
    from PIL import Image

    with np.load(GOLDEN / "inputs.npz") as stored:
        for path in sorted((demo_data.eval / "low").glob("*.png")):
            with Image.open(path) as image:
                pixels = np.asarray(image.convert("RGB"))
            top, left = (pixels.shape[0] - 64) // 2, (pixels.shape[1] - 64) // 2
            assert np.array_equal(pixels[top:top + 64, left:left + 64], stored[path.stem]), (
                f"the demo image {path.name} changed; {REGENERATE}")


@pytest.mark.parametrize("fold", [True, False])
def test_illumination_floor_by_hand(fold):
    """With every IEM cell's fuse bias at -100, t = clamp(sigmoid(...), 0.001, 1) sits at its floor
    0.001, so the IEM output is u = clamp(y / 0.001, 0, 1): 0.0004 -> 0.4, 0.002 -> 1 (clipped)."""
    from ruas_nni.model.checkpoint import Checkpoint
    from ruas_nni.model.export import NetworkOptions, export
    from ruas_nni.model.genotype import PAPER_GENOTYPE

    torch.manual_seed(0)
    network = export(PAPER_GENOTYPE).eval()
    with torch.no_grad():
        for cell in network.iem.stages:
            cell.fuse.weight.zero_()
            cell.fuse.bias.fill_(-100.0)
    image = torch.full((3, 8, 8), 0.0004)
    image[:, :, 4:] = 0.002
    with Enhancer(Checkpoint.from_network(network, PAPER_GENOTYPE, NetworkOptions()), stage="iem", fold=fold,
                  workers=1) as enhancer:
        got = enhancer(image)
    assert torch.allclose(got[:, :, :4], torch.full((3, 8, 4), 0.4), rtol=0, atol=1e-6)
    assert torch.equal(got[:, :, 4:], torch.ones(3, 8, 4))
