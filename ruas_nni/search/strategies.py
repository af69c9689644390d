"""The NNI strategy of a search, built from its :class:`~ruas_nni.search.config.SearchConfig`."""

from __future__ import annotations

import logging
import math
import random
from typing import Mapping, Sequence

# ``nni.nas.strategy`` must be imported before ``nni.nas.oneshot`` (see strategies/cooperative.py).
import nni.nas.strategy  # noqa: F401, I001
import torch
from nni.nas.strategy import DARTS, GumbelDARTS, Strategy

from search_spaces import RUASSpace
from strategies import CooperativeBilevel, JointDARTS, SeparateSearch, ruas_groups
from strategies.cooperative import PenaltySum, TableProfiler, expected_cost_penalty, parameter_budget_penalty

from ..base.errors import UsageError
from ..inference.latency import LatencyTable, latency_table_path, table_for
from ..model.export import NetworkOptions, export
from ..model.genotype import Genotype
from ..model.ops import OPERATION_NAMES
from .config import SearchConfig

__all__ = ["build_strategy", "budget_penalty", "count_parameters", "edge_costs", "genotype_within_budget", "latency_table",
           "random_genotype", "RANDOM_MAX_DRAWS"]

RANDOM_MAX_DRAWS = 10_000
"""Draws after which :func:`random_genotype` gives up (a budget that almost no genotype meets)."""

_log = logging.getLogger(__name__)


def budget_penalty(config: SearchConfig):
    """The budget penalties of ``config``, as one NNI ``ExpectationProfilerPenalty`` (``None`` when
    neither applies): on the expected parameter count of the space (``param_budget``, unless null or
    its weight 0) and on the expected milliseconds per 600x400 image that this machine's latency table
    predicts (``latency_budget``, unless null or its weight 0)."""
    with_params = config.param_budget is not None and config.budget_weight != 0
    with_latency = config.latency_budget is not None and config.latency_weight != 0
    if not (with_params or with_latency):
        return None
    with torch.random.fork_rng():  # a second space to count on; the search's random draws stay as they were
        space = RUASSpace(iem_stages=config.iem_stages, nrm_cells=config.nrm_cells, nrm_channels=config.nrm_channels,
                          gamma=config.gamma, warm_start=config.warm_start)
    parts = {}
    if with_params:
        parts["params"] = parameter_budget_penalty(space, config.param_budget, config.budget_weight)
    if with_latency:
        table = latency_table(config)
        parts["ms"] = expected_cost_penalty(TableProfiler(space, table.by_label(), table.base), config.latency_budget,
                                            config.latency_weight)
    return next(iter(parts.values())) if len(parts) == 1 else PenaltySum(parts)


def latency_table(config: SearchConfig) -> LatencyTable:
    """This machine's latency table for the searched network's shape (cached; measured on a miss)."""
    options = NetworkOptions.from_dict(config.network_options())
    cached = latency_table_path(options)
    if cached is None or not cached.is_file():
        _log.warning("measuring this machine's latency table (about 85 networks, a few minutes; cached afterwards, "
                     "and built ahead of time by `ruas-nni latency`)")
    return table_for(options)[0]


def build_strategy(config: SearchConfig) -> Strategy:
    """The NNI strategy named by ``config.strategy`` with the configuration's settings."""
    common = {"arc_learning_rate": config.arch_lr, "gradient_clip_val": config.grad_clip,
              "warmup_epochs": config.warmup}
    if config.strategy in ("darts", "gumbel-darts"):
        for key, weight in (("param_budget", "budget_weight"), ("latency_budget", "latency_weight")):
            if getattr(config, key) is not None and getattr(config, weight):
                # NNI's DARTS feeds the penalty export_probs(), plain floats: it would shift the loss, never the alphas
                _log.warning("%s is not applied by %s (NNI's penalty has no gradient there); "
                             "cooperative, separate and joint apply it", key, config.strategy)
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


def count_parameters(genotype: Genotype, config: SearchConfig) -> int:
    """Parameters of the network that ``genotype`` exports to with ``config``'s network options."""
    network = export(genotype, config.network_options())
    return sum(p.numel() for p in network.parameters())


def random_genotype(config: SearchConfig) -> tuple[Genotype, int, int]:
    """The ``random`` strategy: a genotype drawn uniformly from those within ``param_budget``.

    Each of the 14 edges (IEM e1..e7, NRM e1..e7) draws one of the seven operations uniformly
    (``random.Random(seed)``); a draw above the budget is rejected and drawn again, so the result
    is uniform over the genotypes of at most ``param_budget`` parameters (all of them when the
    budget is null). Nothing is trained. Returns the genotype, its parameters and the draws it took.
    """
    smallest = count_parameters(Genotype(iem=(OPERATION_NAMES[0],) * 7, nrm=(OPERATION_NAMES[0],) * 7), config)
    if config.param_budget is not None and config.param_budget < smallest:
        raise UsageError(f"`param_budget` {config.param_budget}: below the smallest network of the space "
                         f"({smallest} parameters, every edge {OPERATION_NAMES[0]})", keys=("param_budget",))
    rng = random.Random(config.seed)
    for draw in range(1, RANDOM_MAX_DRAWS + 1):
        genotype = Genotype(iem=tuple(rng.choice(OPERATION_NAMES) for _ in range(7)),
                            nrm=tuple(rng.choice(OPERATION_NAMES) for _ in range(7)))
        params = count_parameters(genotype, config)
        if config.param_budget is None or params <= config.param_budget:
            return genotype, params, draw
    raise UsageError(f"`param_budget` {config.param_budget}: no genotype within it in {RANDOM_MAX_DRAWS} random draws",
                     keys=("param_budget",))


def edge_costs(config: SearchConfig) -> tuple[int, dict[str, list[list[int]]]]:
    """The parameter count of the space's networks as ``fixed + sum over edges of cost[module][edge][op]``
    (every stage / cell of a module shares the edge's operation); ``op`` in ``OPERATION_NAMES`` order."""
    smallest = (OPERATION_NAMES[0],) * 7
    fixed = count_parameters(Genotype(iem=smallest, nrm=smallest), config)
    costs: dict[str, list[list[int]]] = {"iem": [], "nrm": []}
    for module in ("iem", "nrm"):
        for edge in range(7):
            row = []
            for op in OPERATION_NAMES:
                ops = list(smallest)
                ops[edge] = op
                genotype = Genotype(iem=tuple(ops), nrm=smallest) if module == "iem" else Genotype(iem=smallest, nrm=tuple(ops))
                row.append(count_parameters(genotype, config) - fixed)
            costs[module].append(row)
    return fixed, costs


def genotype_within_budget(probs: Mapping[str, Sequence[Sequence[float]]], config: SearchConfig) -> Genotype:
    """The most probable genotype of at most ``param_budget`` parameters under the search's choice
    probabilities: ``argmax sum_edges log p(edge = op)`` subject to ``params <= param_budget``.

    The edges are independent under the factorised distribution (one softmax per edge), and the
    parameter count is a sum over edges (:func:`edge_costs`), so this is a multiple-choice knapsack,
    solved exactly by dynamic programming over the reachable parameter sums. Without a budget, or
    when the plain argmax fits, it is the plain argmax (NNI's export).
    """
    def argmax(row: Sequence[float]) -> str:
        return OPERATION_NAMES[max(range(len(row)), key=lambda i: row[i])]

    plain = Genotype(iem=tuple(argmax(r) for r in probs["iem"]), nrm=tuple(argmax(r) for r in probs["nrm"]))
    if config.param_budget is None or count_parameters(plain, config) <= config.param_budget:
        return plain
    fixed, costs = edge_costs(config)
    room = config.param_budget - fixed
    if room < 0:
        raise UsageError(f"`param_budget` {config.param_budget}: below the smallest network of the space ({fixed} parameters)",
                         keys=("param_budget",))
    # states: parameters spent -> (log-probability, choices so far); ties keep the first found
    states: dict[int, tuple[float, tuple[int, ...]]] = {0: (0.0, ())}
    edges = [(m, e) for m in ("iem", "nrm") for e in range(7)]
    for module, edge in edges:
        row, cost = probs[module][edge], costs[module][edge]
        following: dict[int, tuple[float, tuple[int, ...]]] = {}
        for spent, (score, chosen) in states.items():
            for op in range(len(OPERATION_NAMES)):
                total = spent + cost[op]
                if total > room:
                    continue
                candidate = (score + math.log(max(float(row[op]), 1e-300)), chosen + (op,))
                if total not in following or candidate[0] > following[total][0]:
                    following[total] = candidate
        states = following
    _, best = max(states.values(), key=lambda item: item[0])
    names = [OPERATION_NAMES[i] for i in best]
    return Genotype(iem=tuple(names[:7]), nrm=tuple(names[7:]))
