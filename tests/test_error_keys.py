"""Library code names its own arguments and configuration keys in errors; only ``ruas_nni.cli`` (and the
trial's own command line, ``ruas_nni.experiments.trial``) speak of flags. The command line spells the
keys as the flags users see today."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from ruas_nni.base.errors import RuasError, UsageError
from ruas_nni.cli import error_line, flag_of
from ruas_nni.inference.enhance import resolve_device
from ruas_nni.training.datasets import scan_folders

ROOT = Path(__file__).resolve().parents[1]
COMMAND_LINES = {ROOT / "ruas_nni" / "cli", ROOT / "ruas_nni" / "experiments" / "trial.py"}
FLAG = re.compile(r"(^|[\s(])--[a-z]")


def _library_files() -> list[Path]:
    files = []
    for package in ("ruas_nni", "search_spaces", "strategies"):
        for path in sorted((ROOT / package).rglob("*.py")):
            if not any(path == place or place in path.parents for place in COMMAND_LINES):
                files.append(path)
    return files


def _strings(node: ast.AST) -> list[str]:
    return [n.value for n in ast.walk(node) if isinstance(n, ast.Constant) and isinstance(n.value, str)]


def test_no_library_error_names_a_flag():
    found = []
    for path in _library_files():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Raise) and node.exc is not None:
                found += [f"{path.relative_to(ROOT)}:{node.lineno}: {text!r}" for text in _strings(node.exc)
                          if FLAG.search(text) and "nnictl" not in text]
    assert not found, "library errors that name command-line flags:\n" + "\n".join(found)


def test_keys_are_spelled_as_flags_only_where_marked():
    error = UsageError("`init_nrm` x.pt: see `nnictl stop --port 8080` or `out`", keys=("init_nrm",))
    assert str(error) == "`init_nrm` x.pt: see `nnictl stop --port 8080` or `out`"
    assert error_line(error) == "--init-nrm x.pt: see `nnictl stop --port 8080` or `out`"
    assert flag_of("val_data") == "--val-data"
    assert error_line(RuasError("plain")) == "plain"


def test_library_errors_carry_their_key(tmp_path):
    with pytest.raises(UsageError) as info:
        scan_folders([tmp_path / "missing"], "eval_data")
    assert info.value.keys == ("eval_data",)
    assert error_line(info.value) == f"--eval-data {tmp_path / 'missing'}: no such folder"
    with pytest.raises(UsageError) as info:
        resolve_device("tpu")
    assert error_line(info.value) == "--device: unknown device 'tpu'; expected auto, cpu or cuda"
