import math

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



class _ConstantCell(torch.nn.Module):
    """Stands in for an IEM cell: records its input ``t_hat`` and returns the constant logit ``z``."""

    def __init__(self, z: float) -> None:
        super().__init__()
        self.z = z
        self.seen: list[torch.Tensor] = []

    def forward(self, t_hat: torch.Tensor) -> torch.Tensor:
        self.seen.append(t_hat.detach().clone())
        return torch.full_like(t_hat, self.z)


def _iem_with_cells(*logits: float, gamma: float = 0.5) -> torch.nn.Module:
    iem = export(PAPER_GENOTYPE, NetworkOptions(iem_stages=len(logits), gamma=gamma)).iem.eval()
    iem.stages = torch.nn.ModuleList(_ConstantCell(z) for z in logits)
    return iem


def _image(rows) -> torch.Tensor:
    """A 1 x 3 x H x W image with the same ``rows`` in every channel."""
    return torch.tensor(rows).expand(1, 3, len(rows), len(rows[0])).clone()


def test_iem_rectification_by_hand():
    """``t_hat_k = S(u_k) - gamma * (u_k - y)`` on a 2 x 3 image, every value worked out here: S is the
    max over the pixel, its right, lower and lower-right neighbours (0 beyond the border). Cells
    output logit 0 (t_0 = 0.5), then log 4 (t_1 = 0.8), so u_1 = clamp(2 y, 0, 1), u_2 = y / 0.8.

        y                 = [[0.1, 0.3, 0.2], [0.05, 0.4, 0.6]]
        t_hat_0 = S(y)    = [[0.4, 0.6, 0.6], [0.4,  0.6, 0.6]]
        u_1               = [[0.2, 0.6, 0.4], [0.1,  0.8, 1.0]]          (1.2 clipped)
        S(u_1)            = [[0.8, 1.0, 1.0], [0.8,  1.0, 1.0]]
        t_hat_1 = S(u_1) - 0.5 (u_1 - y) = [[0.75, 0.85, 0.9], [0.775, 0.8, 0.8]]
        u_2               = [[0.125, 0.375, 0.25], [0.0625, 0.5, 0.75]]
        S(u_2)            = [[0.5, 0.75, 0.75], [0.5, 0.75, 0.75]]
        t_hat_2 = S(u_2) - 0.5 (u_2 - y) = [[0.4875, 0.7125, 0.725], [0.49375, 0.7, 0.675]]
    """
    iem = _iem_with_cells(0.0, math.log(4.0), 0.0)
    y = _image([[0.1, 0.3, 0.2], [0.05, 0.4, 0.6]])
    with torch.no_grad():
        u, illuminations = iem(y)
    seen = [cell.seen[0] for cell in iem.stages]
    expected = [[[0.4, 0.6, 0.6], [0.4, 0.6, 0.6]],
                [[0.75, 0.85, 0.9], [0.775, 0.8, 0.8]],
                [[0.4875, 0.7125, 0.725], [0.49375, 0.7, 0.675]]]
    for k, (got, want) in enumerate(zip(seen, expected)):
        torch.testing.assert_close(got, _image(want), rtol=0, atol=1e-6, msg=lambda m, k=k: f"t_hat_{k}: {m}")
    torch.testing.assert_close(illuminations[1], torch.full_like(y, 0.8), rtol=0, atol=1e-6)
    torch.testing.assert_close(u, _image([[0.2, 0.6, 0.4], [0.1, 0.8, 1.0]]), rtol=0, atol=1e-6)  # t_2 = 0.5


def test_illumination_floor_is_one_thousandth():
    """Cells that output logit -100 (sigmoid 4e-44): every illumination sits at its floor 0.001, and
    u = clamp(y / 0.001, 0, 1): 0.0002 -> 0.2, 0.0007 -> 0.7, 0.003 -> 1 (clipped). The floor is
    written out here, not read from the code."""
    iem = _iem_with_cells(-100.0, -100.0, -100.0)
    y = _image([[0.0002, 0.0007, 0.003]])
    with torch.no_grad():
        u, illuminations = iem(y)
    assert len(illuminations) == 3
    for t in illuminations:
        assert torch.equal(t, torch.full_like(y, 0.001)), t.unique()
    torch.testing.assert_close(u, _image([[0.2, 0.7, 1.0]]), rtol=0, atol=1e-6)

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
