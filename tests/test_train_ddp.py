"""`ruas-nni train --devices 2 --dist-strategy ddp` on CPU: two processes (Lightning's DDP over gloo) run
to the end and write one model and one checkpoint, as one process does."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


def _strategy_flag() -> str:
    """Train's flag for the Lightning strategy (``--strategy``, or its newer name)."""
    from ruas_nni.cli import train

    source = Path(train.__file__).read_text()
    return "--dist-strategy" if '"--dist-strategy"' in source else "--strategy"


def test_ddp_on_two_cpu_processes_writes_one_checkpoint(demo_data, tmp_path):
    out = tmp_path / "ddp"
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=path)
    result = subprocess.run(
        [sys.executable, "-m", "ruas_nni", "train", "--data", str(demo_data.train), "--steps", "4", "--crop", "16",
         "--device", "cpu", "--devices", "2", _strategy_flag(), "ddp", "--threads", "1", "--quiet", "--out", str(out)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert (out / "model.pt").is_file()
    checkpoints = sorted(p.name for p in out.rglob("*.ckpt"))
    assert len(checkpoints) == 1, checkpoints
    models = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.pt"))
    assert models == ["model.pt"], models
