"""Latency as a search cost: the lookup table (measured on the real native engine, cached), its
prediction, the rank correlations that check it, and the penalty that carries it to the alphas."""

from __future__ import annotations

import json

import pytest
import torch
from nni.nas.oneshot.pytorch.profiler import ExpectationProfilerPenalty

from ruas_nni.base.rank_correlation import kendall_tau, spearman_rho
from ruas_nni.cli import main
from ruas_nni.inference import latency
from ruas_nni.inference.latency import LatencyTable, table_for
from ruas_nni.model.export import NetworkOptions
from ruas_nni.model.genotype import Genotype
from ruas_nni.model.network import EDGE_NAMES
from ruas_nni.model.ops import OPERATION_NAMES
from search_spaces import RUASSpace
from strategies.cooperative import PenaltySum, TableProfiler, expected_cost_penalty, parameter_budget_penalty

pytestmark = pytest.mark.usefixtures("one_thread")

SMALL = NetworkOptions(iem_stages=1, nrm_cells=1)


def _table(step: float = 0.5) -> LatencyTable:
    edges = {m: {e: {op: step * i + (j if m == "nrm" else 0) for i, op in enumerate(OPERATION_NAMES)}
                 for j, e in enumerate(EDGE_NAMES)} for m in ("iem", "nrm")}
    return LatencyTable((600, 400), 10.0, edges, {}, {})


def test_rank_correlations_pinned_by_hand():
    assert kendall_tau([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert kendall_tau([1, 2, 3, 4], [40, 30, 20, 10]) == pytest.approx(-1.0)
    # pairs of (1, 2, 3) against (1, 3, 2): concordant (1,2) (1,3), discordant (2,3): (2 - 1) / 3
    assert kendall_tau([1, 2, 3], [1, 3, 2]) == pytest.approx(1 / 3)
    # ranks 0 1 2 3 against 0 1 3 2: rho = 1 - 6 * 2 / (4 * 15)
    assert spearman_rho([1, 2, 3, 4], [5, 6, 8, 7]) == pytest.approx(0.8)
    assert spearman_rho([1, 2, 2, 3], [1, 2, 2, 3]) == pytest.approx(1.0)  # ties get their mean rank


def test_prediction_is_the_all_skip_time_plus_each_edges_extra():
    table = _table()
    skip = Genotype(("skip_connect",) * 7, ("skip_connect",) * 7)
    assert table.predict(skip) == 10.0 + sum(range(7))  # the NRM rows of this table carry 0..6 at skip
    genotype = Genotype(("conv_3x3",) + ("skip_connect",) * 6, ("skip_connect",) * 6 + ("resconv_1x1",))
    conv = OPERATION_NAMES.index("conv_3x3") * 0.5
    resconv = OPERATION_NAMES.index("resconv_1x1") * 0.5 + 6
    assert table.predict(genotype) == pytest.approx(10.0 + conv + sum(range(6)) + resconv)
    assert table.predict(Genotype(("skip_connect",) * 7, None)) == 10.0  # IEM-only: no NRM entries
    assert LatencyTable.from_dict(json.loads(json.dumps(table.to_dict()))) == table


def test_table_profiler_agrees_with_the_table_and_its_gradient_prefers_cheap_operations():
    space = RUASSpace(iem_stages=1, nrm_cells=1)
    table = _table()
    labels = table.by_label()
    profiler = TableProfiler(space, labels, table.base)
    genotype = Genotype(("conv_3x3", "skip_connect", "dilconv_3x3", "conv_1x1", "resconv_3x3", "skip_connect",
                         "resdilconv_3x3"), ("resconv_1x1",) * 7)
    assert profiler.profile(genotype.to_sample()) == pytest.approx(table.predict(genotype))
    # the expectation under probabilities, and its gradient: a budget below the expected cost pushes
    # probability from the costliest operation to the cheapest
    alphas = {label: torch.zeros(len(OPERATION_NAMES), requires_grad=True) for label in labels}
    probs = {label: dict(zip(OPERATION_NAMES, torch.softmax(a, 0))) for label, a in alphas.items()}
    penalty = expected_cost_penalty(profiler, budget=10.0, scale=1.0)
    loss, details = penalty(torch.zeros(()), probs)
    uniform = 10.0 + sum(sum(c.values()) / len(c) for c in labels.values())
    assert float(torch.as_tensor(details["penalty"]).detach()) == pytest.approx(uniform, rel=1e-6)
    loss.backward()
    gradient = alphas["iem/e1"].grad
    assert gradient[-1] > 0 > gradient[0]  # resdilconv_3x3 costs most here, skip_connect least
    with pytest.raises(ValueError, match="no cost for iem/e1"):
        TableProfiler(space, {**labels, "iem/e1": {"skip_connect": 0.0}})
    with pytest.raises(ValueError, match="no choice labelled iem/e9"):
        TableProfiler(space, {**labels, "iem/e9": labels["iem/e1"]})


def test_penalty_sum_adds_a_parameter_and_a_latency_budget():
    space = RUASSpace(iem_stages=1, nrm_cells=1)
    table = _table()
    labels = table.by_label()
    params = parameter_budget_penalty(space, 100.0, 0.5)
    ms = expected_cost_penalty(TableProfiler(space, labels, table.base), 10.0, 2.0)
    both = PenaltySum({"params": params, "ms": ms})
    assert isinstance(both, ExpectationProfilerPenalty)  # what NNI's one-shot modules accept
    probs = {label: {op: 1.0 / len(OPERATION_NAMES) for op in OPERATION_NAMES} for label in labels}
    loss = torch.tensor(1.0)
    total, details = both(loss, probs)
    expected = params(loss, probs)[0] + ms(torch.zeros(()), probs)[0]
    assert float(total) == pytest.approx(float(expected))
    assert {"params_penalty", "ms_penalty", "ms_normalized_penalty"} <= set(details)


def test_table_is_measured_on_the_native_engine():
    operations = ("skip_connect", "conv_3x3")
    seen = []
    table = latency.build_table(SMALL, (48, 32), with_nrm=False, operations=operations, runs=2,
                                progress=lambda done, total: seen.append((done, total)))
    assert seen == [(i, 7) for i in range(1, 8)]  # one network per edge with conv_3x3 on it
    assert set(table.edges) == {"iem"} and all(set(costs) == set(operations) for costs in table.edges["iem"].values())
    assert table.base > 0 and all(costs["skip_connect"] == 0.0 for costs in table.edges["iem"].values())
    assert table.predict(Genotype(("skip_connect",) * 7, None)) == table.base
    assert table.machine["cores"] >= 1 and table.options["with_nrm"] is False and table.size == (48, 32)
    checked = latency.check_table(table, SMALL, count=2, runs=1)  # two random whole networks, measured
    assert checked["count"] == 2 and checked["size"] == [48, 32] and len(checked["genotypes"]) == 2
    assert all(g["nrm"] is None and g["measured_ms"] > 0 for g in checked["genotypes"])
    assert [g["predicted_ms"] for g in checked["genotypes"]] == [
        table.predict(Genotype(tuple(g["iem"]), None)) for g in checked["genotypes"]]


def test_table_is_cached_per_machine_and_shape(tmp_path, monkeypatch):
    monkeypatch.setenv("RUAS_NNI_CACHE_DIR", str(tmp_path / "cache"))
    measured = []

    def fake_build(options, size, *, with_nrm=True, runs=5, progress=None, **_):
        measured.append((options, size))
        return LatencyTable(size, 1.0 + len(measured), _table().edges, {**options.to_dict(), "with_nrm": with_nrm},
                            latency.machine_description())

    monkeypatch.setattr(latency, "build_table", fake_build)
    table, path = table_for(SMALL, (48, 32))
    assert path is not None and path.is_file() and len(measured) == 1 and path.parent == tmp_path / "cache" / "latency"
    again, same_path = table_for(SMALL, (48, 32))
    assert again == table and same_path == path and len(measured) == 1  # read back, not measured again
    other, other_path = table_for(NetworkOptions(iem_stages=2, nrm_cells=1), (48, 32))
    assert other_path != path and len(measured) == 2  # another shape, another table
    path.write_text("{not json")
    assert table_for(SMALL, (48, 32))[0].base == 4.0 and len(measured) == 3  # a damaged entry: measured again
    assert table_for(SMALL, (48, 32), refresh=True)[0].base == 5.0
    monkeypatch.setenv("RUAS_NNI_NO_CACHE", "1")
    assert table_for(SMALL, (48, 32))[1] is None and len(measured) == 5


def test_cli_refuses_a_bad_size_in_one_line(capsys):
    assert main(["latency", "--size", "600by400"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--size" in err[0] and "600by400" in err[0]
