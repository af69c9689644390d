"""The NNI strategy of a search, built from its :class:`~ruas_nni.search.config.SearchConfig`."""

from __future__ import annotations

# ``nni.nas.strategy`` must be imported before ``nni.nas.oneshot`` (see strategies/cooperative.py).
import nni.nas.strategy  # noqa: F401, I001
from nni.nas.strategy import DARTS, GumbelDARTS, Strategy

from strategies import CooperativeBilevel, JointDARTS, SeparateSearch, ruas_groups

from .config import SearchConfig

__all__ = ["build_strategy"]


def build_strategy(config: SearchConfig) -> Strategy:
    """The NNI strategy named by ``config.strategy`` with the configuration's settings."""
    common = {"arc_learning_rate": config.arch_lr, "gradient_clip_val": config.grad_clip}
    if config.strategy in ("darts", "gumbel-darts"):
        if config.strategy == "darts":
            return DARTS(**common)
        return GumbelDARTS(temperature=(float(config.gumbel_temperature[0]), float(config.gumbel_temperature[1])), **common)
    options = dict(common, beta=config.beta, unrolled=config.unrolled, finite_difference_r=config.finite_difference_r,
                   arc_betas=tuple(config.arch_betas), arc_weight_decay=config.arch_weight_decay,
                   max_nonfinite_steps=config.max_nonfinite_steps)
    groups = ruas_groups(config.nrm_period, config.iem_inner_steps, config.nrm_inner_steps)
    if config.strategy == "cooperative":
        return CooperativeBilevel(groups=groups, **options)
    if config.strategy == "separate":
        return SeparateSearch(groups=groups, **options)
    return JointDARTS(**options)
