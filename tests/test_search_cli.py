"""``ruas-nni search`` end to end on the demo data: every strategy writes a valid arch.json that
moved the architecture weights, same seed gives the same result, a killed search resumes to the
uninterrupted result, TensorBoard gets losses and heatmaps, bad input fails up front in one line."""

from __future__ import annotations

import io
import json
import signal
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from ruas_nni import OPERATION_NAMES, Genotype, export
from ruas_nni.cli import main

ROOT = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("one_thread")


def _config(tmp_path: Path, **settings) -> str:
    path = tmp_path / f"search-{len(list(tmp_path.glob('search-*.yaml')))}.yaml"
    path.write_text(yaml.safe_dump({"threads": 1, **settings}))
    return str(path)


def _search(data: Path, out: Path, *extra: str) -> int:
    return main(["search", "--data", str(data), "--out", str(out), "--quiet", *extra])


def _initial_probs(strategy_name: str) -> dict[str, np.ndarray]:
    """The softmax of the alphas a search with seed 0 starts from."""
    from ruas_nni.search.config import SearchConfig
    from ruas_nni.search.probabilities import architecture_probabilities
    from ruas_nni.search.runner import prepare_search

    space, strategy = prepare_search(SearchConfig(strategy=strategy_name, seed=0))
    strategy.mutate_model(space)
    return {k: np.asarray(v) for k, v in architecture_probabilities(space).items()}


def _check_arch(arch: dict, strategy: str) -> None:
    genotype = Genotype.from_any(arch)
    assert genotype.nrm is not None and arch["strategy"] == strategy
    assert arch["operations"] == list(OPERATION_NAMES)
    for module in ("iem", "nrm"):
        probs = np.asarray(arch["probs"][module])
        assert probs.shape == (7, 7)
        np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-9)
        # the argmax (NNI's export) is the winner when it fits the budget; otherwise arch.json keeps it
        assert [OPERATION_NAMES[i] for i in probs.argmax(axis=1)] == arch.get("argmax", arch)[module]
    assert arch["params"] <= 5000
    if "argmax" in arch:
        assert arch["argmax"]["params"] > 5000
    net = export(arch, arch["network"])
    assert net(torch.rand(1, 3, 8, 8)).shape == (1, 3, 8, 8)


@pytest.mark.parametrize("strategy", ["cooperative", "separate", "joint", "darts", "gumbel-darts"])
def test_every_strategy_moves_the_alphas_and_writes_arch_json(strategy, demo_data, tmp_path):
    out = tmp_path / "out"
    assert _search(demo_data.train, out, "--strategy", strategy, "--epochs", "1", "--steps", "2", "--crop", "16",
                   "--config", _config(tmp_path)) == 0
    arch = json.loads((out / "arch.json").read_text())
    _check_arch(arch, strategy)
    assert arch["seed"] == 0 and arch["epochs"] == 1 and arch["steps"] == 2 and arch["crop"] == 16
    initial = _initial_probs(strategy)
    for module in ("iem", "nrm"):
        moved = np.abs(np.asarray(arch["probs"][module]) - initial[module]).max()
        assert moved > 1e-6, f"{strategy}: the {module} architecture weights did not move"
    assert (out / "checkpoints" / "last.ckpt").exists()


def test_same_seed_same_architecture_and_tensorboard(demo_data, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    runs = []
    for name in ("a", "b"):
        out = tmp_path / name
        assert _search(demo_data.train, out, "--epochs", "2", "--steps", "2", "--crop", "16", "--seed", "7",
                       "--config", _config(tmp_path, nrm_period=2)) == 0
        runs.append(json.loads((out / "arch.json").read_text()))
    a, b = runs
    assert a["iem"] == b["iem"] and a["nrm"] == b["nrm"] and a["probs"] == b["probs"] and a["seed"] == 7

    events = EventAccumulator(str(tmp_path / "a" / "tensorboard"), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    tags = events.Tags()
    assert {"alpha/iem", "alpha/nrm"} <= set(tags["images"])
    assert [e.step for e in events.Images("alpha/iem")] == [0, 1, 2]  # start and every epoch's end
    image = events.Images("alpha/iem")[-1]  # a matplotlib figure (add_figure) of the 7 x 7 heatmap
    with Image.open(io.BytesIO(image.encoded_image_string)) as picture:
        assert picture.format == "PNG" and picture.size == (image.width, image.height)
        assert image.width >= 400 and image.height >= 400
        assert len(picture.convert("RGB").getcolors(1 << 16) or []) > 50  # drawn: cells, labels, colour bar
    assert {"iem/train_loss", "iem/val_loss", "nrm/train_loss", "nrm/val_loss", "search_loss"} <= set(tags["scalars"])
    assert "prob/iem/e1/skip_connect" in tags["scalars"]


def test_killed_search_resumes_to_the_uninterrupted_result(killed_search):
    """The search killed after its first checkpoint and resumed (the ``killed_search`` fixture in
    conftest.py, shared with test_search_resume_weights.py) ends with the uninterrupted search's
    architecture."""
    expected = json.loads((killed_search["straight"] / "arch.json").read_text())
    assert killed_search["returncode"] == -signal.SIGKILL
    state = torch.load(killed_search["interrupted"], map_location="cpu", weights_only=False)
    assert state["global_step"] > 0

    assert killed_search["resume_exit"] == 0
    resumed = json.loads((killed_search["killed"] / "arch.json").read_text())
    assert resumed["resumed"] is True
    assert resumed["iem"] == expected["iem"] and resumed["nrm"] == expected["nrm"]
    for module in ("iem", "nrm"):
        np.testing.assert_allclose(resumed["probs"][module], expected["probs"][module], rtol=0, atol=1e-7)


def test_resume_needs_the_same_settings(demo_data, tmp_path):
    out = tmp_path / "out"
    config = _config(tmp_path)
    assert _search(demo_data.train, out, "--epochs", "1", "--steps", "1", "--crop", "16", "--config", config) == 0
    # a finished search is not overwritten by accident
    assert _search(demo_data.train, out, "--epochs", "1", "--steps", "1", "--crop", "16", "--config", config) == 2
    assert _search(demo_data.train, out, "--epochs", "1", "--steps", "1", "--crop", "24", "--config", config,
                   "--resume") == 2


def _fails(capsys, *args: str) -> str:
    code = main(["search", "--quiet", *args])
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("ruas-nni search: error:") and "Traceback" not in err
    return lines[0]


def test_bad_flags_config_and_data_fail_up_front(demo_data, tmp_path, capsys):
    data = str(demo_data.train)
    out = str(tmp_path / "out")
    assert "--strategy" in _fails(capsys, "--data", data, "--out", out, "--strategy", "enas")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "no image files" in _fails(capsys, "--data", str(empty), "--out", out)
    assert "larger than every image" in _fails(capsys, "--data", data, "--out", out, "--crop", "100000")
    assert "--data" in _fails(capsys, "--out", out)
    assert "--epochs" in _fails(capsys, "--data", data, "--out", out, "--epochs", "0")
    bad = tmp_path / "bad.yaml"
    bad.write_text("nrm_periodd: 3\n")
    assert "nrm_periodd" in _fails(capsys, "--data", data, "--out", out, "--config", str(bad))
    assert "--device" in _fails(capsys, "--data", data, "--out", out, "--device", "tpu")
    assert not Path(out).exists() or not any(Path(out).iterdir())


def test_a_diverging_search_stops_with_one_line_and_keeps_its_checkpoint(demo_data, tmp_path, capsys):
    out = tmp_path / "out"
    config = _config(tmp_path, weight_lr=1e30, weight_lr_min=0.0, grad_clip=None, checkpoint_every=1)
    code = _search(demo_data.train, out, "--epochs", "3", "--steps", "3", "--crop", "16", "--config", config)
    err = capsys.readouterr().err
    assert code == 1
    errors = [line for line in err.splitlines() if line.startswith("ruas-nni search: error:")]
    assert len(errors) == 1 and "non-finite" in errors[0] and "last good checkpoint" in errors[0]
    assert "Traceback" not in err and not (out / "arch.json").exists()
    assert (out / "checkpoints" / "last.ckpt").exists()


def test_example_config_lists_every_setting_with_its_default():
    import dataclasses

    from ruas_nni.search.config import SearchConfig, load_search_config

    example = ROOT / "examples" / "search.yaml"
    written = yaml.safe_load(example.read_text())
    assert set(written) == {f.name for f in dataclasses.fields(SearchConfig)}
    config = load_search_config(example)
    assert config == SearchConfig(data=config.data)
    assert not any("lol_eval15" in d for d in config.data)


def test_step_benchmark_runs():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import search_step
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    result = search_step.measure(crop=16, rounds=1, batches=3, nrm_period=2)
    assert result["samples"] == {"darts": 2, "iem": 1, "iem_nrm": 1}
    assert result["darts_first_order_s"] > 0 and result["ratio_amortised"] > 0
