"""The NNI manager is unauthenticated: whoever reaches its port can add trials with parameters of their
choosing and replace the search space. A comparison's trial takes every path and setting from its own
command line and accepts from the manager only ``{"strategy": known, "seed": integer in range}``;
anything else is one line and a failed trial, and nothing runs. Shown here through the REST API of a
real running `ruas-nni compare`."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import requests
from nni_utils import (
    assert_all_gone,
    free_port,
    manager_pid,
    nnictl,
    process_tree,
    rest,
    ruas_cli,
    small_pairs,
    trials_finished,
    wait_until,
)

from ruas_nni.experiments.settings import ParameterError, validate_parameters
from ruas_nni.experiments.trial import REFUSED
from ruas_nni.experiments.trial_runner import plain_json

pytestmark = pytest.mark.slow

STRATEGIES = ["darts"]


def _crafted(marker: Path, loaded: Path | None = None) -> list[dict]:
    """Parameters an attacker might post: unknown keys, a path, a shell string, a huge seed, a seed as
    text, and an object that ``nni.load`` turns into a call of ``os.system`` (which writes, to
    ``loaded``, the command line of the process that decoded it)."""
    crafted = [
        {"strategy": "darts", "seed": 0, "data": "/etc"},
        {"strategy": "../../../etc/passwd", "seed": 0},
        {"strategy": f"darts; touch {marker}", "seed": 1},
        {"strategy": "darts", "seed": 10**30},
        {"strategy": "darts", "seed": "1"},
    ]
    if loaded is not None:
        command = f"tr '\\0' ' ' < /proc/$PPID/cmdline >> {loaded}; echo >> {loaded}"
        crafted.append({"strategy": {"__symbol__": "os.system", "__args__": [command]}, "seed": 0})
    return crafted


def test_validation_in_process():
    assert validate_parameters({"strategy": "darts", "seed": 3}, STRATEGIES) == ("darts", 3)
    for bad in _crafted(Path("/tmp/never"), Path("/tmp/never")) + [{"strategy": "cooperative", "seed": 0}, {"seed": 0}, [1, 2],
                                                {"strategy": "darts", "seed": True}, {"strategy": "darts", "seed": -1}]:
        with pytest.raises(ParameterError):
            validate_parameters(bad, STRATEGIES)
    with pytest.raises(ParameterError):
        plain_json('{"parameters": {"strategy": "darts", "seed": NaN}}')
    # plain JSON: an nni.load object stays an inert mapping (validation then refuses it)
    record = plain_json(json.dumps({"parameters": {"strategy": {"__nni_obj__": "AAAA"}, "seed": 0}}))
    assert record["parameters"]["strategy"] == {"__nni_obj__": "AAAA"}


def _api(port: int) -> str:
    return f"http://127.0.0.1:{port}/api/v1/nni"


def _trial_dir(job: dict) -> Path:
    """A local trial's folder (its NNI_OUTPUT_DIR) from the REST API's logPath (``file://host:/path``)."""
    path = job["logPath"].split("://", 1)[-1]
    return Path(path.split(":", 1)[1] if ":" in path else path)


def test_crafted_trials_and_search_space_are_refused(demo_data, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    marker = tmp_path / "pwned"
    loaded = tmp_path / "decoded-by"
    pairs = small_pairs(Path(demo_data.eval), tmp_path / "pairs")
    port = free_port()
    result = ruas_cli(["compare", "--strategies", ",".join(STRATEGIES), "--data", str(demo_data.train),
                       "--eval-data", str(pairs), "--epochs", "1", "--steps", "1", "--crop", "16",
                       "--train-steps", "1", "--port", str(port), "--concurrency", "4",
                       "--experiment-dir", str(tmp_path / "experiments"), "--detach"], home)
    assert result.returncode == 0, result.stderr
    notes = [line for line in result.stdout.splitlines() if "without authentication" in line]
    assert len(notes) == 1 and f"port {port}" in notes[0] and "SSH tunnel" in notes[0]
    experiment_id = next(line.split(": ", 1)[1] for line in result.stdout.splitlines()
                         if line.startswith("experiment id: "))
    processes = process_tree(manager_pid(home, experiment_id))
    crafted = _crafted(marker, loaded)
    try:
        wait_until(lambda: rest(port, "/trial-jobs"), 60, 1.0, "the comparison's own trial")
        # a crafted search space (GridSearch makes one trial of it), and room for every extra trial
        profile = rest(port, "/experiment")
        profile["params"]["searchSpace"] = {
            "strategy": {"_type": "choice", "_value": [f"darts && touch {marker}"]},
            "seed": {"_type": "choice", "_value": [-5]},
        }
        requests.put(f"{_api(port)}/experiment?update_type=SEARCH_SPACE", json=profile, timeout=10).raise_for_status()
        profile["params"]["maxTrialNumber"] = 1 + 1 + len(crafted)
        requests.put(f"{_api(port)}/experiment?update_type=MAX_TRIAL_NUM", json=profile, timeout=10).raise_for_status()
        for parameters in crafted:  # the web UI's "customized trial"
            requests.post(f"{_api(port)}/trial-jobs", json=parameters, timeout=10).raise_for_status()
        total = 2 + len(crafted)
        jobs = wait_until(lambda: trials_finished(port, total), 300, 2.0, f"{total} trials to finish")

        by_parameters = {}
        for job in jobs:
            record = json.loads(job["hyperParameters"][-1])
            by_parameters[json.dumps(record["parameters"], sort_keys=True)] = job
        own = by_parameters.pop(json.dumps({"seed": 0, "strategy": "darts"}, sort_keys=True))
        assert own["status"] == "SUCCEEDED", own
        assert len(by_parameters) == 1 + len(crafted), list(by_parameters)
        for key, job in by_parameters.items():
            assert job["status"] == "FAILED", (key, job["status"])
            folder = _trial_dir(job)
            log = (folder / "trial.stderr").read_text(errors="replace")  # NNI 3.0: trial.stdout / trial.stderr
            ours = [line for line in log.splitlines() if line.startswith("ruas-nni trial")]
            assert len(ours) == 1 and ours[0].startswith(REFUSED), (key, log[-2000:])
            log += (folder / "trial.stdout").read_text(errors="replace")
            assert "Traceback" not in log and "trial: strategy" not in log, (key, log[-2000:])
            print(f"{key}: {ours[0]}")
            assert not (folder / "search").exists() and not (folder / "tensorboard").exists(), key
        assert not marker.exists(), "a crafted parameter ran a command"
        # No trial decoded the nni.load object (they read plain JSON) -- but NNI's own dispatcher (the
        # tuner process on the manager's machine) does, when the trial ends (msg_dispatcher.py
        # handle_trial_end: load(hyper_params)): a hazard of NNI 3.0 itself, documented in
        # docs/experiments.md. If NNI stops decoding them, this tells us.
        decoders = loaded.read_text().splitlines() if loaded.exists() else []
        assert not any("ruas_nni.experiments.trial" in line for line in decoders), decoders
        print(f"nni.load payload decoded by: {decoders}")
    finally:
        nnictl(["stop", "--port", str(port)], home)
        assert_all_gone(processes)
    assert not os.path.exists(marker)
