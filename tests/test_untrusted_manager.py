"""The NNI manager is unauthenticated: whoever reaches its port can add trials with parameters of their
choosing and replace the search space. A comparison's trial takes every path and setting from its own
command line and accepts from the manager only ``{"strategy": known, "seed": integer in range}``;
anything else is one line and a failed trial, and nothing runs. Shown here in process, and through the
REST API of a real running `ruas-nni compare` in test_experiment.py
(``test_crafted_trials_and_search_space_are_refused``, on the comparison the other experiment tests
there share: one NNI manager and its trials fewer)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ruas_nni.experiments.settings import ParameterError, validate_parameters
from ruas_nni.experiments.trial_runner import plain_json

STRATEGIES = ["darts"]


def crafted_parameters(marker: Path, loaded: Path | None = None) -> list[dict]:
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
    for bad in crafted_parameters(Path("/tmp/never"), Path("/tmp/never")) + [
            {"strategy": "cooperative", "seed": 0}, {"seed": 0}, [1, 2],
            {"strategy": "darts", "seed": True}, {"strategy": "darts", "seed": -1}]:
        with pytest.raises(ParameterError):
            validate_parameters(bad, STRATEGIES)
    with pytest.raises(ParameterError):
        plain_json('{"parameters": {"strategy": "darts", "seed": NaN}}')
    # plain JSON: an nni.load object stays an inert mapping (validation then refuses it)
    record = plain_json(json.dumps({"parameters": {"strategy": {"__nni_obj__": "AAAA"}, "seed": 0}}))
    assert record["parameters"]["strategy"] == {"__nni_obj__": "AAAA"}
