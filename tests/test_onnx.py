"""``ruas-nni export-onnx``: the ONNX model runs in onnxruntime with any height and width and matches
PyTorch within 1e-4."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from ruas_nni.model.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from ruas_nni.model.export import NetworkOptions, export
from ruas_nni.model.genotype import PAPER_GENOTYPE, Genotype

onnxruntime = pytest.importorskip("onnxruntime")

SIZES = [(1, 1), (37, 53), (128, 96)]


def _pytorch(checkpoint: Checkpoint, stage: str, image: torch.Tensor) -> np.ndarray:
    with torch.inference_mode():
        result = checkpoint.build().enhance(image)
    return (result.final if stage == "final" else result.iem).numpy()


def _check(path, checkpoint: Checkpoint, stage: str) -> float:
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    worst = 0.0
    generator = torch.Generator().manual_seed(0)
    for height, width in SIZES:
        image = torch.rand(2 if height > 1 else 1, 3, height, width, generator=generator) * 0.4
        (got,) = session.run(None, {"image": image.numpy()})
        expected = _pytorch(checkpoint, stage, image)
        assert got.shape == expected.shape
        worst = max(worst, float(np.abs(got - expected).max()))
    return worst


@pytest.mark.parametrize("no_fold", [False, True])
def test_export_onnx_command_matches_pytorch(tmp_path, no_fold):
    torch.manual_seed(0)
    checkpoint = Checkpoint.from_network(export(PAPER_GENOTYPE), PAPER_GENOTYPE, NetworkOptions())
    model = save_checkpoint(checkpoint, tmp_path / "model.pt")
    out = tmp_path / "model.onnx"
    command = [sys.executable, "-m", "ruas_nni", "export-onnx", "--checkpoint", str(model), "-o", str(out)]
    result = subprocess.run(command + (["--no-fold"] if no_fold else []), capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert _check(out, checkpoint, "final") <= 1e-4


def test_export_iem_only_and_other_genotypes(tmp_path):
    from ruas_nni.inference.onnx_export import export_onnx

    genotype = Genotype(("resdilconv_3x3", "conv_1x1", "skip_connect", "resconv_3x3", "dilconv_3x3", "conv_3x3",
                         "resconv_1x1"), ("skip_connect",) * 7)
    torch.manual_seed(1)
    checkpoint = Checkpoint.from_network(export(genotype, NetworkOptions(warm_start="plain")), genotype,
                                         NetworkOptions(warm_start="plain"))
    for stage in ("final", "iem"):
        path = export_onnx(checkpoint, tmp_path / f"{stage}.onnx", stage=stage)
        assert _check(path, checkpoint, stage) <= 1e-4
        onnx = pytest.importorskip("onnx")
        metadata = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
        assert metadata["stage"] == stage and int(metadata["receptive_radius"]) > 0


@pytest.mark.parametrize("ckpt,stage", [("lol", "final"), ("upe", "iem")])
def test_authors_checkpoints_export(tmp_path, reference_dir, ckpt, stage):
    from ruas_nni.inference.onnx_export import export_onnx

    checkpoint = load_checkpoint(reference_dir / f"{ckpt}.pt")
    path = export_onnx(checkpoint, tmp_path / "m.onnx", stage=stage)
    assert _check(path, checkpoint, stage) <= 1e-4
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    from ruas_nni.base.images import read_image

    image = read_image(reference_dir / "inputs" / "lol22_crop.png").rgb.unsqueeze(0).numpy()
    (got,) = session.run(None, {"image": image})
    expected = np.load(reference_dir / "outputs" / ckpt / f"lol22_crop.{stage}.npy")
    assert np.abs(got[0].transpose(1, 2, 0) - expected).max() <= 1e-4


def test_export_onnx_bad_checkpoint_is_one_line(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"garbage")
    result = subprocess.run([sys.executable, "-m", "ruas_nni", "export-onnx", "--checkpoint", str(bad), "-o",
                             str(tmp_path / "m.onnx")], capture_output=True, text=True)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert not (tmp_path / "m.onnx").exists()
