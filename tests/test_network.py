import pytest
import torch

from ruas_nni import PAPER_GENOTYPE, Genotype, NetworkOptions, export
from ruas_nni.model.network import warm_start
from ruas_nni.model.ops import OPERATION_NAMES


def test_paper_genotype_has_3438_parameters():
    net = export(PAPER_GENOTYPE)
    assert sum(p.numel() for p in net.parameters()) == 3438
    iem_only = export(Genotype(PAPER_GENOTYPE.iem, None))
    assert sum(p.numel() for p in iem_only.parameters()) == 1161


@pytest.mark.parametrize("size", [(1, 1), (37, 53), (2, 9)])
def test_odd_sizes_keep_shape_and_range(size):
    torch.manual_seed(0)
    net = export(PAPER_GENOTYPE).eval()
    y = torch.rand(2, 3, *size)
    with torch.no_grad():
        out = net.enhance(y)
    assert out.final.shape == y.shape and out.iem.shape == y.shape
    assert len(out.illuminations) == 3
    assert torch.isfinite(out.final).all()
    assert out.iem.min() >= 0 and out.iem.max() <= 1
    for t in out.illuminations:
        assert t.min() >= 0.001 and t.max() <= 1


def test_warm_start_is_a_bottom_right_max_filter():
    x = torch.tensor([[[[1.0, 2.0, 0.0], [0.0, 5.0, 3.0]]]])
    expected = torch.tensor([[[[5.0, 5.0, 3.0], [5.0, 5.0, 3.0]]]])
    assert torch.equal(warm_start(x), expected)
    # zero padding: negative values at the border meet a 0
    assert warm_start(-torch.ones(1, 1, 2, 2))[0, 0, 1, 1] == 0


def test_warm_start_variants_differ_and_gamma_matters():
    torch.manual_seed(1)
    y = torch.rand(1, 3, 16, 16) * 0.2
    outs = {}
    for variant in ("rectified", "plain", "fixed"):
        torch.manual_seed(2)
        net = export(PAPER_GENOTYPE, NetworkOptions(warm_start=variant)).eval()
        with torch.no_grad():
            outs[variant] = net.enhance(y).iem
    assert not torch.allclose(outs["rectified"], outs["plain"])
    assert not torch.allclose(outs["plain"], outs["fixed"])
    torch.manual_seed(2)
    gamma0 = export(PAPER_GENOTYPE, NetworkOptions(gamma=0.0)).eval()
    with torch.no_grad():
        assert torch.allclose(gamma0.enhance(y).iem, outs["plain"])


@pytest.mark.parametrize("op", OPERATION_NAMES)
def test_every_operation_builds_and_runs(op):
    net = export({"iem": [op] * 7, "nrm": [op] * 7}).eval()
    with torch.no_grad():
        assert net(torch.rand(1, 3, 9, 11)).shape == (1, 3, 9, 11)


def test_receptive_radius_bounds_the_influence_of_one_pixel():
    torch.manual_seed(3)
    net = export({"iem": ["dilconv_3x3"] * 7, "nrm": ["resdilconv_3x3"] * 7},
                 NetworkOptions(iem_stages=2, nrm_cells=1)).eval()
    radius = net.receptive_radius()
    size = 2 * radius + 21
    y = torch.rand(1, 3, size, size) * 0.3
    y2 = y.clone()
    c = size // 2
    y2[..., c, c] += 0.5
    with torch.no_grad():
        diff = (net(y) - net(y2)).abs().sum(dim=1)[0]
    changed = diff.nonzero()
    reach = (changed - torch.tensor([c, c])).abs().max().item()
    assert 0 < reach <= radius


def test_bad_genotype_and_options_are_refused_with_the_name():
    with pytest.raises(ValueError, match="iem/e3: unknown operation 'conv_5x5'"):
        export({"iem": ["skip_connect", "conv_1x1", "conv_5x5"] + ["conv_1x1"] * 4, "nrm": None})
    with pytest.raises(ValueError, match="needs 7 operations"):
        export({"iem": ["conv_1x1"] * 6, "nrm": None})
    with pytest.raises(ValueError, match="warm_start"):
        NetworkOptions(warm_start="hot")


def test_genotype_round_trips_through_nni_sample():
    sample = PAPER_GENOTYPE.to_sample()
    assert sample["iem/e1"] == "skip_connect" and sample["nrm/e7"] == "skip_connect"
    assert Genotype.from_any(sample) == PAPER_GENOTYPE
    assert Genotype.from_any(PAPER_GENOTYPE.to_dict() | {"probs": {}}) == PAPER_GENOTYPE
    with pytest.raises(ValueError, match="missing nrm/e7"):
        Genotype.from_sample({k: v for k, v in sample.items() if k != "nrm/e7"})
