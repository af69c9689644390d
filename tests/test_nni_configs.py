"""The example NNI configs: NNI's own config classes accept them, their trial commands are ones the
trial understands, and `nnictl create --config` starts the comparison for real."""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from nni.experiment.config import ExperimentConfig
from nni.experiment.config.training_services import FrameworkControllerConfig, LocalConfig, RemoteConfig
from nni_utils import (
    ROOT,
    assert_all_gone,
    free_port,
    listening,
    manager_pid,
    nnictl,
    process_tree,
    rest,
    small_pairs,
    wait_until,
)

from ruas_nni.experiments.compare import CompareConfig, load_compare_config
from ruas_nni.experiments.trial import build_parser
from ruas_nni.search.config import STRATEGIES

EXAMPLES = ROOT / "examples"


def _trial_args(command: str):
    words = shlex.split(command)
    assert words[1:3] == ["-m", "ruas_nni.experiments.trial"], words
    return build_parser().parse_args(words[3:])


def _check_comparison(config: ExperimentConfig) -> None:
    space = config.search_space
    assert space["strategy"] == {"_type": "choice", "_value": list(STRATEGIES)}
    seeds = space["seed"]["_value"]
    assert config.tuner.name == "GridSearch"
    assert config.max_trial_number == len(STRATEGIES) * len(seeds)


def test_local_example_is_the_comparison():
    config = ExperimentConfig.load(EXAMPLES / "compare_experiment.yaml")
    config.validate()
    canonical = config.canonical_copy()
    assert isinstance(canonical.training_service, LocalConfig)
    _check_comparison(canonical)
    assert Path(canonical.trial_code_directory) == ROOT  # relative to the file: the repository root
    args = _trial_args(canonical.trial_command)
    assert args.data == ["demo-run/data/train"] and args.eval_data == "demo-run/data/eval"
    assert (args.epochs, args.crop, args.train_steps) == (20, 320, 800)


def test_remote_example_validates(tmp_path, monkeypatch):
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "id_rsa").write_text("not a real key: RemoteConfig only checks that the file exists\n")
    monkeypatch.setenv("HOME", str(home))
    config = ExperimentConfig.load(EXAMPLES / "remote_training_service.yaml")
    config.validate()
    canonical = config.canonical_copy()
    assert isinstance(canonical.training_service, RemoteConfig)
    machines = canonical.training_service.machine_list
    assert len(machines) == 3 and all(Path(m.ssh_key_file) == home / ".ssh" / "id_rsa" for m in machines)
    assert canonical.nni_manager_ip and canonical.trial_concurrency == len(machines)
    _check_comparison(canonical)
    args = _trial_args(canonical.trial_command)
    assert args.device == "auto" and args.data and args.eval_data


def test_remote_example_needs_a_key(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    config = ExperimentConfig.load(EXAMPLES / "remote_training_service.yaml")
    with pytest.raises(ValueError, match="SSH key file"):
        config.validate()


def test_kubernetes_example_validates():
    config = ExperimentConfig.load(EXAMPLES / "kubernetes_training_service.yaml")
    config.validate()
    canonical = config.canonical_copy()
    service = canonical.training_service
    assert isinstance(service, FrameworkControllerConfig)
    assert service.storage.storage_type == "nfs" and service.reuse_mode
    assert [role.name for role in service.task_roles] == ["worker"]
    _check_comparison(canonical)
    args = _trial_args(canonical.trial_command)
    assert args.data[0].startswith("/tmp/mount/")  # NNI mounts the NFS export there in every pod
    role_args = _trial_args(service.task_roles[0].command)
    assert vars(role_args) == vars(args)


def test_compare_settings_example_loads():
    config = load_compare_config(EXAMPLES / "compare.yaml", {})
    assert isinstance(config, CompareConfig)
    assert config.strategies == list(STRATEGIES) and config.repeats == 3 and config.trial_count == len(STRATEGIES) * 3
    assert config.data == ["demo-run/data/train"] and config.eval_data == "demo-run/data/eval"


def test_nas_example_script_starts():
    result = subprocess.run([sys.executable, str(EXAMPLES / "nas_multitrial.py"), "--help"], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0 and "--val-data" in result.stdout


def test_nnictl_creates_the_comparison(demo_data, tmp_path):
    """The local example, pointed at small data and a temporary experiment folder, through
    `nnictl create --config`: the manager starts, lists the comparison's search space, runs a trial,
    serves the web UI, and `nnictl stop --port` stops everything."""
    home = tmp_path / "home"
    home.mkdir()
    pairs = small_pairs(Path(demo_data.eval), tmp_path / "pairs")
    raw = yaml.safe_load((EXAMPLES / "compare_experiment.yaml").read_text())
    command = shlex.split(raw["trialCommand"])
    command[command.index("--data") + 1] = str(demo_data.train)
    command[command.index("--eval-data") + 1] = str(pairs)
    for flag, value in (("--epochs", "1"), ("--crop", "16"), ("--train-steps", "1")):
        command[command.index(flag) + 1] = value
    raw.update(trialCommand=shlex.join([sys.executable, *command[1:]]), trialCodeDirectory=str(ROOT),
               experimentWorkingDirectory=str(tmp_path / "experiments"))
    config_file = tmp_path / "compare_experiment.yaml"
    config_file.write_text(yaml.safe_dump(raw, sort_keys=False))
    port = free_port()
    result = nnictl(["create", "--config", str(config_file), "--port", str(port)], home)
    assert result.returncode == 0, result.stdout + result.stderr
    experiment_id = rest(port, "/experiment")["id"]
    processes = process_tree(manager_pid(home, experiment_id))
    try:
        profile = rest(port, "/experiment")
        assert profile["params"]["searchSpace"] == raw["searchSpace"]
        assert profile["params"]["maxTrialNumber"] == len(STRATEGIES) * 3
        jobs = wait_until(lambda: [j for j in rest(port, "/trial-jobs") if j["status"] in ("RUNNING", "SUCCEEDED")],
                          60, 1.0, "a trial to start")
        assert jobs[0]["hyperParameters"]
        import requests

        page = requests.get(f"http://127.0.0.1:{port}/", timeout=10)
        assert page.status_code == 200 and "Neural Network Intelligence" in page.text
        processes += [p for p in process_tree(processes[0].pid) if p not in processes]  # the running trial too
    finally:
        stop = nnictl(["stop", "--port", str(port)], home)
    assert stop.returncode == 0, stop.stdout + stop.stderr
    assert_all_gone(processes)
    assert not listening(port)
