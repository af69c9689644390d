"""One home for each piece of plumbing (scans of the source, so that a second copy fails here):

* one factory of Lightning trainers (:func:`ruas_nni.training.plumbing.lightning_trainer`);
* one place that says what the device ``auto`` means (:mod:`ruas_nni.base.devices`).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

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
    places = [p for p in auto_device_resolutions(_sources()) if not p.startswith("ruas_nni/inference/")]
    assert _files(places) == {DEVICE_RESOLVER}, (
        f"what the device `auto` means is decided only in {DEVICE_RESOLVER}; found: {places}")


@pytest.mark.xfail(strict=True, reason="ruas_nni/inference/* is being refactored in another change: its "
                   "enhance.resolve_device should call ruas_nni.base.devices.resolve_device (then drop this mark)")
def test_inference_uses_the_one_device_resolver():
    places = [p for p in auto_device_resolutions(_sources()) if p.startswith("ruas_nni/inference/")]
    assert not places, f"inference resolves the device `auto` itself: {places}"


def test_the_device_scan_catches_a_second_resolver():
    probe = {"ruas_nni/training/_probe.py": "def f(device, args):\n    if device == 'auto':\n        pass\n"
             "    return args.device not in ('auto', 'cpu')\n\nengine = 'auto' == 'auto'\n"}
    assert auto_device_resolutions(probe) == ["ruas_nni/training/_probe.py:2", "ruas_nni/training/_probe.py:4"]
