"""The NNI strategy of a search, built from its :class:`~ruas_nni.search.config.SearchConfig`."""

from __future__ import annotations

import logging

# ``nni.nas.strategy`` must be imported before ``nni.nas.oneshot`` (see strategies/cooperative.py).
import nni.nas.strategy  # noqa: F401, I001
import torch
from nni.nas.strategy import DARTS, GumbelDARTS, Strategy

from search_spaces import RUASSpace
from strategies import CooperativeBilevel, JointDARTS, SeparateSearch, ruas_groups
from strategies.cooperative import parameter_budget_penalty

from .config import SearchConfig

__all__ = ["build_strategy", "budget_penalty"]

_log = logging.getLogger(__name__)


def budget_penalty(config: SearchConfig):
    """The parameter-budget penalty of ``config`` (``None`` when ``param_budget`` is null or its
    weight 0): NNI's ``ExpectationProfilerPenalty`` on the expected parameter count of the space."""
    if config.param_budget is None or config.budget_weight == 0:
        return None
    with torch.random.fork_rng():  # a second space to count on; the search's random draws stay as they were
        space = RUASSpace(iem_stages=config.iem_stages, nrm_cells=config.nrm_cells, nrm_channels=config.nrm_channels,
                          gamma=config.gamma, warm_start=config.warm_start)
    return parameter_budget_penalty(space, config.param_budget, config.budget_weight)


def build_strategy(config: SearchConfig) -> Strategy:
    """The NNI strategy named by ``config.strategy`` with the configuration's settings."""
    common = {"arc_learning_rate": config.arch_lr, "gradient_clip_val": config.grad_clip,
              "warmup_epochs": config.warmup_epochs}
    if config.strategy in ("darts", "gumbel-darts"):
        if config.param_budget is not None and config.budget_weight:
            # NNI's DARTS feeds the penalty export_probs(), plain floats: it would shift the loss, never the alphas
            _log.warning("param_budget is not applied by %s (NNI's penalty has no gradient there); "
                         "cooperative, separate and joint apply it", config.strategy)
        if config.strategy == "darts":
            return DARTS(**common)
        return GumbelDARTS(temperature=(float(config.gumbel_temperature[0]), float(config.gumbel_temperature[1])), **common)
    options = dict(common, beta=config.beta, unrolled=config.unrolled, finite_difference_r=config.finite_difference_r,
                   arc_betas=tuple(config.arch_betas), arc_weight_decay=config.arch_weight_decay,
                   max_nonfinite_steps=config.max_nonfinite_steps, penalty=budget_penalty(config))
    groups = ruas_groups(config.nrm_period, config.iem_inner_steps, config.nrm_inner_steps)
    if config.strategy == "cooperative":
        return CooperativeBilevel(groups=groups, **options)
    if config.strategy == "separate":
        return SeparateSearch(groups=groups, **options)
    return JointDARTS(**options)
