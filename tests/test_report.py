"""`ruas-nni report` on NNI's own stored data: a real NNI experiment whose trials report known metrics
and write known architecture probabilities; the tables, the spread over seeds and the figures (drawn
from this data: the heatmaps' cells and labels, the scatter's points, means and axes)."""

from __future__ import annotations

import json
import shlex
import statistics
import sys
import textwrap

import pytest
from nni_utils import assert_all_gone, free_port, process_tree, rest, ruas_cli, trials_finished, wait_until
from PIL import Image

from ruas_nni.base.errors import UsageError
from ruas_nni.experiments.report import (
    alpha_heatmaps_figure,
    load_experiment,
    locate_experiment,
    psnr_vs_ms_figure,
    psnr_vs_params_figure,
    summarize,
    write_report,
)
from ruas_nni.model.network import EDGE_NAMES
from ruas_nni.model.ops import OPERATION_NAMES
from ruas_nni.search.figures import HEATMAP_COLOURS, pareto_front

TRIAL = textwrap.dedent("""
    import json, os, sys
    from pathlib import Path
    import nni
    import time
    from ruas_nni.experiments.trial_runner import adopt_manager_parameters
    if os.environ["NNI_TRIAL_SEQ_ID"] == "0":
        time.sleep(4)  # the second trial asks first: NNI 3.0 hands it the first trial's parameters
    received = nni.get_next_parameter()
    adopted = adopt_manager_parameters()
    p = nni.get_current_parameter()
    strategy, seed = p["strategy"], p["seed"]
    if strategy == "darts" and seed == 1:
        sys.exit("this trial fails on purpose")
    ops = ["skip_connect", "conv_1x1", "conv_3x3", "dilconv_3x3", "resconv_1x1", "resconv_3x3", "resdilconv_3x3"]
    def matrix(shift):
        return [[0.4 if c == (r + shift) % 7 else 0.1 for c in range(7)] for r in range(7)]
    out = Path(os.environ["NNI_OUTPUT_DIR"]) / "search"
    out.mkdir(parents=True)
    genotype = {"iem": [ops[(r + seed) % 7] for r in range(7)], "nrm": [ops[(r + 2) % 7] for r in range(7)]}
    (out / "arch.json").write_text(json.dumps({**genotype, "probs": {"iem": matrix(seed), "nrm": matrix(2)},
                                               "operations": ops}))
    psnr = 10.0 + seed + (5.0 if strategy == "darts" else 0.0)
    nni.report_intermediate_result({"default": 1.0 / (seed + 1), "val_loss": 1.0 / (seed + 1), "epoch": 1})
    nni.report_final_result({"default": psnr, "psnr": psnr, "ssim": 0.5 + 0.1 * seed, "params": 1000 * (seed + 1),
                             "flops": 1e9 * (seed + 1), "ms": 20.0 * (seed + 1) + (5.0 if strategy == "darts" else 0.0),
                             "search_seconds": 2.0 * (seed + 1), "strategy": strategy,
                             "seed": seed, "genotype": json.dumps(genotype), "received": received,
                             "adopted": adopted})
""")


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """A finished NNI experiment (4 trials: cooperative x seeds 0, 1; darts x seeds 0, 1, the last failing)."""
    from nni.experiment import Experiment
    from nni.tools.nnictl import config_utils

    root = tmp_path_factory.mktemp("report")
    home = root / "home"
    defaults = config_utils.Experiments.__init__.__defaults__
    config_utils.Experiments.__init__.__defaults__ = (str(home / "nni-experiments"),)
    script = root / "trial.py"
    script.write_text(TRIAL)
    experiment = Experiment("local")
    config = experiment.config
    config.experiment_name = "report-test"
    config.search_space = {"strategy": {"_type": "choice", "_value": ["cooperative", "darts"]},
                           "seed": {"_type": "choice", "_value": [0, 1]}}
    config.tuner.name = "GridSearch"
    config.trial_command = shlex.join([sys.executable, str(script)])
    config.trial_code_directory = str(root)
    config.trial_concurrency = 2
    config.max_trial_number = 4
    config.experiment_working_directory = str(root / "experiments")
    port = free_port()
    try:
        experiment.start(port)
        processes = process_tree(experiment._proc.pid)
        try:
            wait_until(lambda: trials_finished(port, 4), 120, 1.0, "the four trials")
            while_running = load_experiment(root / "experiments" / experiment.id)  # the manager holds the DB open
            assert rest(port, "/check-status")["status"] in ("DONE", "RUNNING", "NO_MORE_TRIAL")
        finally:
            experiment.stop()
        assert_all_gone(processes)
    finally:
        config_utils.Experiments.__init__.__defaults__ = defaults
    return {"root": root, "home": home, "id": experiment.id, "dir": root / "experiments" / experiment.id,
            "while_running": while_running}


def test_reads_trials_parameters_and_metrics(recorded):
    data = load_experiment(recorded["dir"])
    assert data.experiment_id == recorded["id"] and data.config["experimentName"] == "report-test"
    assert len(data.trials) == 4 and len(recorded["while_running"].trials) == 4
    by_key = {(t.strategy, t.seed): t for t in data.trials}
    assert sorted(by_key) == [("cooperative", 0), ("cooperative", 1), ("darts", 0), ("darts", 1)]
    assert by_key[("darts", 1)].status == "FAILED" and by_key[("darts", 1)].final is None
    for (strategy, seed), trial in by_key.items():
        if trial.status == "SUCCEEDED":
            assert trial.parameters == {"strategy": strategy, "seed": seed}
            assert trial.metric("psnr") == 10.0 + seed + (5.0 if strategy == "darts" else 0.0)
            assert trial.intermediate == [{"default": 1.0 / (seed + 1), "val_loss": 1.0 / (seed + 1), "epoch": 1}]
            assert trial.arch()["iem"][0] == trial.arch()["operations"][seed]


def test_trials_ran_what_the_web_ui_lists(recorded):
    """NNI 3.0 gives queued parameters to whichever trial asks first (microsoft/nni#5726); the first
    trial waits, so the second receives its parameters. ``adopt_manager_parameters`` makes each run
    (and report under) the parameters the manager lists for it."""
    jobs = {t.trial_id: t for t in load_experiment(recorded["dir"]).trials}
    finals = [t.final for t in jobs.values() if t.final]
    for trial in jobs.values():
        if trial.final:
            assert {"strategy": trial.final["strategy"], "seed": trial.final["seed"]} == trial.parameters
    assert any(f["adopted"] and f["received"] != {"strategy": f["strategy"], "seed": f["seed"]} for f in finals), finals
    import sqlite3

    connection = sqlite3.connect(f"file:{recorded['dir'] / 'db' / 'nni.sqlite'}?mode=ro", uri=True)
    listed = {row[0]: json.loads(row[1])["parameter_id"] for row in
              connection.execute("select trialJobId, data from TrialJobEvent where event = 'RUNNING'")}
    reported = {row[0]: int(row[1]) for row in
                connection.execute("select trialJobId, parameterId from MetricData where type = 'FINAL'")}
    connection.close()
    assert reported and all(reported[t] == listed[t] for t in reported)


def test_mean_and_spread_over_seeds(recorded):
    summaries = {s.strategy: s for s in summarize(load_experiment(recorded["dir"]))}
    assert list(summaries) == ["cooperative", "darts"]
    cooperative, darts = summaries["cooperative"], summaries["darts"]
    psnr = cooperative.metrics["psnr"]
    assert (psnr.mean, psnr.low, psnr.high, psnr.count) == (10.5, 10.0, 11.0, 2)
    assert psnr.std == pytest.approx(statistics.stdev([10.0, 11.0]))
    assert cooperative.metrics["params"].mean == 1500 and cooperative.metrics["search_seconds"].mean == 3.0
    assert darts.metrics["psnr"].mean == 15.0 and darts.metrics["psnr"].std is None and len(darts.succeeded) == 1
    # probabilities averaged over the seeds: seed 0 peaks at column r, seed 1 at r + 1
    iem = cooperative.probs["iem"]
    assert iem[0][0] == pytest.approx(0.25) and iem[0][1] == pytest.approx(0.25) and iem[0][2] == pytest.approx(0.1)
    assert darts.probs["iem"][3][3] == pytest.approx(0.4) and cooperative.probs_count == 2


def test_report_files_from_an_experiment_id(recorded):
    out = recorded["root"] / "out"
    result = ruas_cli(["report", recorded["id"], "--out", str(out)], recorded["home"])
    assert result.returncode == 0, result.stderr
    text = (out / "report.md").read_text()
    assert "| cooperative | 2/2 | 10.500 ± 0.707 (10.000..11.000) | 0.5500 ± 0.0707 (0.5000..0.6000) |" in text
    assert "| darts | 1/2 | 15.000 |" in text
    failed = next(t for t in load_experiment(recorded["dir"]).trials if t.status == "FAILED")
    assert "## Failed trials" in text and f"`{failed.trial_id}`" in text
    assert "Best trial:" in text and "(darts, seed 0): PSNR 15.000 dB" in text
    # the Pareto front of (ms, PSNR): cooperative seed 0 (20 ms, 10 dB) and darts seed 0 (25 ms, 15 dB);
    # cooperative seed 1 (40 ms, 11 dB) is slower and worse than darts seed 0
    front = text.split("On the front", 1)[1].split("##", 1)[0]
    rows = [line for line in front.splitlines() if line.startswith("| `")]
    assert [row.split(" | ")[1:5] for row in rows] == [["cooperative", "0", "20.0", "10.000"], ["darts", "0", "25.0", "15.000"]]
    assert "| 30.0 ± 14.1 (20.0..40.0) |" in text  # cooperative's ms over its two seeds
    for name in ("psnr_vs_params.png", "psnr_vs_ms.png", "alphas_cooperative.png", "alphas_darts.png", "alphas.png"):
        assert f"({name})" in text or name == "alphas.png"
        with Image.open(out / name) as image:
            assert image.format == "PNG" and image.width > 400 and image.height > 300
            assert len(image.convert("RGB").getcolors(1 << 16) or []) > 5  # drawn, not blank
    with Image.open(out / "alphas_darts.png") as image:  # the single seed's peak gets the top colour
        colours = {rgb for _, rgb in image.convert("RGB").getcolors(1 << 16)}
    assert _colour(1.0) in colours and _colour(0.0) in colours
    with Image.open(out / "alphas.png") as stacked, Image.open(out / "alphas_darts.png") as single:
        assert stacked.width == single.width and stacked.height >= 1.9 * single.height  # two strategies, stacked


def _colour(value):
    import matplotlib

    return tuple(int(c) for c in matplotlib.colormaps[HEATMAP_COLOURS](value, bytes=True)[:3])


def _labels(ticks):
    return [t.get_text() for t in ticks]


def test_heatmaps_drawn_from_the_experiment(recorded):
    summaries = summarize(load_experiment(recorded["dir"]))
    figure = alpha_heatmaps_figure(summaries)
    panels = [ax for ax in figure.axes if ax.images]
    assert len(panels) == 4  # cooperative and darts, IEM and NRM each
    titles = [figure.subfigs[0].get_suptitle(), figure.subfigs[1].get_suptitle()]
    assert titles[0].startswith("cooperative:") and "mean of 2 seeds" in titles[0] and "mean of 1 seed)" in titles[1]
    expected = [s.probs[m] for s in summaries for m in ("iem", "nrm")]
    for ax, matrix, module in zip(panels, expected, ["IEM", "NRM"] * 2):
        assert ax.images[0].get_array().shape == (7, 7) == (len(EDGE_NAMES), len(OPERATION_NAMES))
        assert ax.images[0].get_array().tolist() == [pytest.approx(row) for row in matrix]
        assert _labels(ax.get_yticklabels()) == list(EDGE_NAMES)
        assert _labels(ax.get_xticklabels()) == list(OPERATION_NAMES)
        assert ax.get_title().startswith(module)
        cells = [t.get_text() for t in ax.texts]
        assert cells == [f"{v:.4f}" for row in matrix for v in row]  # row by row, 4 decimals
        rings = [(round(p.get_x() + p.get_width() / 2), round(p.get_y() + p.get_height() / 2)) for p in ax.patches]
        assert rings == [(max(range(7), key=row.__getitem__), r) for r, row in enumerate(matrix)]
    # cooperative's IEM, mean of seeds 0 and 1: 0.25 on the diagonal and next to it, 0.1 elsewhere
    assert panels[0].texts[0].get_text() == "0.2500" and panels[0].texts[2].get_text() == "0.1000"
    bars = [ax for ax in figure.axes if not ax.images and ax.get_label() == "<colorbar>"]
    assert len(bars) == 4 and _labels(bars[0].get_yticklabels())[-1] == "0.2500"


def test_psnr_scatter_drawn_from_the_experiment(recorded):
    summaries = summarize(load_experiment(recorded["dir"]))
    figure = psnr_vs_params_figure(summaries)
    (ax,) = figure.axes
    assert ax.get_xlabel() == "parameters (thousands)" and ax.get_ylabel() == "PSNR (dB)"
    legend = _labels(ax.get_legend().get_texts())
    assert legend == ["cooperative (2)", "darts (1)", "mean ± std over seeds"]
    dots = [c.get_offsets().tolist() for c in ax.collections if c.get_label() in legend[:2]]
    assert dots == [[[1.0, 10.0], [2.0, 11.0]], [[1.0, 15.0]]]  # thousands of parameters, dB
    means = [line.get_xydata().tolist() for line in ax.lines if line.get_marker() == "o" and len(line.get_xydata())]
    assert means == [[[1.5, 10.5]], [[1.0, 15.0]]]
    low, high = ax.get_ylim()
    assert high - low >= 1.0 and low <= 10.0 and high >= 15.0
    single = psnr_vs_params_figure(summaries[1:])  # one trial: the PSNR axis still spans at least 1 dB
    assert single.axes[0].get_ylim()[1] - single.axes[0].get_ylim()[0] >= 1.0


def test_pareto_front_drawn_from_the_experiment(recorded):
    figure = psnr_vs_ms_figure(summarize(load_experiment(recorded["dir"])))
    (ax,) = figure.axes
    assert ax.get_xlabel().startswith("ms per 600x400") and ax.get_ylabel() == "PSNR (dB)"
    (staircase,) = [line for line in ax.lines if line.get_label().startswith("Pareto front")]
    assert staircase.get_label() == "Pareto front (2)"
    assert staircase.get_xydata().tolist() == [[20.0, 10.0], [25.0, 15.0]]


def test_pareto_front_keeps_what_nothing_beats_on_both():
    points = [(30.0, 19.0), (10.0, 18.0), (20.0, 18.0), (20.0, 19.5), (40.0, 19.5), (50.0, 20.0), (10.0, 17.0)]
    assert pareto_front(points) == [(10.0, 18.0), (20.0, 19.5), (50.0, 20.0)]
    assert pareto_front([]) == []


def test_experiment_is_found_by_folder_or_id(recorded, tmp_path):
    assert locate_experiment(str(recorded["dir"])) == recorded["dir"]
    assert locate_experiment(str(recorded["dir"] / "db" / "nni.sqlite")) == recorded["dir"]
    assert locate_experiment(recorded["id"], experiment_dir=recorded["dir"].parent) == recorded["dir"]
    with pytest.raises(UsageError, match="not an NNI experiment folder"):
        locate_experiment(str(tmp_path))
    report = write_report(str(recorded["dir"]), tmp_path / "r")
    assert report.read_text().startswith(f"# NNI experiment {recorded['id']}")


def test_unknown_experiment_is_one_line_error(recorded):
    result = ruas_cli(["report", "nosuchid"], recorded["home"])
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "nosuchid: no such experiment folder" in result.stderr

