"""The ONNX Runtime engine: the folded graph written without tracing, equal to PyTorch's."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ruas_nni.inference.enhance import Enhancer
from ruas_nni.inference.fold import FoldedRUAS
from ruas_nni.inference.onnx_export import folded_onnx_bytes
from ruas_nni.model.checkpoint import Checkpoint
from ruas_nni.model.export import NetworkOptions, export
from ruas_nni.model.genotype import PAPER_GENOTYPE, Genotype

ort = pytest.importorskip("onnxruntime")


def _checkpoint(genotype=PAPER_GENOTYPE, seed: int = 0, **options) -> Checkpoint:
    torch.manual_seed(seed)
    network = export(genotype, NetworkOptions(**options))
    return Checkpoint.from_network(network, genotype, NetworkOptions(**options))


GENOTYPES = [
    PAPER_GENOTYPE,
    Genotype(iem=("conv_3x3", "dilconv_3x3", "resconv_3x3", "skip_connect", "resdilconv_3x3", "conv_1x1", "skip_connect"),
             nrm=("skip_connect", "conv_3x3", "resconv_1x1", "dilconv_3x3", "skip_connect", "resconv_3x3", "conv_1x1")),
]


@pytest.mark.parametrize("stage", ["final", "iem"])
@pytest.mark.parametrize("genotype", GENOTYPES, ids=["paper", "other"])
def test_written_graph_equals_the_folded_network(stage, genotype):
    onnx = pytest.importorskip("onnx")
    folded = FoldedRUAS(_checkpoint(genotype).build(), stage).eval()
    data = folded_onnx_bytes(folded)
    onnx.checker.check_model(onnx.load_from_string(data), full_check=True)
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    for shape in ((1, 3, 1, 1), (1, 3, 37, 53), (2, 3, 40, 24)):
        image = torch.rand(*shape, generator=torch.Generator().manual_seed(2)) * 0.4
        with torch.inference_mode():
            expected = folded(image).numpy()
        got = session.run(None, {"image": image.numpy()})[0]
        assert got.shape == expected.shape
        assert np.abs(got - expected).max() <= 5e-6


def test_warm_start_variants_are_written_too():
    for warm_start in ("plain", "fixed"):
        folded = FoldedRUAS(_checkpoint(warm_start=warm_start).build()).eval()
        session = ort.InferenceSession(folded_onnx_bytes(folded), providers=["CPUExecutionProvider"])
        image = torch.rand(1, 3, 30, 41, generator=torch.Generator().manual_seed(1)) * 0.4
        with torch.inference_mode():
            expected = folded(image).numpy()
        assert np.abs(session.run(None, {"image": image.numpy()})[0] - expected).max() <= 5e-6


def test_engines_agree_through_the_enhancer_tiled(reference_dir):
    from ruas_nni.base.images import read_image, to_uint
    from ruas_nni.model.checkpoint import load_checkpoint

    checkpoint = load_checkpoint(reference_dir / "lol.pt")
    image = read_image(reference_dir / "inputs" / "lol22_crop.png").rgb
    with Enhancer(checkpoint, engine="torch", max_tile_pixels=0, workers=1) as plain:
        expected = plain(image)
    with Enhancer(checkpoint, engine="onnxruntime", memory_budget=2, workers=2) as fast:
        assert fast.engine == "onnxruntime" and len(fast.plan(*image.shape[1:])) > 4
        got = fast(image)
        eight_bit = fast.submit_uint8(to_uint(image)).result()
    assert (got - expected).abs().max().item() <= 2e-6
    assert np.abs(eight_bit.astype(int) - to_uint(expected).astype(int)).max() <= 1


def test_engine_choice():
    checkpoint = _checkpoint()
    from ruas_nni.inference.native import compiler

    with Enhancer(checkpoint, engine="auto") as auto:
        assert auto.engine == ("native" if compiler() is not None else "onnxruntime")
    with Enhancer(checkpoint, engine="auto", fold=False) as unfolded:
        assert unfolded.engine == "torch"
    with Enhancer(checkpoint, engine="auto", layout="nhwc") as channels_last:
        assert channels_last.engine == "torch"
    from ruas_nni.base.errors import UsageError

    with pytest.raises(UsageError, match="`engine` must be one of"):
        Enhancer(checkpoint, engine="tvm")
    with pytest.raises(UsageError, match="folded network"):
        Enhancer(checkpoint, engine="onnxruntime", fold=False)
