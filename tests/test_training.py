"""``ruas-nni train``: the reference-free training of an exported genotype (spec Sec. 2 and 4).

Runs are tiny (a few steps on 32-48 pixel crops of the built-in demo data) so the file stays fast.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import ruas_nni.training.module as training
from ruas_nni.base.errors import UsageError
from ruas_nni.cli import main
from ruas_nni.model.checkpoint import load_checkpoint
from ruas_nni.model.genotype import Genotype
from ruas_nni.training.config import REFERENCE_RECIPE, TrainConfig
from ruas_nni.training.losses import illumination_loss, smoothness
from ruas_nni.training.module import TrainingDiverged
from ruas_nni.training.run import build_network, prepare_training, train

ROOT = Path(__file__).resolve().parents[1]


def _config(data: Path, **overrides) -> TrainConfig:
    """The authors' recipe (the losses these tests pin), shortened; ``overrides`` on top."""
    values = {**REFERENCE_RECIPE, "data": [str(data)], "steps": 6, "crop": 32, "checkpoint_every": 3, "seed": 0}
    values.update(overrides)
    return TrainConfig(**values)


def _train(config: TrainConfig, out: Path, resume: bool = False):
    return train(prepare_training(config, out, resume=resume), device="cpu", progress=False)


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path).state_dict


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# -- the loss the trainer optimises ----------------------------------------------------------


def test_exposure_and_colour_terms() -> None:
    from ruas_nni.training.losses import color_constancy, exposure_control, illumination_exposure

    grey = torch.full((1, 3, 32, 32), 0.4)
    y = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 0.1
    assert float(illumination_exposure(y, y / 0.5, 0.5, patch=64)) == pytest.approx(0.0, abs=1e-10)
    assert float(illumination_exposure(y, y / 0.25, 0.5, patch=8)) == pytest.approx(0.0625, rel=1e-4)
    t = torch.full_like(y, 0.2).requires_grad_()
    illumination_exposure(y, t, 0.5, patch=64).backward()
    assert torch.allclose(t.grad, t.grad.flatten()[0].expand_as(t.grad))  # the same pull on every pixel
    assert float(exposure_control(grey, 0.4)) == pytest.approx(0.0, abs=1e-12)
    assert float(exposure_control(grey, 0.6)) == pytest.approx(0.04, rel=1e-5)
    assert float(color_constancy(grey)) == pytest.approx(0.0, abs=1e-12)
    red = grey.clone()
    red[:, 0] = 0.7
    assert float(color_constancy(red)) == pytest.approx(2 * 0.3 ** 2, rel=1e-5)


def test_the_retinex_bound_penalises_only_the_illumination_below_the_image() -> None:
    """``mean relu(log y - log t)``: zero where ``t >= y``, the clipped stops where ``t < y``; the
    trainer adds ``bound_weight`` times it to the IEM loss of ``exposure_denoise``."""
    from ruas_nni.model.export import export
    from ruas_nni.model.genotype import PAPER_GENOTYPE
    from ruas_nni.training.losses import illumination_bound

    y = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 0.2 + 0.01
    assert float(illumination_bound(y, y)) == 0.0 and float(illumination_bound(y, 3 * y)) == 0.0
    assert float(illumination_bound(y, y / 2)) == pytest.approx(float(torch.log(torch.tensor(2.0))), rel=1e-5)
    t = torch.cat([y[:, :, :8] / 4, y[:, :, 8:] * 2], dim=2).requires_grad_()  # the top half clips by 2 stops
    bound = illumination_bound(y, t)
    assert float(bound) == pytest.approx(float(torch.log(torch.tensor(4.0))) / 2, rel=1e-5)
    bound.backward()
    assert (t.grad[:, :, :8] < 0).all() and (t.grad[:, :, 8:] == 0).all()  # it only raises t where it clips

    net = export(PAPER_GENOTYPE, {"iem_stages": 1, "nrm_cells": 1})
    base = {**REFERENCE_RECIPE, "objective": "exposure_denoise", "exposure_weight": 0.0}
    plain = training.RUASTrainingModule(net, TrainConfig(**base))._illumination_loss(y)
    bounded = training.RUASTrainingModule(net, TrainConfig(**{**base, "bound_weight": 3.0}))._illumination_loss(y)
    t_k = net.iem(y)[1][-1]
    assert float(bounded - plain) == pytest.approx(3.0 * float(illumination_bound(y, t_k)), rel=1e-4, abs=1e-7)


def test_self_supervised_denoising_losses() -> None:
    from ruas_nni.training.losses import denoise_loss, diagonal_downsample, neighbor_subsample

    x = torch.arange(16.0).view(1, 1, 4, 4)
    first, second = neighbor_subsample(x, torch.zeros(1, 2, 2, dtype=torch.long))  # pair (top-left, top-right)
    assert torch.equal(first, x[..., ::2, ::2]) and torch.equal(second, x[..., ::2, 1::2])
    d1, d2 = diagonal_downsample(x)
    assert torch.equal(d1, (x[..., ::2, ::2] + x[..., 1::2, 1::2]) / 2)
    assert torch.equal(d2, (x[..., ::2, 1::2] + x[..., 1::2, ::2]) / 2)
    flat = torch.full((2, 3, 16, 16), 0.3)
    noisy = flat + 0.1 * torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    for method in ("neighbor2neighbor", "zsn2n"):
        assert float(denoise_loss(lambda u: u, flat, method)) == pytest.approx(0.0, abs=1e-12)
        identity = float(denoise_loss(lambda u: u, noisy, method, consistency=0.0, generator=torch.Generator().manual_seed(1)))
        smooth = float(denoise_loss(lambda u: torch.full_like(u, 0.3), noisy, method, consistency=0.0,
                                    generator=torch.Generator().manual_seed(1)))
        assert smooth < identity  # the ideal denoiser beats the identity on pure noise


def test_exposure_denoise_objective_trains_and_is_reproducible(demo_data, tmp_path: Path) -> None:
    config = {"objective": "exposure_denoise", "nrm_period": 1, "exposure_level": 0.5, "exposure_weight": 10.0}
    _train(_config(demo_data.train, **config), tmp_path / "a")
    _train(_config(demo_data.train, **config), tmp_path / "b")
    _train(_config(demo_data.train, **config, denoiser="zsn2n"), tmp_path / "c")
    a, b, c = (_weights(tmp_path / name / "model.pt") for name in "abc")
    assert _same(a, b) and not _same(a, c)
    assert load_checkpoint(tmp_path / "a" / "model.pt").metadata["recipe"]["objective"] == "exposure_denoise"


def test_smoothness_is_the_spec_sum_over_24_offsets() -> None:
    """R = sum over the 24 offsets of mean(w) * mean(|t(p) - t(q)|), w = exp(c * sum_c (g(p)-g(q))^2)."""
    torch.manual_seed(0)
    guide, t = torch.rand(1, 3, 9, 11), torch.rand(1, 3, 9, 11)
    c = -0.5
    expected = torch.zeros((), dtype=torch.float64)
    height, width = 9, 11
    for dy in range(-2, 3):
        for dx in range(-2, 3):
            if (dy, dx) == (0, 0):
                continue
            p = (slice(None), slice(None), slice(max(0, -dy), height - max(0, dy)), slice(max(0, -dx), width - max(0, dx)))
            q = (slice(None), slice(None), slice(max(0, dy), height - max(0, -dy)), slice(max(0, dx), width - max(0, -dx)))
            weight = torch.exp(c * (guide[p] - guide[q]).pow(2).sum(dim=1)).double()
            expected += weight.mean() * (t[p] - t[q]).abs().double().mean()
    assert float(smoothness(guide, t, c)) == pytest.approx(float(expected), rel=1e-5)


# -- training behaviour -----------------------------------------------------------------------


def test_training_lowers_the_illumination_loss_and_writes_model_and_logs(demo_data, tmp_path: Path) -> None:
    config = _config(demo_data.train, steps=24, crop=48, checkpoint_every=8, log_every=2, sample_every=8)
    run = prepare_training(config, tmp_path / "run")
    crops = torch.stack([run.images[i] for i in range(len(run.images))])
    before = build_network(run)
    result = train(run, device="cpu", progress=False)

    def loss(network) -> float:
        with torch.no_grad():
            _, illuminations = network.iem(crops)
            return float(illumination_loss(crops, illuminations[-1], guide="ycbcr"))

    after = load_checkpoint(result.model_path).build()
    assert loss(after) < 0.8 * loss(before)
    metadata = load_checkpoint(result.model_path).metadata
    assert metadata["steps"] == 24 and metadata["complete"] is True and metadata["seed"] == 0
    assert metadata["recipe"]["iem_lr"] == 0.015 and metadata["data"] == [str(demo_data.train)]

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "run" / "tensorboard"), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    assert "loss/iem" in events.Tags()["scalars"] and "loss/nrm" in events.Tags()["scalars"]
    assert "samples/input|iem|final" in events.Tags()["images"]
    assert [e.step for e in events.Scalars("loss/iem")][:3] == [2, 4, 6]


def test_same_seed_same_weights_other_seed_other_weights(demo_data, tmp_path: Path) -> None:
    first = _train(_config(demo_data.train), tmp_path / "a")
    second = _train(_config(demo_data.train), tmp_path / "b")
    third = _train(_config(demo_data.train, seed=1), tmp_path / "c")
    assert _same(_weights(first.model_path), _weights(second.model_path))
    assert not _same(_weights(first.model_path), _weights(third.model_path))


def test_nrm_steps_every_period_and_fresh_forward(demo_data, tmp_path: Path) -> None:
    """With nrm_period 4 and 6 steps the NRM steps at steps 0 and 4 only; its initial head is zero."""
    config = _config(demo_data.train, nrm_period=4, iem_lr=0.0, momentum=0.0, weight_decay=0.0)
    run = prepare_training(config, tmp_path / "run")
    initial = build_network(run)
    assert torch.count_nonzero(initial.nrm.head.weight) == 0
    calls = []
    original = training.noise_loss

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    training.noise_loss = counting
    try:
        result = train(run, device="cpu", progress=False)
    finally:
        training.noise_loss = original
    assert len(calls) == 2
    trained = result.checkpoint.state_dict
    assert all(torch.equal(trained[k], v) for k, v in initial.state_dict().items() if k.startswith("iem."))  # lr 0
    assert not torch.equal(trained["nrm.head.weight"], initial.nrm.head.weight)


def test_init_nrm_from_the_authors_denoise_weights(reference_dir: Path, demo_data, tmp_path: Path) -> None:
    from ruas_nni.model.checkpoint import load_nrm_init

    run = prepare_training(_config(demo_data.train, init_nrm=str(reference_dir / "denoise.pt")), tmp_path / "run")
    network = build_network(run)
    expected = load_nrm_init(reference_dir / "denoise.pt")
    assert _same({k: v for k, v in network.nrm.state_dict().items()}, expected)


# -- robustness ------------------------------------------------------------------------------


def test_a_few_non_finite_losses_are_skipped(demo_data, tmp_path: Path, monkeypatch) -> None:
    original = training.illumination_loss
    calls = {"n": 0}

    def sometimes_nan(*args, **kwargs):
        calls["n"] += 1
        value = original(*args, **kwargs)
        return value * float("nan") if calls["n"] in (2, 3) else value

    monkeypatch.setattr(training, "illumination_loss", sometimes_nan)
    with pytest.warns(RuntimeWarning, match="non-finite"):
        result = _train(_config(demo_data.train), tmp_path / "run")
    assert result.skipped_steps == 2 and result.steps == 6
    assert all(torch.isfinite(v).all() for v in result.checkpoint.state_dict.values())


def test_repeated_non_finite_losses_stop_with_the_last_good_checkpoint(demo_data, tmp_path: Path, monkeypatch) -> None:
    original = training.illumination_loss
    calls = {"n": 0}

    def nan_after_four(*args, **kwargs):
        calls["n"] += 1
        value = original(*args, **kwargs)
        return value * float("inf") if calls["n"] > 4 else value

    monkeypatch.setattr(training, "illumination_loss", nan_after_four)
    out = tmp_path / "run"
    with pytest.warns(RuntimeWarning), pytest.raises(TrainingDiverged, match=r"5 non-finite steps in a row \(steps 5-9\)"):
        _train(_config(demo_data.train, steps=20, checkpoint_every=2), out)
    kept = load_checkpoint(out / "model.pt")
    assert kept.metadata["steps"] == 4 and kept.metadata["complete"] is False
    assert all(torch.isfinite(v).all() for v in kept.state_dict.values())


def _cli(args: list[str], capsys) -> tuple[int, str]:
    code = main(args)
    return code, capsys.readouterr().err.strip()


@pytest.mark.parametrize(
    ("extra", "config_text", "message"),
    [
        ([], "stepz: 3\n", "unknown key 'stepz'"),
        ([], "warm_start: cold\n", "'warm_start' must be one of rectified, plain, fixed"),
        ([], "objective: fancy\n", "'objective' must be one of reference, exposure_denoise"),
        ([], "exposure_level: 1.5\n", "'exposure_level' must be at most 1.0"),
        ([], "denoiser: bm3d\n", "'denoiser' must be one of neighbor2neighbor, zsn2n"),
        ([], "exposure_mode: auto\n", "'exposure_mode' must be one of illumination, output"),
        (["--crop", "4"], "", "--crop must be at least 8"),
        (["--crop", "4000"], "", "--crop 4000 is larger than every image"),
        (["--arch", "nowhere.json"], "", "--arch nowhere.json: no such file"),
        (["--device", "tpu"], "", "--device must be one of"),
    ],
)
def test_bad_configs_and_flags_fail_up_front(demo_data, tmp_path: Path, capsys, extra, config_text, message) -> None:
    config = tmp_path / "train.yaml"
    config.write_text(config_text)
    out = tmp_path / "out"
    code, err = _cli(["train", "--data", str(demo_data.train), "--out", str(out), "--config", str(config),
                      "--quiet", *extra], capsys)
    assert code == 2
    assert len(err.splitlines()) == 1 and message in err
    assert not (out / "model.pt").exists()


def test_empty_data_folder_fails_up_front(tmp_path: Path, capsys) -> None:
    (tmp_path / "empty").mkdir()
    code, err = _cli(["train", "--data", str(tmp_path / "empty"), "--out", str(tmp_path / "out")], capsys)
    assert code == 2 and "no image files found" in err and len(err.splitlines()) == 1


def test_arch_json_from_a_search_is_accepted(demo_data, tmp_path: Path) -> None:
    arch = {"iem": ["conv_3x3"] * 7, "nrm": ["skip_connect"] * 6 + ["conv_1x1"], "probs": {"iem/e1": [1.0]}}
    (tmp_path / "arch.json").write_text(json.dumps(arch))
    result = _train(_config(demo_data.train, arch=str(tmp_path / "arch.json"), steps=2), tmp_path / "run")
    assert list(result.checkpoint.genotype.iem) == arch["iem"]
    assert list(load_checkpoint(result.model_path).genotype.nrm) == arch["nrm"]


def test_arch_json_with_a_searched_shape_trains_in_that_shape(demo_data, tmp_path: Path) -> None:
    """`ruas-nni nas --space scalable` writes the shape into arch.json: training takes it, and a recipe
    that sets another value is refused in one line naming the key."""
    arch = {"iem": ["conv_3x3"] * 7, "nrm": ["conv_1x1"] * 7,
            "shape": {"iem_stages": 2, "nrm_cells": 1, "nrm_channels": 12}}
    (tmp_path / "arch.json").write_text(json.dumps(arch))
    result = _train(_config(demo_data.train, arch=str(tmp_path / "arch.json"), steps=2), tmp_path / "run")
    options = load_checkpoint(result.model_path).options
    assert (options.iem_stages, options.nrm_cells, options.nrm_channels) == (2, 1, 12)
    assert "nrm_channels: 12" in (tmp_path / "run" / "train_config.yaml").read_text()
    with pytest.raises(UsageError, match="`nrm_cells` 2: the architecture .* was searched with nrm_cells 1"):
        prepare_training(_config(demo_data.train, arch=str(tmp_path / "arch.json"), nrm_cells=2), tmp_path / "other")
    (tmp_path / "bad.json").write_text(json.dumps({**arch, "shape": {"nrm_width": 6}}))
    with pytest.raises(UsageError, match="'shape' must map some of iem_stages, nrm_cells, nrm_channels"):
        prepare_training(_config(demo_data.train, arch=str(tmp_path / "bad.json")), tmp_path / "other")


def test_existing_run_needs_resume_and_the_same_recipe(demo_data, tmp_path: Path) -> None:
    out = tmp_path / "run"
    _train(_config(demo_data.train, steps=3), out)
    with pytest.raises(UsageError, match="already holds a training run"):
        prepare_training(_config(demo_data.train, steps=3), out)
    with pytest.raises(UsageError, match="iem_lr=0.015, now iem_lr=0.02"):
        prepare_training(_config(demo_data.train, steps=3, iem_lr=0.02), out, resume=True)
    # more steps are allowed: the run goes on, and equals a run that asked for 6 steps from the start
    resumed = _train(_config(demo_data.train, steps=6), out, resume=True)
    straight = _train(_config(demo_data.train, steps=6), tmp_path / "straight")
    assert _same(resumed.checkpoint.state_dict, straight.checkpoint.state_dict)


def _train_command(data: Path, out: Path, config: Path) -> list[str]:
    return [sys.executable, "-m", "ruas_nni", "train", "--data", str(data), "--steps", "120", "--crop", "32",
            "--seed", "3", "--out", str(out), "--config", str(config), "--device", "cpu", "--quiet"]


def test_killed_run_resumes_to_the_same_weights(demo_data, tmp_path: Path) -> None:
    """A real SIGKILL of a training process mid-run, then --resume: same weights as one clean run."""
    config = tmp_path / "train.yaml"
    config.write_text("checkpoint_every: 4\n")
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    straight = tmp_path / "straight"
    subprocess.run(_train_command(demo_data.train, straight, config), check=True, env=env, cwd=ROOT,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=300)

    killed = tmp_path / "killed"
    process = subprocess.Popen(_train_command(demo_data.train, killed, config), env=env, cwd=ROOT,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    try:
        while not (killed / "model.pt").exists():
            assert process.poll() is None, "training ended before it could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.02)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert process.returncode == -signal.SIGKILL
    steps_at_kill = load_checkpoint(killed / "model.pt").metadata["steps"]
    assert steps_at_kill < 120, "the run was not interrupted mid-way"

    subprocess.run(_train_command(demo_data.train, killed, config) + ["--resume"], check=True, env=env, cwd=ROOT,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=300)
    assert load_checkpoint(killed / "model.pt").metadata["steps"] == 120
    assert _same(_weights(killed / "model.pt"), _weights(straight / "model.pt"))
    assert not list((killed / "checkpoints").glob(".*.tmp"))


def test_example_config_lists_every_key_with_the_defaults() -> None:
    import dataclasses

    import yaml

    from ruas_nni.training.config import load_train_config

    path = ROOT / "examples" / "train.yaml"
    assert set(yaml.safe_load(path.read_text())) == {f.name for f in dataclasses.fields(TrainConfig)}
    loaded, defaults = load_train_config(path, {}), TrainConfig()
    differing = [f.name for f in dataclasses.fields(TrainConfig) if getattr(loaded, f.name) != getattr(defaults, f.name)]
    assert differing == ["data"]


def test_paper_example_is_the_reference_recipe() -> None:
    """examples/paper_train.yaml and REFERENCE_RECIPE are the same recipe, and it is the authors'
    (spec Sec. 4): 800 steps of 320-pixel crops, L_n with fidelity weight 1e-7, NRM every 50th step."""
    from ruas_nni.training.config import load_train_config

    loaded = load_train_config(ROOT / "examples" / "paper_train.yaml", {})
    assert loaded == TrainConfig(**REFERENCE_RECIPE)
    assert (loaded.steps, loaded.crop, loaded.nrm_period, loaded.objective, loaded.exposure) == (800, 320, 50, "reference", None)
    assert (loaded.noise_fidelity_weight, loaded.tv_weight, loaded.iem_lr, loaded.nrm_lr) == (1e-7, 1.0, 0.015, 0.001)


def test_default_recipe_trains_with_a_lowpass_nrm_start(demo_data, tmp_path: Path) -> None:
    """The defaults (the recommended recipe): the NRM starts as the binomial low-pass, so the first
    model differs from an identity start, and a tiny run is reproducible."""
    from ruas_nni.model.export import export
    from ruas_nni.model.genotype import PAPER_GENOTYPE
    from ruas_nni.model.nrm_start import lowpass_start

    config = TrainConfig(data=[str(demo_data.train)], steps=4, crop=32, checkpoint_every=4)
    assert config.nrm_start == "lowpass" and config.objective == "exposure_denoise"
    network = build_network(prepare_training(config, tmp_path / "probe"))
    expected = export(PAPER_GENOTYPE, config.network_options())
    lowpass_start(expected.nrm)
    for key, value in expected.nrm.state_dict().items():
        assert torch.equal(network.nrm.state_dict()[key], value), key
    first = _train(config, tmp_path / "a")
    second = _train(config, tmp_path / "b")
    a, b = load_checkpoint(first.model_path).state_dict, load_checkpoint(second.model_path).state_dict
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["nrm.head.weight"], expected.nrm.head.weight), "the NRM did not train"


def test_fidelity_denoiser_is_tikhonov(demo_data, tmp_path: Path) -> None:
    """``denoiser: fidelity`` trains the NRM on MSE(x, u) + denoise_tv_weight TV(x)."""
    config = _config(demo_data.train, objective="exposure_denoise", denoiser="fidelity", denoise_tv_weight=0.25,
                     nrm_period=1, steps=3)
    result = _train(config, tmp_path / "run")
    assert load_checkpoint(result.model_path).metadata["recipe"]["denoiser"] == "fidelity"


def test_default_model_recipe_is_the_default_recipe() -> None:
    """examples/default_model.yaml (the shipped model's recipe) only spells out train's defaults, but for
    ``tone``: the shipped model's NRM is trained under the older policy (``clip``) and the model is
    packaged with the shoulder policy (scripts/reproduce_default_model.sh, docs/tone.md); and for its
    architecture: the default search's winner with one IEM stage and one NRM cell (docs/search.md)."""
    import yaml

    keys = yaml.safe_load((ROOT / "examples" / "default_model.yaml").read_text())
    defaults = TrainConfig()
    differing = {k: v for k, v in keys.items() if k != "data" and getattr(defaults, k) != v}
    winner = "docs/search_winners/default_cooperative_s0.json"
    assert differing == {"tone": "clip", "arch": winner, "iem_stages": 1, "nrm_cells": 1}
    assert (ROOT / winner).is_file()
    shipped = load_checkpoint(ROOT / "ruas_nni" / "pretrained" / "default.pt")
    assert (shipped.options.iem_stages, shipped.options.nrm_cells) == (1, 1)
    assert shipped.genotype == Genotype.from_any(json.loads((ROOT / winner).read_text()))
    assert "--tone shoulder" in (ROOT / "scripts" / "reproduce_default_model.sh").read_text()
