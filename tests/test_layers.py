"""The layers of the package, as folders, import only downward; the inference path never loads NNI or
Lightning.

Order (bottom first): ``ruas_nni.base`` < ``ruas_nni.model`` < ``ruas_nni.inference`` <
``ruas_nni.training`` < ``search_spaces`` / ``strategies`` < ``ruas_nni.search`` <
``ruas_nni.experiments`` < ``ruas_nni.cli``. ``strategies`` is image-agnostic: it imports no
``ruas_nni`` at all. ``ruas_nni`` itself (its ``__init__``) re-exports the model layer.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("ruas_nni", "search_spaces", "strategies")

LAYERS = {
    "ruas_nni.base": 0,
    "ruas_nni.model": 1,
    "ruas_nni": 1,  # the package's __init__: the model layer's public names (and __version__)
    "ruas_nni.pretrained": 1,
    "ruas_nni.inference": 2,
    "ruas_nni.training": 3,
    "search_spaces": 4,
    "strategies": 4,
    "ruas_nni.search": 5,
    "ruas_nni.experiments": 6,
    "ruas_nni.cli": 7,
    "ruas_nni.__main__": 7,
}


def layer_of(module: str) -> str | None:
    """The layer (a key of :data:`LAYERS`) that holds ``module``, or ``None`` outside this project."""
    if module.split(".")[0] not in PACKAGES:
        return None
    best = None
    for name in LAYERS:
        if (module == name or module.startswith(name + ".")) and (best is None or len(name) > len(best)):
            best = name
    assert best is not None, f"{module}: in no layer; add its folder to LAYERS in tests/test_layers.py"
    return best


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(path: Path, source: str | None = None) -> list[tuple[int, str]]:
    """``(line, absolute module name)`` of every import in ``path``, relative ones resolved; also those
    inside functions and ``TYPE_CHECKING`` blocks (a layer may not even mention a higher one)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    text = path.read_text(encoding="utf-8") if source is None else source
    for node in ast.walk(ast.parse(text, str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if node.module is None or node.level:  # `from . import x` may name a submodule
                found += [(node.lineno, f"{target}.{alias.name}") for alias in node.names]
            else:
                found.append((node.lineno, target))
    return found


def project_files() -> list[Path]:
    return sorted(p for package in PACKAGES for p in (ROOT / package).rglob("*.py"))


def layer_violations(files: list[Path], sources: dict[Path, str] | None = None) -> list[str]:
    """One line per upward import in ``files`` (``sources`` may give a file's text instead of the disk's)."""
    problems = []
    for path in files:
        here = layer_of(module_name(path))
        for line, target in imported_modules(path, (sources or {}).get(path)):
            there = layer_of(target)
            if there is None or there == here:
                continue
            where = f"{path.relative_to(ROOT)}:{line} imports {target}"
            if here == "strategies" and target.split(".")[0] == "ruas_nni":
                problems.append(f"{where}: strategies must not import ruas_nni")
            elif LAYERS[there] > LAYERS[here]:
                problems.append(f"{where}: layer {here} may not import the higher layer {there}")
    return problems


def test_every_module_is_in_a_layer():
    for path in project_files():
        layer_of(module_name(path))


def test_layers_import_only_downward():
    problems = layer_violations(project_files())
    assert not problems, "imports across layers, upward:\n" + "\n".join(problems)


@pytest.mark.parametrize("source, expected", [
    ("from ..training.run import train\n", "layer ruas_nni.inference may not import the higher layer ruas_nni.training"),
    ("import nni\nfrom ruas_nni.search import runner\n", "may not import the higher layer ruas_nni.search"),
    ("def f():\n    from ..experiments import trial\n", "may not import the higher layer ruas_nni.experiments"),
    ("from .. import cli\n", "may not import the higher layer ruas_nni.cli"),
])
def test_an_upward_import_is_caught(source, expected):
    """The check itself: an upward import in a lower layer (a made-up inference module) is reported
    with its file, line and target."""
    probe = ROOT / "ruas_nni" / "inference" / "_layer_probe.py"
    problems = layer_violations([probe], {probe: source})
    assert len(problems) == 1, problems
    assert expected in problems[0] and problems[0].startswith("ruas_nni/inference/_layer_probe.py:"), problems


def test_strategies_importing_ruas_nni_is_caught():
    probe = ROOT / "strategies" / "_layer_probe.py"
    problems = layer_violations([probe], {probe: "from ruas_nni.model.ops import OPERATION_NAMES\n"})
    assert len(problems) == 1 and "strategies must not import ruas_nni" in problems[0], problems


def test_a_downward_import_passes():
    probe = ROOT / "ruas_nni" / "search" / "_layer_probe.py"
    source = ("import torch\nfrom ..training.run import train\nfrom strategies import CooperativeBilevel\n"
              "from .. import __version__\n")
    assert layer_violations([probe], {probe: source}) == []


def test_inference_never_loads_nni_or_lightning():
    """Importing the package, the inference modules and the enhance command loads neither NNI nor
    Lightning, not even transitively (in a fresh interpreter)."""
    code = (
        "import sys\n"
        "import ruas_nni, ruas_nni.inference.enhance, ruas_nni.inference.evaluation\n"
        "import ruas_nni.inference.benchmark, ruas_nni.inference.onnx_export, ruas_nni.cli.enhance\n"
        "import ruas_nni.inference.graph_cache, ruas_nni.inference.files\n"
        "from ruas_nni.cli import build_parser; build_parser()\n"
        "banned = ('nni', 'pytorch_lightning', 'lightning', 'lightning_fabric')\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in banned)\n"
        "print(' '.join(bad[:5]))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "", f"the inference path loaded: {result.stdout.strip()}"
