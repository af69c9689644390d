"""The folded inference network computes what the network as trained computes."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from ruas_nni.inference.fold import LAYOUTS, Affine, fast_warm_start, fold
from ruas_nni.model.checkpoint import load_checkpoint
from ruas_nni.model.export import NetworkOptions, export
from ruas_nni.model.genotype import Genotype
from ruas_nni.model.network import warm_start
from ruas_nni.model.ops import OPERATION_NAMES

REFERENCE_NAMES = ("lol22_crop", "lime1_crop")


def _load_input(reference_dir, name):
    from ruas_nni.base.images import read_image

    return read_image(reference_dir / "inputs" / f"{name}.png").rgb.unsqueeze(0)


def _randomise(network: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Weights large enough that every edge matters (the default init leaves small residuals)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in network.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.3)
    return network.eval()


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("ckpt,stage", [("lol", "final"), ("lol", "iem"), ("upe", "iem"), ("dark", "iem")])
def test_folded_network_reproduces_the_authors_outputs(reference_dir, ckpt, stage, layout):
    network = load_checkpoint(reference_dir / f"{ckpt}.pt").build()
    folded = fold(network, stage, layout=layout)
    for name in REFERENCE_NAMES:
        expected = np.load(reference_dir / "outputs" / ckpt / f"{name}.{stage}.npy")
        with torch.inference_mode():
            got = folded(_load_input(reference_dir, name))[0].permute(1, 2, 0).numpy()
        assert got.shape == expected.shape
        assert np.abs(got - expected).max() <= 1e-5
        # within one 8-bit level once quantised, which is what users see
        assert np.abs(np.round(np.clip(got, 0, 1) * 255) - np.round(np.clip(expected, 0, 1) * 255)).max() <= 1


def _random_genotype(rng: random.Random, with_nrm: bool = True) -> Genotype:
    iem = [rng.choice(OPERATION_NAMES) for _ in range(7)]
    nrm = [rng.choice(OPERATION_NAMES) for _ in range(7)] if with_nrm else None
    return Genotype(tuple(iem), tuple(nrm) if nrm else None)


GENOTYPE_CASES = [
    # every operation on every edge position at least once across the cases, plus the ablations
    (Genotype(("skip_connect",) * 7, ("skip_connect",) * 7), NetworkOptions()),
    (Genotype(("conv_1x1", "conv_3x3", "dilconv_3x3", "resconv_1x1", "resconv_3x3", "resdilconv_3x3", "skip_connect"),
              ("resdilconv_3x3", "resconv_3x3", "resconv_1x1", "dilconv_3x3", "conv_3x3", "conv_1x1", "skip_connect")),
     NetworkOptions()),
    (Genotype(("resdilconv_3x3",) * 7, ("conv_1x1",) * 7), NetworkOptions(warm_start="plain", gamma=0.0)),
    (Genotype(("resconv_1x1",) * 7, None), NetworkOptions(warm_start="fixed", iem_stages=2)),
    (Genotype(("dilconv_3x3", "skip_connect") * 3 + ("conv_3x3",), ("resconv_1x1", "skip_connect") * 3 + ("conv_1x1",)),
     NetworkOptions(gamma=0.3, nrm_cells=2, nrm_channels=4)),
]


@pytest.mark.parametrize("compose", [False, True])
@pytest.mark.parametrize("case", range(len(GENOTYPE_CASES) + 4))
def test_folding_any_genotype_changes_nothing_but_rounding(case, compose):
    if case < len(GENOTYPE_CASES):
        genotype, options = GENOTYPE_CASES[case]
    else:
        rng = random.Random(case)
        genotype, options = _random_genotype(rng, with_nrm=case % 2 == 0), NetworkOptions()
    network = _randomise(export(genotype, options), seed=case)
    before = {k: v.clone() for k, v in network.state_dict().items()}
    image = torch.rand(1, 3, 23, 31, generator=torch.Generator().manual_seed(case))
    with torch.inference_mode():
        expected = network.enhance(image)
        for stage in ("final", "iem"):
            want = expected.final if stage == "final" else expected.iem
            for layout in LAYOUTS:
                for functional in (False, True):
                    folded = fold(network, stage, compose_pointwise=compose, functional=functional, layout=layout)
                    got = folded(image)
                    scale = max(1.0, float(want.abs().max()))
                    assert torch.allclose(got, want, atol=2e-5 * scale, rtol=0), (genotype, stage, layout, functional)
    for key, value in network.state_dict().items():  # the network as trained is left untouched
        assert torch.equal(value, before[key]), key


def test_folding_removes_work():
    """The paper genotype: skip edges vanish, residual pairs share convolutions."""
    from ruas_nni.model.genotype import PAPER_GENOTYPE

    network = export(PAPER_GENOTYPE)
    folded = fold(network)
    convolutions = sum(1 for m in network.modules() if isinstance(m, torch.nn.Conv2d))
    folded_weights = sum(1 for name, _ in folded.named_buffers() if not name.endswith("_bias"))
    assert folded_weights < convolutions
    assert folded.receptive_radius() == network.receptive_radius()


@pytest.mark.parametrize("shape", [(1, 3, 1, 1), (1, 3, 1, 7), (1, 3, 5, 1), (2, 3, 17, 12)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_fast_warm_start_is_bit_identical(shape, channels_last):
    x = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    got = fast_warm_start(x)
    assert torch.equal(got, warm_start(x))
    assert got.is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


def test_affine_algebra():
    identity = Affine.identity(3, 2.0)
    assert identity.scaled_identity_factor() == 2.0
    assert Affine.identity(3, -1.0).scaled_identity_factor() is None
    conv = Affine(torch.randn(3, 3, 3, 3, dtype=torch.float64), torch.randn(3, dtype=torch.float64), 2)
    assert conv.scaled_identity_factor() is None
    point = Affine(torch.randn(4, 3, 1, 1, dtype=torch.float64), torch.randn(4, dtype=torch.float64))
    x = torch.randn(1, 3, 9, 8, dtype=torch.float64)
    composed = point.after(conv)
    direct = torch.nn.functional.conv2d(
        torch.nn.functional.conv2d(x, conv.weight, conv.bias, padding=conv.radius, dilation=2), point.weight, point.bias)
    once = torch.nn.functional.conv2d(x, composed.weight, composed.bias, padding=composed.radius, dilation=2)
    assert torch.allclose(once, direct, atol=1e-12)
    stacked = Affine.stack([point, Affine(torch.randn(2, 3, 3, 3, dtype=torch.float64), torch.zeros(2, dtype=torch.float64))])
    assert stacked.weight.shape == (6, 3, 3, 3) and stacked.radius == 1
    with pytest.raises(ValueError):
        conv.after(point)  # a 3x3 map after a biased one is not exact at the borders


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (none here)")
def test_cuda_half_and_graphs_agree_with_cpu():
    from ruas_nni.inference.enhance import Enhancer
    from ruas_nni.model.checkpoint import Checkpoint
    from ruas_nni.model.genotype import PAPER_GENOTYPE

    torch.manual_seed(0)
    checkpoint = Checkpoint.from_network(export(PAPER_GENOTYPE), PAPER_GENOTYPE, NetworkOptions())
    image = torch.rand(3, 120, 160, generator=torch.Generator().manual_seed(2)) * 0.4
    with Enhancer(checkpoint, device="cpu", workers=1) as cpu:
        expected = cpu(image)
    with Enhancer(checkpoint, device="cuda") as graphs:
        first, second = graphs(image), graphs(image)  # the second call replays the captured graph
    assert torch.equal(first, second)
    assert (first - expected).abs().max().item() <= 1e-4
    with Enhancer(checkpoint, device="cuda", half=True) as half:
        assert (half(image) - expected).abs().max().item() <= 2 / 255
