"""One home for each piece of plumbing (scans of the source, so that a second copy fails here):

* one factory of Lightning trainers (:func:`ruas_nni.training.plumbing.lightning_trainer`);
* one place that says what the device ``auto`` means (:mod:`ruas_nni.base.devices`);
* the comparison's trial: library code (:mod:`ruas_nni.experiments.trial_runner`) whose errors name
  keys, never flags, and a thin command line (:mod:`ruas_nni.experiments.trial`) that spells them.

(NNI internals only in the compat modules: ``tests/test_nni_compat.py``.)
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from ruas_nni.base.errors import UsageError
from ruas_nni.experiments import trial
from ruas_nni.experiments.settings import TrialSettings
from ruas_nni.experiments.trial_runner import run_trial

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("ruas_nni", "search_spaces", "strategies")

TRAINER_FACTORY = "ruas_nni/training/plumbing.py"
DEVICE_RESOLVER = "ruas_nni/base/devices.py"


def _sources() -> dict[str, str]:
    return {str(path.relative_to(ROOT)): path.read_text(encoding="utf-8")
            for package in PACKAGES for path in sorted((ROOT / package).rglob("*.py"))}


def _called_name(call: ast.Call) -> str:
    func = call.func
    return func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""


def trainer_constructions(sources: dict[str, str]) -> list[str]:
    """``path:line`` of every call that builds a Lightning trainer: a call of anything named
    ``...Trainer`` (``pl.Trainer``, NNI's ``Trainer``) or ``trainer_class``."""
    found = []
    for path, text in sources.items():
        for node in ast.walk(ast.parse(text, path)):
            if isinstance(node, ast.Call):
                name = _called_name(node)
                if name.endswith("Trainer") or name == "trainer_class":
                    found.append(f"{path}:{node.lineno}")
    return found


def _mentions_auto(node: ast.AST) -> bool:
    if isinstance(node, ast.Constant):
        return node.value == "auto"
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return any(_mentions_auto(item) for item in node.elts)
    return False


def auto_device_resolutions(sources: dict[str, str]) -> list[str]:
    """``path:line`` of every comparison of a device name (an expression whose text holds ``device``)
    with ``"auto"`` (``device == "auto"``, ``args.device not in ("auto", "cpu")``, ...)."""
    found = []
    for path, text in sources.items():
        for node in ast.walk(ast.parse(text, path)):
            if isinstance(node, ast.Compare):
                operands = [node.left, *node.comparators]
                if any(map(_mentions_auto, operands)) and any(
                        "device" in ast.unparse(o).lower() for o in operands if not _mentions_auto(o)):
                    found.append(f"{path}:{node.lineno}")
    return found


def _files(places: list[str]) -> set[str]:
    return {place.rpartition(":")[0] for place in places}


def test_one_trainer_factory():
    places = trainer_constructions(_sources())
    assert len(places) == 1 and _files(places) == {TRAINER_FACTORY}, (
        f"Lightning trainers are built only by {TRAINER_FACTORY}'s lightning_trainer; found: {places}")


def test_the_trainer_scan_catches_a_second_factory():
    probe = {"ruas_nni/search/_probe.py": "import pytorch_lightning as pl\nfrom nni.nas.evaluator.pytorch import Trainer\n"
             "a = pl.Trainer(max_epochs=1)\nb = Trainer()\n"}
    assert trainer_constructions(probe) == ["ruas_nni/search/_probe.py:3", "ruas_nni/search/_probe.py:4"]


def test_one_device_resolver():
    places = auto_device_resolutions(_sources())
    assert _files(places) == {DEVICE_RESOLVER}, (
        f"what the device `auto` means is decided only in {DEVICE_RESOLVER}; found: {places}")


def test_the_device_scan_catches_a_second_resolver():
    probe = {"ruas_nni/training/_probe.py": "def f(device, args):\n    if device == 'auto':\n        pass\n"
             "    return args.device not in ('auto', 'cpu')\n\nengine = 'auto' == 'auto'\n"}
    assert auto_device_resolutions(probe) == ["ruas_nni/training/_probe.py:2", "ruas_nni/training/_probe.py:4"]


TRIAL_CLI = "ruas_nni/experiments/trial.py"
TRIAL_LIBRARY = ("ruas_nni/experiments/trial_runner.py", "ruas_nni/experiments/settings.py")
FLAG = re.compile(r"(^|[\s(`])--[a-z]")


def _raised_strings(text: str) -> list[tuple[int, str]]:
    return [(node.lineno, n.value) for node in ast.walk(ast.parse(text)) if isinstance(node, ast.Raise) and node.exc
            for n in ast.walk(node.exc) if isinstance(n, ast.Constant) and isinstance(n.value, str)]


def test_the_trial_library_raises_no_flag_names():
    found = [f"{path}:{line}: {text!r}" for path in TRIAL_LIBRARY
             for line, text in _raised_strings((ROOT / path).read_text(encoding="utf-8")) if FLAG.search(text)]
    assert not found, "trial library errors that name command-line flags:\n" + "\n".join(found)


def test_the_flag_scan_catches_a_flag():
    assert [text for _, text in _raised_strings("raise UsageError(f'no pairs: pass --eval-data {x}')\n")
            if FLAG.search(text)] == ["no pairs: pass --eval-data "]


def test_the_trial_command_line_is_thin():
    """Its module defines the parser, the choice between NNI's parameters and the flags, and ``main``;
    everything else is library code."""
    tree = ast.parse((ROOT / TRIAL_CLI).read_text(encoding="utf-8"))
    defined = {node.name for node in tree.body if isinstance(node, (ast.FunctionDef, ast.ClassDef))}
    assert defined <= {"build_parser", "_flag", "_parameters", "main"}, sorted(defined)
    assert len((ROOT / TRIAL_CLI).read_text(encoding="utf-8").splitlines()) < 150


def test_a_trial_without_evaluation_pairs_names_the_key_and_the_command_line_spells_it(tmp_path, capsys):
    with pytest.raises(UsageError) as info:
        run_trial(TrialSettings(data=[str(tmp_path)]), "darts", 0, tmp_path, reporter=None)  # type: ignore[arg-type]
    assert str(info.value) == "`eval_data`: give a folder with low/ and high/" and info.value.keys == ("eval_data",)
    assert trial.main(["--data", str(tmp_path), "--strategy", "darts", "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err == "ruas-nni trial: error: --eval-data: give a folder with low/ and high/\n"
