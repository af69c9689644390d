"""Shared fixtures. Tests that need ``../shared`` (the authors' checkpoints, LOL, real photos)
skip with a reason when it is absent."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pytest

# NNI keeps its list of experiments in ~/nni-experiments/.experiment: nnictl and NNI's Python launcher
# take the path from HOME when NNI is imported (nni/tools/nnictl/constants.py), the NNI manager from
# os.homedir() (nni_node/common/globals/paths.js); NNI_CONFIG_DIR moves only NNI's training-service
# configs. So the tests give NNI a private HOME, set before any test module imports NNI, and remove it
# at exit; caches and git's configuration stay the user's.
_USER_HOME = Path.home()
_TEST_HOME = tempfile.mkdtemp(prefix="ruas-nni-test-home-")
for _name, _path in (("XDG_CACHE_HOME", _USER_HOME / ".cache"), ("XDG_CONFIG_HOME", _USER_HOME / ".config"),
                     ("GIT_CONFIG_GLOBAL", _USER_HOME / ".gitconfig"), ("MPLCONFIGDIR", _USER_HOME / ".config" / "matplotlib")):
    os.environ.setdefault(_name, str(_path))
os.environ["HOME"] = _TEST_HOME
# `ruas-nni enhance` caches ONNX graphs (ruas_nni.inference.graph_cache): the tests' go to the private
# HOME, not the user's cache.
os.environ["RUAS_NNI_CACHE_DIR"] = str(Path(_TEST_HOME) / "ruas-nni-cache")
atexit.register(shutil.rmtree, _TEST_HOME, ignore_errors=True)

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


@pytest.fixture(scope="session")
def killed_search(demo_data, tmp_path_factory) -> dict:
    """One search run straight through, and the same search (``--epochs 3 --steps 3 --crop 24 --seed
    3``, a checkpoint every epoch) in a child process killed with SIGKILL once its first checkpoint is
    written, then resumed with ``--resume``. Run once per session for the two tests that compare the
    results: test_search_cli.py (the architecture, arch.json) and test_search_resume_weights.py (every
    supernet weight and optimiser state in checkpoints/last.ckpt). ``interrupted`` is a copy of the
    checkpoint as the kill left it."""
    import signal
    import subprocess
    import sys
    import time

    import torch
    import yaml

    from ruas_nni.cli import main

    root = tmp_path_factory.mktemp("killed-search")
    config = root / "search.yaml"
    config.write_text(yaml.safe_dump({"threads": 1, "checkpoint_every": 1, "nrm_period": 2}))
    flags = ["--data", str(demo_data.train), "--quiet", "--epochs", "3", "--steps", "3", "--crop", "24", "--seed", "3",
             "--config", str(config)]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(["search", "--out", str(root / "straight"), *flags]) == 0

        out = root / "killed"
        env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""), OMP_NUM_THREADS="1")
        child = subprocess.Popen([sys.executable, "-m", "ruas_nni", "search", "--out", str(out), *flags], cwd=ROOT,
                                 env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        checkpoint = out / "checkpoints" / "last.ckpt"
        deadline = time.monotonic() + 120
        while not checkpoint.exists() and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        child.send_signal(signal.SIGKILL)
        _, stderr = child.communicate()
        assert checkpoint.exists(), stderr.decode()[-2000:]
        finished_before_the_kill = (out / "arch.json").exists()
        assert not finished_before_the_kill, "the search finished before it could be killed"
        interrupted = root / "interrupted.ckpt"
        shutil.copy(checkpoint, interrupted)
        resumed = main(["search", "--out", str(out), *flags, "--resume"])
    finally:
        torch.set_num_threads(threads)
    return {"straight": root / "straight", "killed": out, "returncode": child.returncode, "interrupted": interrupted,
            "resume_exit": resumed}


@pytest.fixture
def one_thread():
    """Run a test on one torch thread: the tensors of search and strategy tests are tiny, and one
    thread is much faster than several on a small or shared machine."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# Tests marked ``slow`` (NNI experiments, whole commands end to end, subprocess kills): `make test`
# runs the rest (`pytest -m "not slow"`), .ci/run runs both parts. Listed here by file (all of it) or
# by test name, so that the test files themselves stay as they are (test_suite_markers.py checks that
# every name is a test); new slow tests can use ``@pytest.mark.slow`` directly.
SLOW_FILES = {"test_experiment.py", "test_report.py", "test_demo.py"}
SLOW_TESTS = {
    "test_nni_configs.py": {"test_nnictl_creates_the_comparison"},
    "test_nni_contract.py": {"test_through_nas_experiment", "test_resume_from_the_strategy_state_equals_an_uninterrupted_run"},
    "test_search_cli.py": {"test_every_strategy_moves_the_alphas_and_writes_arch_json",
                           "test_same_seed_same_architecture_and_tensorboard",
                           "test_killed_search_resumes_to_the_uninterrupted_result"},
    "test_training.py": {"test_killed_run_resumes_to_the_same_weights",
                         "test_training_lowers_the_illumination_loss_and_writes_model_and_logs",
                         "test_same_seed_same_weights_other_seed_other_weights"},
    "test_tiling.py": {"test_4k_image_enhances_in_under_1_gb"},
    "test_benchmark.py": {"test_benchmark_command_reports_both_paths"},  # the whole command, child processes
    "test_graph_cache.py": {"test_a_damaged_cache_entry_is_rebuilt"},  # three cold starts of enhance
}


def pytest_collection_modifyitems(config, items):
    for item in items:
        file = item.path.name
        name = getattr(item, "originalname", item.name)
        if file in SLOW_FILES or name in SLOW_TESTS.get(file, ()):
            item.add_marker(pytest.mark.slow)
