"""How ``ruas_nni.inference`` holds together: its modules import one another without a circle (function-
level and ``TYPE_CHECKING`` imports included), the engine choice and its one fallback are written once,
and ONNX Runtime, a required dependency, is never tested for."""

from __future__ import annotations

from pathlib import Path

from test_layers import ROOT, imported_modules, module_name

INFERENCE = ROOT / "ruas_nni" / "inference"
FALLBACK_WARNING = "the native engine is not available here"


def import_graph(files: list[Path], sources: dict[Path, str] | None = None) -> dict[str, set[str]]:
    """``module -> modules of the same package it imports`` (anywhere in the file)."""
    names = {module_name(path) for path in files}
    graph = {}
    for path in files:
        targets = {target for _, target in imported_modules(path, (sources or {}).get(path))}
        # `from .x import y` is reported as x.y too: keep the longest name that is one of the modules
        graph[module_name(path)] = {next((t for t in (target, target.rpartition(".")[0]) if t in names), "")
                                    for target in targets} - {"", module_name(path)}
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every module that reaches itself, with the path it takes (depth-first, one path per module)."""
    found = []
    for start in sorted(graph):
        stack, seen = [(start, [start])], set()
        while stack:
            node, path = stack.pop()
            for target in sorted(graph.get(node, ())):
                if target == start:
                    found.append([*path, start])
                    stack.clear()
                    break
                if target not in seen:
                    seen.add(target)
                    stack.append((target, [*path, target]))
    return found


def test_inference_has_no_import_circle():
    files = sorted(INFERENCE.glob("*.py"))
    graph = import_graph(files)
    assert len(graph) >= 15 and "ruas_nni.inference.graph_cache" in graph["ruas_nni.inference.opener"]
    assert not circles(graph), "import circles in ruas_nni/inference:\n" + "\n".join(
        " -> ".join(c) for c in circles(graph))


def test_the_circle_check_sees_function_level_and_type_checking_imports():
    a, b, c = (INFERENCE / f"_probe_{name}.py" for name in "abc")
    sources = {a: "def f():\n    from ._probe_b import g\n",
               b: "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from . import _probe_c\n",
               c: "from ruas_nni.inference._probe_a import f\nimport numpy\n"}
    graph = import_graph([a, b, c], sources)
    assert circles(graph)[0] == ["ruas_nni.inference._probe_a", "ruas_nni.inference._probe_b",
                                 "ruas_nni.inference._probe_c", "ruas_nni.inference._probe_a"]
    del sources[c]
    assert not circles(import_graph([a, b], sources))


def _places(text: str) -> list[str]:
    return [f"{path.relative_to(ROOT)}:{number}" for path in sorted((ROOT / "ruas_nni").rglob("*.py"))
            for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1) if text in line]


def test_the_engine_fallback_is_written_once():
    places = _places(FALLBACK_WARNING)
    assert len(places) == 1 and places[0].startswith("ruas_nni/inference/engine.py:"), places


def test_onnxruntime_is_required_not_tested_for():
    assert not _places("find_spec"), "onnxruntime is a dependency (setup.cfg): import it, do not test for it"


def test_every_front_end_opens_its_enhancer_in_one_place():
    """The command line and the benchmark get their enhancer from ``open_enhancer``; only it (and the
    ``Enhancer``, for its graph engines) chooses the engine."""
    for path in ("ruas_nni/cli/enhance.py", "ruas_nni/inference/benchmark.py"):
        text = (ROOT / path).read_text(encoding="utf-8")
        assert "open_enhancer(" in text and "Enhancer(" not in text.replace("open_enhancer(", ""), path
    assert sorted({p.rpartition(":")[0] for p in _places("choose_engine(")}) == [
        "ruas_nni/inference/engine.py", "ruas_nni/inference/enhance.py", "ruas_nni/inference/opener.py"]
