"""``benchmarks/gpu.sh`` checks its arguments and, without a GPU, stops with one clear line."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu.sh"

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, PYTHON=sys.executable))


@pytest.mark.parametrize("args,message", [
    (["--bogus"], "unknown argument: --bogus"),
    (["--budget", "5"], "--budget must be 60-3600 seconds"),
    (["--budget", "soon"], "--budget must be a whole number"),
    (["--checkpoint", "/no/such/model.pt"], "no such file"),
    (["--out"], "--out needs a DIR"),
])
def test_bad_arguments_exit_2_in_one_line(args, message):
    result = _run(*args)
    assert result.returncode == 2
    assert result.stdout == "" and len(result.stderr.strip().splitlines()) == 1 and message in result.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present: the script would measure it")
def test_without_a_gpu_it_says_so_in_one_line_and_measures_nothing(tmp_path):
    result = _run("--out", str(tmp_path / "out"))
    assert result.returncode == 3
    assert result.stderr.strip() == ("gpu.sh: no CUDA GPU visible to PyTorch (torch.cuda.is_available() is False): "
                                     "nothing measured")
    assert not (tmp_path / "out").exists()
