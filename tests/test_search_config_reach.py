"""Every key of the search configuration reaches what it configures.

One parametrised test over the fields of :class:`~ruas_nni.search.config.SearchConfig` (a new key is
a new case, and fails until it is given a non-default value below or a reason in ``NOT_OBSERVED``):
``run_search`` is run with that one key away from its default and stopped when the strategy is
initialised (nothing trains, about half a second), and the objects it built are read:

* the strategy: its class, the one-shot Lightning module it configures (the settings it keeps, its
  choice groups, the penalty, the architecture optimiser it makes);
* the trainer: epochs, batches, output folder, progress bar, the checkpoint callback;
* the evaluator: the loss module's settings, the weight optimiser and schedule it makes, the data
  module; and, for the network keys, the model space the search starts from (and the process's
  torch threads).

A key passes when each place it should reach holds the non-default value and held something else
with the defaults: a value read from the configuration and replaced by its default on its way to the
strategy, the trainer or the evaluator fails its case.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import shutil
from pathlib import Path
from typing import Any, Iterator

import pytest
import torch

from ruas_nni.base.atomic import atomic_write
from ruas_nni.inference.latency import LatencyTable, latency_table_path, machine_description
from ruas_nni.model.export import NetworkOptions
from ruas_nni.model.network import EDGE_NAMES
from ruas_nni.model.ops import OPERATION_NAMES
from ruas_nni.search import runner
from ruas_nni.search.callbacks import PeriodicCheckpoint
from ruas_nni.search.config import SearchConfig
from search_spaces.evaluator import ReferenceFreeLosses, UnpairedSearchData
from strategies.cooperative import PenaltySum

pytestmark = pytest.mark.usefixtures("one_thread")

# key -> (a valid non-default value, the observed names that must hold it). A value may be a function
# of the test's scratch folder (for paths).
CASES: dict[str, tuple[Any, tuple[str, ...]]] = {
    "data": (lambda where: [str(where / "other_data")], ("data.folders",)),
    "crop": (64, ("data.crop",)),
    "val_fraction": (0.3, ("data.val_fraction",)),
    "batch_size": (2, ("data.batch_size",)),
    "flip": (False, ("data.flip",)),
    "strategy": ("separate", ("oneshot.schedule",)),
    "epochs": (7, ("trainer.max_epochs", "scheduler.T_max")),
    "steps": (5, ("trainer.limit_train_batches",)),
    "seed": (3, ("evaluator.seed", "data.seed")),
    "warmup_epochs": (1, ("oneshot.warmup_epochs",)),
    "param_budget": (4000, ("penalty.baseline",)),
    "latency_budget": (30.0, ("penalty.ms.baseline",)),
    "latency_weight": (0.5, ("penalty.ms.scale",)),
    "budget_weight": (0.5, ("penalty.scale",)),
    "beta": (0.5, ("oneshot.beta",)),
    "unrolled": (False, ("oneshot.unrolled",)),
    "nrm_period": (3, ("groups.nrm.period",)),
    "iem_inner_steps": (2, ("groups.iem.inner_steps",)),
    "nrm_inner_steps": (2, ("groups.nrm.inner_steps",)),
    "finite_difference_r": (0.05, ("oneshot.finite_difference_r",)),
    "weight_lr": (0.01, ("evaluator.learning_rate", "weights.lr")),
    "weight_lr_min": (0.002, ("evaluator.learning_rate_min", "scheduler.eta_min")),
    "weight_momentum": (0.5, ("evaluator.momentum", "weights.momentum")),
    "weight_decay": (1e-3, ("evaluator.weight_decay", "weights.weight_decay")),
    "grad_clip": (2.0, ("oneshot.gradient_clip_val",)),
    "arch_lr": (0.02, ("oneshot.arc_learning_rate", "arch.lr")),
    "arch_betas": ([0.6, 0.9], ("oneshot.arc_betas", "arch.betas")),
    "arch_weight_decay": (0.01, ("oneshot.arc_weight_decay", "arch.weight_decay")),
    "gumbel_temperature": ([2.0, 0.5], ("oneshot.temperature",)),
    "smooth_sigma": (0.5, ("evaluator.smooth_sigma",)),
    "smooth_guide": ("ycbcr", ("evaluator.smooth_guide",)),
    "objective": ("reference", ("evaluator.objective",)),
    "exposure": (0.3, ("space.exposure",)),
    "exposure_gamma": (0.7, ("space.exposure_gamma",)),
    "tone": ("clip", ("space.tone",)),
    "exposure_level": (0.4, ("evaluator.exposure_level",)),
    "exposure_weight": (0.5, ("evaluator.exposure_weight",)),
    "exposure_patch": (8, ("evaluator.exposure_patch",)),
    "exposure_mode": ("output", ("evaluator.exposure_mode",)),
    "color_weight": (0.5, ("evaluator.color_weight",)),
    "bound_weight": (2.0, ("evaluator.bound_weight",)),
    "denoiser": ("zsn2n", ("evaluator.denoiser",)),
    "denoise_weight": (0.5, ("evaluator.denoise_weight",)),
    "denoise_consistency": (1.0, ("evaluator.denoise_consistency",)),
    "denoise_tv_weight": (0.2, ("evaluator.denoise_tv_weight",)),
    "iem_stages": (2, ("space.iem_stages",)),
    "nrm_cells": (2, ("space.nrm_cells",)),
    "nrm_channels": (4, ("space.nrm_channels",)),
    "gamma": (0.3, ("space.gamma",)),
    "warm_start": ("plain", ("space.warm_start",)),
    "checkpoint_every": (3, ("trainer.checkpoint_every",)),
    "max_nonfinite_steps": (2, ("oneshot.max_nonfinite_steps",)),
    "threads": (2, ("process.threads",)),
    "progress": (False, ("trainer.progress_bar",)),
    "out": (lambda where: str(where / "other_out"), ("trainer.default_root_dir",)),
}

# Settings a key needs beside it to matter (the baseline of that case has them too).
CONTEXT: dict[str, dict[str, Any]] = {
    "gumbel_temperature": {"strategy": "gumbel-darts"},  # only NNI's GumbelDARTS anneals a temperature
    "latency_weight": {"latency_budget": 25.0},  # the weight of a latency budget
}

NOT_OBSERVED: dict[str, str] = {
    "device": ("'auto' and 'cpu' both give the CPU on a machine without a GPU, and 'cuda' is refused there: "
               "the trainer is the same either way, so a dropped value cannot be told from here"),
}

KEYS = [f.name for f in dataclasses.fields(SearchConfig)]
assert set(NOT_OBSERVED) <= set(KEYS), f"NOT_OBSERVED names keys SearchConfig lacks: {set(NOT_OBSERVED) - set(KEYS)}"

_ONESHOT_SETTINGS = ("schedule", "beta", "unrolled", "finite_difference_r", "arc_learning_rate", "arc_betas",
                     "arc_weight_decay", "gradient_clip_val", "warmup_epochs", "max_nonfinite_steps")


class _Initialised(Exception):
    """Raised in place of the strategy's initialisation's return: the search stops there."""


def _plain(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return tuple(_plain(v) for v in value)
    return value


def _observe(config: SearchConfig) -> dict[str, Any]:
    """Run ``run_search(config)`` up to the strategy's initialisation and read what it built."""
    built: dict[str, Any] = {}
    prepare = runner.prepare_search

    def recording_prepare(config_):
        space, strategy = prepare(config_)
        initialize = strategy.initialize

        def initialise_and_stop(model_space, engine):
            built["mutated"] = initialize(model_space, engine)
            built["threads"] = torch.get_num_threads()
            raise _Initialised

        strategy.initialize = initialise_and_stop
        built["space"], built["strategy"] = space, strategy
        return space, strategy

    threads = torch.get_num_threads()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(runner, "prepare_search", recording_prepare)
        patch.setattr(runner, "show_progress", lambda **_: True)  # not a terminal here: the flag alone decides
        try:
            with pytest.raises(_Initialised):
                runner.run_search(config)
        finally:
            torch.set_num_threads(threads)

    evaluator = built["mutated"].evaluator
    oneshot, trainer = evaluator.module, evaluator.trainer
    losses, data, space = oneshot.training_module, evaluator.datamodule, built["space"]
    seen: dict[str, Any] = {"strategy": type(built["strategy"]).__name__, "oneshot": type(oneshot).__name__,
                            "process.threads": built["threads"]}
    # the strategy: the one-shot module it configured, its groups, penalty and architecture optimiser
    for name in _ONESHOT_SETTINGS:
        seen[f"oneshot.{name}"] = getattr(oneshot, name, None)
    scheduler = getattr(oneshot, "temperature_scheduler", None)
    seen["oneshot.temperature"] = (scheduler.init, scheduler.min) if scheduler is not None else None
    for group in getattr(oneshot, "group_specs", ()):
        seen[f"groups.{group.name}.period"], seen[f"groups.{group.name}.inner_steps"] = group.period, group.inner_steps
    seen["penalty.baseline"] = getattr(oneshot.penalty, "baseline", None)
    seen["penalty.scale"] = getattr(oneshot.penalty, "scale", None)
    latency = oneshot.penalty.parts["ms"] if isinstance(oneshot.penalty, PenaltySum) else None
    seen["penalty.ms.baseline"] = getattr(latency, "baseline", None)
    seen["penalty.ms.scale"] = getattr(latency, "scale", None)
    oneshot.set_model(built["mutated"].model_space)
    arch = oneshot.configure_architecture_optimizers().param_groups[0]
    seen.update({"arch.lr": arch["lr"], "arch.betas": arch["betas"], "arch.weight_decay": arch["weight_decay"]})
    # the trainer
    checkpoints = [c for c in trainer.callbacks if isinstance(c, PeriodicCheckpoint)]
    seen.update({"trainer.max_epochs": trainer.max_epochs, "trainer.limit_train_batches": trainer.limit_train_batches,
                 "trainer.default_root_dir": trainer.default_root_dir,
                 "trainer.progress_bar": trainer.progress_bar_callback is not None,
                 "trainer.checkpoint_every": checkpoints[0].every if len(checkpoints) == 1 else None})
    # the evaluator: the loss module's settings and the weight optimiser it makes; the data
    for name in inspect.signature(ReferenceFreeLosses).parameters:
        seen[f"evaluator.{name}"] = getattr(losses, name)
    losses.trainer = trainer
    optimizers, schedulers = losses.configure_optimizers()
    weights, schedule = optimizers[0].param_groups[0], schedulers[0]["scheduler"]
    seen.update({"weights.lr": weights["lr"], "weights.momentum": weights["momentum"],
                 "weights.weight_decay": weights["weight_decay"], "scheduler.T_max": schedule.T_max,
                 "scheduler.eta_min": schedule.eta_min})
    assert isinstance(data, UnpairedSearchData)
    for name in inspect.signature(UnpairedSearchData).parameters:
        seen[f"data.{name}"] = getattr(data, name)
    # the model space the search starts from
    seen.update({"space.exposure": space.exposure, "space.exposure_gamma": space.exposure_gamma,
                 "space.tone": "shoulder" if space.tone is not None else "clip",
                 "space.iem_stages": len(space.iem.stages), "space.nrm_cells": len(space.nrm.cells),
                 "space.nrm_channels": space.nrm.stem.out_channels, "space.gamma": space.iem.gamma,
                 "space.warm_start": space.iem.warm_start})
    return {name: _plain(value) for name, value in seen.items()}


@pytest.fixture(scope="module")
def where(demo_data, tmp_path_factory) -> Iterator[Path]:
    folder = tmp_path_factory.mktemp("reach")
    # A latency table for the default network in a cache of the test's own, so that a latency budget
    # reads it instead of measuring this machine for minutes (its numbers only need to be costs).
    patch = pytest.MonkeyPatch()
    patch.setenv("RUAS_NNI_CACHE_DIR", str(folder / "cache"))
    options = NetworkOptions.from_dict(SearchConfig().network_options())
    edges = {m: {e: {op: 0.5 * i for i, op in enumerate(OPERATION_NAMES)} for e in EDGE_NAMES} for m in ("iem", "nrm")}
    table = LatencyTable((600, 400), 20.0, edges, {**options.to_dict(), "with_nrm": True}, machine_description())
    with atomic_write(latency_table_path(options)) as handle:
        handle.write(json.dumps(table.to_dict()).encode())
    shutil.copytree(demo_data.train, folder / "other_data")
    yield folder
    patch.undo()


@pytest.fixture(scope="module")
def baselines() -> dict[tuple, dict[str, Any]]:
    """What the defaults build, by context (observed once per module)."""
    return {}


@pytest.mark.parametrize("key", [k for k in KEYS if k not in NOT_OBSERVED])
def test_every_search_key_reaches_the_strategy_trainer_or_evaluator(key, demo_data, where, baselines):
    assert key in CASES, (f"SearchConfig.{key} is new: give it a non-default value and the places it must reach "
                          "in CASES, or say in NOT_OBSERVED why it reaches none that can be read here")
    value, destinations = CASES[key]
    value = value(where) if callable(value) else value
    base = dataclasses.replace(SearchConfig(data=[str(demo_data.train)], out=str(where / "out")),
                               **CONTEXT.get(key, {}))
    assert _plain(getattr(base, key)) != _plain(value), f"{key}: {value!r} is its default"
    context = tuple(sorted(CONTEXT.get(key, {}).items()))
    if context not in baselines:
        baselines[context] = _observe(base)
    before, after = baselines[context], _observe(dataclasses.replace(base, **{key: value}))
    for name in destinations:
        assert after[name] == _plain(value), f"{key}={value!r} did not reach {name}: {after[name]!r}"
        assert before[name] != _plain(value), f"{name} is {value!r} with the default {key} too"
