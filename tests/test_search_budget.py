"""The search knows about size and its architecture actually moves: the parameter-budget penalty
(NNI's ExpectationProfilerPenalty on an expression of the space's parameter count), the
architecture learning rate, the weight warm-up, and their SearchConfig keys."""

from __future__ import annotations

import pytest
import torch
from nni.nas.evaluator.pytorch import DataLoader, Lightning, Trainer
from nni.nas.execution import SequentialExecutionEngine
from nni.nas.space import RawFormatModelSpace
from torch.utils.data import TensorDataset

from ruas_nni.model.export import NetworkOptions, export
from ruas_nni.model.genotype import PAPER_GENOTYPE, Genotype
from ruas_nni.search.config import SearchConfig
from ruas_nni.search.strategies import budget_penalty, build_strategy
from search_spaces import RUASSpace
from search_spaces.evaluator import ReferenceFreeLosses
from strategies import CooperativeBilevel
from strategies.cooperative import ParameterCountProfiler, differentiable_probs, parameter_budget_penalty

pytestmark = pytest.mark.usefixtures("one_thread")

SMALL = {"iem_stages": 1, "nrm_cells": 1, "nrm_channels": 3}


def _sample(genotype: Genotype) -> dict[str, str]:
    return {f"{m}/e{i + 1}": op for m in ("iem", "nrm") for i, op in enumerate(getattr(genotype, m))}


def test_the_parameter_expression_counts_like_the_exported_network():
    profiler = ParameterCountProfiler(RUASSpace())
    for genotype in (PAPER_GENOTYPE, Genotype(("skip_connect",) * 7, ("conv_3x3",) * 7)):
        network = export(genotype, NetworkOptions())
        assert profiler.profile(_sample(genotype)) == sum(p.numel() for p in network.parameters())


def test_the_penalty_is_the_expectation_and_pushes_toward_small_operations():
    space = RUASSpace()
    penalty = parameter_budget_penalty(space, budget=1000, scale=1.0)
    alphas = {label: torch.zeros(7, requires_grad=True) for label in _sample(PAPER_GENOTYPE)}
    names = list(ParameterCountProfiler(space).per_label["iem/e1"])
    probs = {label: dict(zip(names, torch.softmax(a, -1))) for label, a in alphas.items()}
    loss, details = penalty(torch.tensor(0.0), probs)
    uniform = sum(ParameterCountProfiler(space).profile({k: op for k in alphas}) for op in names) / len(names)
    assert float(details["penalty"].detach()) == pytest.approx(uniform, rel=1e-5)  # linear: E = mean over the 7 ops
    assert float(loss) == pytest.approx(uniform / 1000 - 1, rel=1e-5)
    loss.backward()
    grad = alphas["nrm/e1"].grad
    assert grad[names.index("skip_connect")] < 0 < grad[names.index("conv_3x3")]  # descent favours fewer parameters
    # nothing below the budget
    below = parameter_budget_penalty(space, budget=10**9)(torch.tensor(0.5), probs)[0]
    assert float(below) == 0.5


def _search(strategy, tmp_path, *, batches=6, epochs=1, seed=0):
    torch.manual_seed(seed)
    images = torch.rand(8, 3, 16, 16) * 0.3
    train = DataLoader(TensorDataset(images[:5]), batch_size=1)
    val = DataLoader(TensorDataset(images[5:]), batch_size=1)
    trainer = Trainer(max_epochs=epochs, limit_train_batches=batches, enable_progress_bar=False, logger=False,
                      enable_checkpointing=False, enable_model_summary=False, default_root_dir=str(tmp_path))
    space = RUASSpace(**SMALL)
    strategy(RawFormatModelSpace(space, Lightning(ReferenceFreeLosses(), trainer, train_dataloaders=train,
                                                  val_dataloaders=val)), SequentialExecutionEngine())
    return strategy


def _expected_params(strategy) -> float:
    probs = differentiable_probs(strategy.oneshot_module.searched_module())
    return float(ParameterCountProfiler(RUASSpace(**SMALL)).expected(probs))


def test_the_budget_pushes_expected_parameters_down_and_changes_the_genotype(tmp_path):
    free = _search(CooperativeBilevel(arc_learning_rate=0.1), tmp_path / "free")
    penalty = parameter_budget_penalty(RUASSpace(**SMALL), budget=100, scale=10.0)
    tight = _search(CooperativeBilevel(arc_learning_rate=0.1, penalty=penalty), tmp_path / "tight")
    assert _expected_params(tight) < 0.85 * _expected_params(free)
    profiler = ParameterCountProfiler(RUASSpace(**SMALL))
    free_model, tight_model = next(free.list_models()), next(tight.list_models())
    assert free_model.sample != tight_model.sample
    assert profiler.profile(tight_model.sample) < profiler.profile(free_model.sample)


def test_arch_lr_moves_the_alphas(tmp_path):
    def spread(strategy) -> float:
        probs = differentiable_probs(strategy.oneshot_module.searched_module())
        return max(float(max(p.values()) - min(p.values())) for p in probs.values())

    slow = _search(CooperativeBilevel(arc_learning_rate=3e-4), tmp_path / "slow")
    fast = _search(CooperativeBilevel(arc_learning_rate=0.05), tmp_path / "fast")
    assert spread(slow) < 0.01  # the reference's rate: every probability stays near 1/7
    assert spread(fast) > 10 * spread(slow)


def test_warmup_epochs_hold_the_alphas(tmp_path):
    held = _search(CooperativeBilevel(arc_learning_rate=0.05, warmup_epochs=1), tmp_path, batches=2, epochs=1)
    alphas = held.oneshot_module.arch_parameters()
    torch.manual_seed(0)  # the strategy draws alpha = 1e-3 * randn: after a warm-up-only epoch they are untouched
    assert all(float(a.abs().max()) < 0.01 for a in alphas)


def test_search_config_keys_and_their_validation():
    config = SearchConfig()
    assert config.param_budget == 5000 and config.warmup_epochs is None and config.warmup == config.epochs // 5
    assert config.budget_weight == 0.01
    assert budget_penalty(config) is not None
    assert budget_penalty(SearchConfig(param_budget=None)) is None
    assert budget_penalty(SearchConfig(budget_weight=0.0)) is None
    strategy = build_strategy(SearchConfig(warmup_epochs=2, arch_lr=0.01))
    assert strategy.warmup_epochs == 2 and strategy.arc_learning_rate == 0.01 and strategy.penalty is not None
    with pytest.raises(ValueError, match="warmup_epochs"):
        SearchConfig(epochs=3, warmup_epochs=3)


def test_the_budget_leaves_the_random_draws_alone():
    """Building the penalty counts on a second space under a forked RNG: the search's alphas and
    weights start the same with and without a budget."""
    torch.manual_seed(0)
    budget_penalty(SearchConfig())
    after_budget = torch.rand(3)
    torch.manual_seed(0)
    assert torch.equal(after_budget, torch.rand(3))
