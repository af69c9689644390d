"""``ruas-nni benchmark``: parameters and FLOPs of the paper genotype agree with the paper's Table 2."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from ruas_nni.inference.benchmark import PAPER_TABLE2, count_flops, count_parameters, parse_size
from ruas_nni.model.export import export
from ruas_nni.model.genotype import PAPER_GENOTYPE


def test_paper_genotype_parameters():
    counts = count_parameters(export(PAPER_GENOTYPE))
    assert counts["whole"] == 3438  # paper Table 2: 0.003 M
    assert round(counts["whole"] / 1e6, 3) == 0.003 and round(counts["iem"] / 1e6, 3) == 0.001


def test_paper_genotype_flops_match_table2_as_multiply_adds():
    flops = count_flops(export(PAPER_GENOTYPE).eval(), 600, 400)
    for part in ("whole", "iem"):
        paper = PAPER_TABLE2[part]["gflops"] * 1e9
        counted = flops[part]
        assert counted["flops"] == 2 * counted["macs"]  # PyTorch's counter: a multiply-add is 2 FLOPs
        # The paper's numbers are multiply-adds: MACs are within 6 %, MACs with bias additions within 1.5 %;
        # the counter's FLOPs are twice the paper's.
        assert abs(counted["macs"] / paper - 1) < 0.06
        assert abs(counted["macs_plus_bias"] / paper - 1) < 0.015
        assert counted["flops"] / paper > 1.8


def test_parse_size():
    assert parse_size("600x400") == (600, 400)
    with pytest.raises(ValueError):
        parse_size("600")


def test_benchmark_command_reports_both_paths(tmp_path):
    out = tmp_path / "bench.json"
    # FLOPs at 64 x 48 too (the default 600 x 400 is test_paper_genotype_flops_match_table2_as_multiply_adds's)
    result = subprocess.run([sys.executable, "-m", "ruas_nni", "benchmark", "--size", "64x48", "--latency-size", "64x48",
                             "--rounds", "1", "--runs", "1", "--json", str(out)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    from ruas_nni.inference.enhance import default_checkpoint_path
    from ruas_nni.model.checkpoint import load_checkpoint

    expected_model = "default model" if default_checkpoint_path() is not None else "random weights"
    assert expected_model in result.stdout and "GMACs" in result.stdout
    report = json.loads(out.read_text())
    shipped = default_checkpoint_path()
    expected_params = (load_checkpoint(shipped).metadata["parameters"] if shipped is not None else 3438)
    assert report["parameters"]["whole"] == expected_params  # the shipped model's, or the paper genotype's
    latency = report["latency"]
    assert {"eager", "eager-channels-last", "optimised"} <= set(latency)
    assert "eager-channels-last" in result.stdout and "vs eager-cl" in result.stdout
    for kind in ("eager", "eager-channels-last", "optimised"):
        entry = latency[kind]["sizes"]["64x48"]
        assert entry["median_ms"] > 0
        assert entry["peak_mb"] is None or entry["peak_mb"] > 0


def test_side_by_side_script_times_checkpoints_alternately(reference_dir, tmp_path, capsys):
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    sys.path.insert(0, str(root / "benchmarks"))
    try:
        import side_by_side
    finally:
        sys.path.remove(str(root / "benchmarks"))
    lol = str(reference_dir / "lol.pt")
    default = str(root / "ruas_nni" / "pretrained" / "default.pt")
    out = tmp_path / "times.json"
    assert side_by_side.main([lol, default, "--size", "48x32", "--rounds", "3", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "(1.00x)" in printed and "48x32" in printed
    times = json.loads(out.read_text())
    assert times["size"] == [48, 32] and set(times["ms"]) == {lol, default}
    assert all(len(v) == 3 and min(v) > 0 for v in times["ms"].values())
    assert side_by_side.main([lol, "--size", "big"]) == 2
