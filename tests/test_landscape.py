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
    base = dict(paper=True, arch=None, arch_name_parent=False, random=5, seed=3)
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
