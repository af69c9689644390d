"""scripts/landscape.py: Kendall's tau-b, the seeded genotype list and the atomic, resumable CSV."""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("landscape", ROOT / "scripts" / "landscape.py")
landscape = importlib.util.module_from_spec(spec)
spec.loader.exec_module(landscape)

OPS = ["skip_connect", "conv_1x1", "conv_3x3", "dilconv_3x3", "resconv_1x1", "resconv_3x3", "resdilconv_3x3"]


def test_kendall_tau_b():
    assert landscape.kendall_tau_b([1, 2, 3, 4], [10, 20, 30, 40]) == 1.0
    assert landscape.kendall_tau_b([1, 2, 3, 4], [4, 3, 2, 1]) == -1.0
    # scipy.stats.kendalltau's documented example (with ties in both variables)
    assert landscape.kendall_tau_b([12, 2, 1, 12, 2], [1, 4, 7, 1, 0]) == pytest.approx(-0.47140452079103173)


def _args(**kw):
    base = dict(paper=True, arch=None, arch_name_parent=False, uniform=False, random=5, seed=3)
    base.update(kw)
    return argparse.Namespace(**base)


def test_genotypes_are_seeded_and_start_with_the_paper(tmp_path):
    first = landscape.genotypes(_args(), OPS)
    assert first == landscape.genotypes(_args(), OPS)
    assert first[0] == ("paper", "paper", None) and len(first) == 6
    assert landscape.genotypes(_args(random=7), OPS)[:6] == first  # more samples extend the same list
    assert landscape.genotypes(_args(seed=4), OPS)[1] != first[1]
    arch = tmp_path / "win" / "arch.json"
    arch.parent.mkdir()
    arch.write_text('{"iem": ["conv_1x1", "conv_1x1", "conv_1x1", "conv_1x1", "conv_1x1", "conv_1x1", "conv_1x1"], '
                    '"nrm": null, "probs": {}}')
    named = landscape.genotypes(_args(arch=[str(arch)], arch_name_parent=True, random=0), OPS)
    assert named[1][0] == "arch-win-arch" and named[1][2]["nrm"] is None


def test_csv_round_trip_is_atomic(tmp_path):
    path = tmp_path / "rows.csv"
    landscape.write_rows(path, [{"setup": "a", "genotype": "paper", "psnr": 10.5}])
    landscape.write_rows(path, landscape.read_rows(path) + [{"setup": "b", "genotype": "paper"}])
    rows = landscape.read_rows(path)
    assert [(r["setup"], r["psnr"]) for r in rows] == [("a", "10.5"), ("b", "")]
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind


def test_kendall_tau_b_hand_worked():
    # (1,1)-(2,3): concordant, (1,1)-(3,2): concordant, (2,3)-(3,2): discordant -> (2 - 1) / 3
    assert landscape.kendall_tau_b([1, 2, 3], [1, 3, 2]) == pytest.approx(1 / 3)
    # a tie in x only: C = 2, D = 0, one x-tie -> 2 / sqrt((2 + 1) * 2)
    assert landscape.kendall_tau_b([1, 1, 2], [1, 2, 3]) == pytest.approx(2 / 6 ** 0.5)


def test_kendall_uses_scipy_and_agrees_with_ours():
    pytest.importorskip("scipy")
    import random

    rng = random.Random(0)
    x = [rng.randint(0, 5) for _ in range(30)]  # with ties
    y = [rng.random() + 0.1 * v for v in x]
    tau, p = landscape.kendall(x, y)
    assert tau == pytest.approx(landscape.kendall_tau_b(x, y)) and 0 <= p <= 1


def test_uniform_genotypes_come_before_the_random_ones():
    listed = landscape.genotypes(_args(uniform=True, random=2), OPS)
    assert [name for name, _, _ in listed[1:8]] == [f"uniform-{op}" for op in OPS]
    assert listed[3][2] == {"iem": ["conv_3x3"] * 7, "nrm": ["conv_3x3"] * 7}
    assert listed[8:] == landscape.genotypes(_args(random=2), OPS)[1:]  # random samples unchanged


def test_report_writes_figure_and_summary_and_keeps_conclusions(tmp_path):
    pytest.importorskip("matplotlib")
    rows = []
    for setup in ("ours", "ref"):
        for i in range(5):
            rows.append({"setup": setup, "genotype": "paper" if i == 0 else f"random-s0-{i:03d}", "iem": f"a{i}", "nrm": "b",
                         "status": "ok", "psnr": 10 + i, "ssim": 0.3 + i / 100, "psnr_half": 10 + i, "ssim_half": 0.3,
                         "loss_iem": 1 - i / 10, "loss_nrm": i / 100, "objective": 1 - i / 20, "params": 100 * (i + 1),
                         "macs_600x400": 1e6 * (5 - i), "val_images": 50 if setup == "ours" else 25})
    path = tmp_path / "rows.csv"
    landscape.write_rows(path, rows)
    out = tmp_path / "out"
    out.mkdir()
    (out / "summary.md").write_text("old\n" + landscape.CONCLUSIONS + "\nmy conclusions\n")
    assert landscape.main(["report", "--csv", str(path), "--out", str(out)]) == 0
    text = (out / "summary.md").read_text()
    assert (out / "landscape.png").stat().st_size > 0
    assert "old" not in text and text.endswith(landscape.CONCLUSIONS + "\nmy conclusions\n")
    assert "| ours (50) | 5 | 12.00 (10.00-14.00) | 10.00 (rank 5 of 5) | -1.000" in text
