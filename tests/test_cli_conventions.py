"""Conventions every command follows (issue 14): one meaning per flag, the old `train --strategy`
refused in one line, one thread per process by default, a last line saying what was written where,
no progress bars, carriage returns or colour codes in redirected output, dependencies' noise filtered
in one place, labelled side-by-side pictures and messages that say what is true. Fast tests."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from nni_utils import small_pairs
from PIL import Image

from ruas_nni.base.quiet import show_progress
from ruas_nni.base.threads import DEFAULT_THREADS, set_torch_threads
from ruas_nni.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[1]


def _dark_image(path: Path, size=(40, 30), value=20) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, value, (size[1], size[0], 3), dtype=np.uint8)).save(path)
    return path


# ---------------------------------------------------------------------------- flags

def test_train_old_strategy_spelling_is_refused_in_one_line_before_anything(tmp_path, capsys):
    code = main(["train", "--out", str(tmp_path / "run"), "--strategy", "cooperative"])
    captured = capsys.readouterr()
    assert code == 2
    assert captured.out == ""  # no banner
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and "--dist-strategy" in lines[0] and "ruas-nni search --strategy" in lines[0]
    assert not (tmp_path / "run").exists()


def test_train_unknown_dist_strategy_is_one_line(tmp_path, capsys):
    code = main(["train", "--out", str(tmp_path / "run"), "--dist-strategy", "cooperative"])
    captured = capsys.readouterr()
    assert code == 2 and captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ruas-nni train: error: --dist-strategy cooperative")


def test_strategy_flags_mean_the_search_strategy_only():
    """`--strategy` exists only where it names an architecture-search strategy (search, nas);
    train's Lightning strategy is `--dist-strategy` and its help says the old spelling is refused."""
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices  # noqa: SLF001 - argparse has no public accessor
    train_help = commands["train"].format_help()
    assert "--dist-strategy" in train_help and "refused" in train_help
    for name in ("search", "nas"):
        assert "--strategy" in commands[name].format_help()


# ---------------------------------------------------------------------------- threads

def test_threads_default_is_one_per_process():
    before = torch.get_num_threads()
    try:
        assert DEFAULT_THREADS == 1
        assert set_torch_threads(None) == 1 and torch.get_num_threads() == 1
        assert set_torch_threads(2) == 2 and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_threads_below_one_is_a_usage_error():
    from ruas_nni.base.errors import UsageError

    with pytest.raises(UsageError, match="`threads`") as raised:
        set_torch_threads(0)
    assert raised.value.keys == ("threads",)


def test_demo_threads_below_one_is_one_line_naming_the_flag(tmp_path, capsys):
    assert main(["demo", "--quick", "--threads", "0", "--out", str(tmp_path / "demo")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--threads" in err[0]
    assert not (tmp_path / "demo").exists()


def test_search_config_and_compare_trials_default_to_one_thread(tmp_path):
    from ruas_nni.experiments.compare import CompareConfig, trial_command
    from ruas_nni.search.config import SearchConfig

    assert SearchConfig().threads == 1
    parser = build_parser()
    assert parser.parse_args(["search"]).threads is None  # not given: the config's default (1)
    command = trial_command(CompareConfig(data=[str(tmp_path)], eval_data=str(tmp_path), concurrency=1))
    assert "--threads 1" in command


# ---------------------------------------------------------------------------- endings

def test_enhance_ends_with_what_it_wrote(tmp_path, capsys):
    source = _dark_image(tmp_path / "in" / "a.png")
    out = tmp_path / "out"
    assert main(["enhance", str(source), "-o", str(out), "--device", "cpu", "--workers", "1"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith(f"wrote 1 enhanced PNG(s) into {out}")


def test_benchmark_json_says_where_it_wrote(tmp_path, capsys):
    target = tmp_path / "bench.json"
    assert main(["benchmark", "--no-latency", "--size", "32x24", "--json", str(target)]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == f"wrote {target}"
    assert json.loads(target.read_text())


def test_evaluate_quiet_keeps_the_table_and_ends_with_what_it_wrote(demo_data, tmp_path, capsys):
    target = tmp_path / "scores.json"
    assert main(["evaluate", "--data", str(demo_data.eval), "--json", str(target), "--quiet"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[0].startswith("image") and any(line.startswith("mean") for line in out)
    assert out[-1] == f"wrote scores to {target}"


# ---------------------------------------------------------------------------- redirected output

def test_redirected_output_has_no_bars_carriage_returns_or_colours(demo_data, tmp_path):
    """A short command without --quiet, its output going to a pipe: no tqdm bar, no \\r, no ANSI."""
    pairs = small_pairs(demo_data.eval, tmp_path / "pairs")  # the demo's 3 pairs, 48 x 48: quick to score
    result = subprocess.run([sys.executable, "-m", "ruas_nni", "evaluate", "--data", str(pairs),
                             "--side-by-side", str(tmp_path / "sbs")],
                            capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert result.returncode == 0, result.stderr
    both = result.stdout + result.stderr
    assert "\r" not in both and "\x1b[" not in both and "it/s" not in both
    assert result.stdout.strip().splitlines()[-1].startswith("wrote 3 side-by-side pictures")


def test_nni_log_lines_carry_no_colour_codes_in_a_pipe():
    code = ("import logging\n"
            "from ruas_nni.base.quiet import quiet_dependencies\n"
            "logging.basicConfig(level=logging.WARNING)\n"
            "quiet_dependencies()\n"
            "import nni\n"
            "import nni.runtime.log as log\n"
            "log.start_stdout_logging()\n"
            "logging.getLogger('nni.probe').warning('probe line')\n"
            "logging.getLogger('nni.nas.experiment.experiment').info("
            "'Search process is done. You can put an `time.sleep(FOREVER)` here')\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "probe line" in result.stdout
    assert "\x1b[" not in result.stdout + result.stderr
    assert "FOREVER" not in result.stdout + result.stderr


def test_nni_torch_version_warning_is_filtered():
    result = subprocess.run(
        [sys.executable, "-W", "default", "-c",
         "from ruas_nni.base.quiet import quiet_dependencies; quiet_dependencies()\n"
         "from search_spaces import RUASSpace\n"],
        capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "might not be supported" not in result.stderr and "not a nn.Module" not in result.stderr


def test_progress_only_on_a_terminal(tmp_path):
    with open(tmp_path / "log", "w") as stream:
        assert show_progress(False, stream) is False
        assert show_progress(True, stream) is False


# ---------------------------------------------------------------------------- messages

def test_side_by_side_panels_are_labelled():
    from ruas_nni.inference.evaluation import PANEL_LABELS, side_by_side

    panels = [torch.full((3, 40, 80), 0.5) for _ in range(3)]
    plain = side_by_side(panels, separator=2)
    labelled = side_by_side(panels, separator=2, labels=PANEL_LABELS)
    assert labelled.shape == plain.shape
    for left in (0, 82, 164):  # each panel's top-left corner carries its label, the rest is untouched
        assert not torch.equal(labelled[:, :14, left:left + 30], plain[:, :14, left:left + 30])
        assert torch.equal(labelled[:, 30:, left:left + 80], plain[:, 30:, left:left + 80])


def test_unreadable_paired_file_names_its_side(tmp_path, capsys):
    for side in ("low", "high"):
        _dark_image(tmp_path / "paired" / side / "a.png")
    (tmp_path / "paired" / "high" / "a.png").write_bytes(b"not a png")
    assert main(["evaluate", "--data", str(tmp_path / "paired")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "high/a.png" in err[0] and "ground truth" in err[0]


def test_search_split_warning_explains_the_split(tmp_path, caplog):
    from search_spaces.evaluator import UnpairedSearchData

    for index in range(8):
        _dark_image(tmp_path / "photos" / f"{index}.png", size=(64, 64) if index % 2 else (20, 20))
    with caplog.at_level(logging.WARNING):
        UnpairedSearchData([str(tmp_path / "photos")], crop=32).setup()
    messages = [r.getMessage() for r in caplog.records if "skipping" in r.getMessage()]
    assert messages and all("training split" in m or "validation split" in m for m in messages)
    assert all("the 8 images are split into 4" in m for m in messages)


def test_child_processes_inherit_the_pkg_resources_filter(monkeypatch):
    """nnictl (and NNI's dispatcher and trials, started from this process) warn that pkg_resources
    is deprecated; quiet_dependencies passes the filter on through PYTHONWARNINGS."""
    import os

    import ruas_nni.base.quiet as quiet

    monkeypatch.delenv("PYTHONWARNINGS", raising=False)
    monkeypatch.setattr(quiet, "_installed", False)
    quiet.quiet_dependencies()
    nnictl = Path(sys.executable).with_name("nnictl")
    if not nnictl.exists():
        pytest.skip("nnictl is not installed beside this Python")
    result = subprocess.run([str(nnictl), "--version"], capture_output=True, text=True, env=dict(os.environ),
                            timeout=300)
    assert result.returncode == 0 and "pkg_resources" not in result.stderr
