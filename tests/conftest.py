"""Shared fixtures. Tests that need ``../shared`` (the authors' checkpoints, LOL, real photos)
skip with a reason when it is absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("RUAS_SHARED", ROOT.parent / "shared"))
REFERENCE = SHARED / "reference" / "ruas_official"


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"needs {path} (the project's ../shared material), which is absent here")
    return path


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    """The authors' checkpoints, inputs and reference outputs."""
    return _need(REFERENCE)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    return _need(SHARED / "data")


@pytest.fixture(scope="session")
def demo_data(tmp_path_factory: pytest.TempPathFactory):
    """The built-in demo data (synthesised once per test session)."""
    from ruas_nni.training.demo_data import make_demo_data

    return make_demo_data(tmp_path_factory.mktemp("demo") / "data")


@pytest.fixture
def one_thread():
    """Run a test on one torch thread: the tensors of search and strategy tests are tiny, and one
    thread is much faster than several on a small or shared machine."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
