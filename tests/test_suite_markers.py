"""The split of the test suite: `make test` leaves out the tests marked ``slow``, and .ci/run still runs
them. The marker is given by name in conftest.py (``SLOW_FILES``, ``SLOW_TESTS``): a renamed test
would silently lose it and move into `make test`, so every name there must be a test."""

from __future__ import annotations

import re
from pathlib import Path

from conftest import SLOW_FILES, SLOW_TESTS

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent


def test_every_name_given_the_slow_marker_is_a_test():
    for name in SLOW_FILES:
        assert (TESTS / name).is_file(), f"conftest.SLOW_FILES names {name}, which is not in tests/"
    for file, names in SLOW_TESTS.items():
        text = (TESTS / file).read_text()
        for name in names:
            assert re.search(rf"^def {name}\(", text, re.MULTILINE), f"conftest.SLOW_TESTS: no {name} in {file}"


def test_make_test_leaves_out_the_slow_tests_and_ci_runs_them():
    makefile = (ROOT / "Makefile").read_text()
    recipes = dict(re.findall(r"^([\w-]+):[^\n]*\n\t([^\n]+)", makefile, re.MULTILINE))
    assert recipes["test"].endswith('pytest -q -m "not slow"')
    assert recipes["test-slow"].endswith("pytest -q -m slow")
    ci = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert "make test" in ci and "make test-slow" in ci
