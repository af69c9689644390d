"""NNI experiments for real: `ruas-nni compare` starts an NNI manager on localhost whose trials search,
train and evaluate; the REST API, the web UI, the TensorBoard button, crafted trials and search space
posted to the unauthenticated manager (refused), `nnictl stop`, waiting and Ctrl-C, multi-trial NAS on
RUASSpace. (NNI 3.0's parameter hand-out is tested in test_report.py.)"""

from __future__ import annotations

import json
import random
import shlex
import sys
from pathlib import Path

import pytest
import requests
from nni_utils import (
    assert_all_gone,
    decode_metric,
    free_port,
    listening,
    manager_pid,
    nnictl,
    process_tree,
    rest,
    ruas_cli,
    small_pairs,
    trial_folder,
    trials_finished,
    wait_until,
)
from test_untrusted_manager import crafted_parameters

from ruas_nni.cli import main
from ruas_nni.experiments.compare import CompareConfig, compare_experiment, compare_search_space, trial_command
from ruas_nni.experiments.trial import REFUSED, build_parser
from ruas_nni.experiments.trial_runner import link_tensorboard_for_web_ui
from ruas_nni.model.checkpoint import load_checkpoint

FINAL_KEYS = {"default", "psnr", "ssim", "params", "flops", "ms", "search_seconds", "strategy", "genotype"}


# --------------------------------------------------------------------------------------------
# up-front checks and the experiment's configuration (no manager)


def _compare(capsys, *args: str) -> tuple[int, str]:
    code = main(["compare", *args])
    return code, capsys.readouterr().err.strip()


def test_compare_rejects_bad_flags_in_one_line(demo_data, tmp_path, capsys):
    data, pairs = str(demo_data.train), str(demo_data.eval)
    code, err = _compare(capsys, "--strategies", "cooperative,enas", "--data", data, "--eval-data", pairs)
    assert code == 2 and "--strategies" in err and "'enas'" in err and len(err.splitlines()) == 1
    empty = tmp_path / "empty"
    empty.mkdir()
    code, err = _compare(capsys, "--data", str(empty), "--eval-data", pairs, "--port", str(free_port()))
    assert code == 2 and str(empty) in err and "no image files" in err and len(err.splitlines()) == 1
    code, err = _compare(capsys, "--data", data, "--eval-data", data, "--port", str(free_port()))
    assert code == 2 and "--eval-data" in err and "low/" in err and len(err.splitlines()) == 1
    code, err = _compare(capsys, "--data", str(demo_data.eval / "low"), "--eval-data", pairs)
    assert code == 2 and "never search or train on the evaluation pairs" in err
    code, err = _compare(capsys, "--data", data, "--eval-data", pairs, "--repeats", "0")
    assert code == 2 and "--repeats" in err


def test_compare_rejects_a_port_in_use(demo_data, capsys):
    import socket

    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        port = server.getsockname()[1]
        code, err = _compare(capsys, "--data", str(demo_data.train), "--eval-data", str(demo_data.eval),
                             "--port", str(port))
    assert code == 2 and f"--port {port}" in err and "in use" in err and len(err.splitlines()) == 1


def test_comparison_is_a_grid_of_strategies_and_seeds(demo_data, tmp_path):
    config = CompareConfig(strategies=["cooperative", "darts", "gumbel-darts"], data=[str(demo_data.train)],
                           eval_data=str(demo_data.eval), repeats=2, epochs=3, steps=4, crop=32, train_steps=5,
                           concurrency=2, experiment_dir=str(tmp_path))
    experiment = compare_experiment(config)
    nni_config = experiment.config.canonical_copy()
    assert nni_config.search_space == compare_search_space(["cooperative", "darts", "gumbel-darts"], [0, 1])
    assert nni_config.tuner.name == "GridSearch" and nni_config.max_trial_number == 6
    assert nni_config.training_service.platform == "local"
    assert Path(nni_config.experiment_working_directory) == tmp_path
    words = shlex.split(trial_command(config))
    assert words[:3] == [sys.executable, "-m", "ruas_nni.experiments.trial"]
    args = build_parser().parse_args(words[3:])  # the trial accepts its own command
    assert (args.epochs, args.steps, args.crop, args.train_steps, args.device) == (3, 4, 32, 5, "cpu")
    assert args.data == [str(Path(demo_data.train).resolve())] and args.threads >= 1


def test_tensorboard_link_for_the_local_training_service(tmp_path):
    output = tmp_path / "exp" / "environments" / "local-env" / "trials" / "AbC12"
    output.mkdir(parents=True)
    link = link_tensorboard_for_web_ui(output, "AbC12")
    assert link == tmp_path / "exp" / "trials" / "AbC12" / "output" / "tensorboard"
    (output / "tensorboard" / "search").mkdir(parents=True)
    assert link.resolve() == (output / "tensorboard").resolve() and (link / "search").is_dir()
    assert link_tensorboard_for_web_ui(tmp_path / "elsewhere", "AbC12") is None
    assert link_tensorboard_for_web_ui(output, "other") is None


# --------------------------------------------------------------------------------------------
# end to end: a real NNI manager with two tiny trials


@pytest.fixture(scope="module")
def compare_run(demo_data, tmp_path_factory):
    """`ruas-nni compare --detach` with cooperative and darts on tiny crops; the manager is stopped
    (and checked for leftovers) by the module's last test on it, test_nnictl_stop_leaves_nothing_behind,
    or after the module's tests."""
    root = tmp_path_factory.mktemp("compare")
    home = root / "home"
    home.mkdir()
    pairs = small_pairs(Path(demo_data.eval), root / "pairs")
    port = free_port()
    result = ruas_cli(["compare", "--strategies", "cooperative,darts", "--data", str(demo_data.train),
                       "--eval-data", str(pairs), "--epochs", "1", "--steps", "1", "--crop", "16",
                       "--train-steps", "1", "--port", str(port), "--concurrency", "3",
                       "--experiment-dir", str(root / "experiments"), "--detach"], home)
    # concurrency 3 > the 2 grid points: NNI's GridSearch is asked for a third, finds its grid explored
    # and starts afresh on the search space test_crafted_trials_... puts (with exactly 2 asked, it
    # would index the new, smaller grid with its old position and crash: NNI 3.0's gridsearch_tuner)
    assert result.returncode == 0, result.stderr
    experiment_id = next(line.split(": ", 1)[1] for line in result.stdout.splitlines()
                         if line.startswith("experiment id: "))
    assert f"web UI: http://localhost:{port}" in result.stdout
    processes = process_tree(manager_pid(home, experiment_id))
    state = {"root": root, "home": home, "port": port, "id": experiment_id, "stopped": False, "stdout": result.stdout}
    try:
        state["jobs"] = wait_until(lambda: trials_finished(port, 2), 240, 2.0, "both trials to finish")
        state["processes"] = processes + [p for p in process_tree(processes[0].pid) if p not in processes]
        yield state
    finally:
        if not state["stopped"]:
            nnictl(["stop", "--port", str(port)], home)
        assert_all_gone(processes)
        assert not (root / "pwned").exists(), "a crafted parameter ran a command"  # see test_crafted_trials_...


def test_both_trials_report_their_results_through_nni(compare_run):
    port, jobs = compare_run["port"], compare_run["jobs"]
    assert [j["status"] for j in jobs] == ["SUCCEEDED", "SUCCEEDED"], jobs
    strategies = set()
    for job in jobs:
        final = decode_metric(job["finalMetricData"][-1]["data"])
        assert FINAL_KEYS <= set(final) and final["default"] == final["psnr"]
        assert 0 < final["psnr"] < 60 and 0 < final["ssim"] <= 1 and final["params"] > 0 and final["flops"] > 0
        assert 0 < final["ms"] < 10_000  # the optimised engine's ms per 600x400, measured in the trial
        listed = json.loads(job["hyperParameters"][-1])["parameters"]
        assert final["strategy"] == listed["strategy"] and final["seed"] == listed["seed"]  # web UI agrees
        genotype = json.loads(final["genotype"])
        assert len(genotype["iem"]) == 7 and len(genotype["nrm"]) == 7
        strategies.add(final["strategy"])
        periodical = [decode_metric(m["data"]) for m in rest(port, f"/metric-data/{job['trialJobId']}")
                      if m["type"] == "PERIODICAL"]
        assert len(periodical) == 1 and periodical[0]["epoch"] == 1 and periodical[0]["val_loss"] > 0
    assert strategies == {"cooperative", "darts"}
    profile = rest(port, "/experiment")
    assert profile["id"] == compare_run["id"] and profile["params"]["searchSpace"]["strategy"]["_value"] == [
        "cooperative", "darts"]


def test_web_ui_is_served(compare_run):
    base = f"http://127.0.0.1:{compare_run['port']}"
    page = requests.get(f"{base}/", timeout=10)
    assert page.status_code == 200 and "<title>Neural Network Intelligence</title>" in page.text
    scripts = [part.split('"')[0] for part in page.text.split('src="')[1:] if ".js" in part.split('"')[0]]
    assert scripts, "the page loads no script"
    asset = requests.get(f"{base}/{scripts[-1].lstrip('./')}", timeout=10)
    assert asset.status_code == 200 and len(asset.content) > 10000 and "javascript" in asset.headers["content-type"]
    detail = requests.get(f"{base}/oview", timeout=10)  # a client-side route: the same page
    assert detail.status_code == 200 and "<title>Neural Network Intelligence</title>" in detail.text


def test_tensorboard_button_finds_the_trial_logs(compare_run):
    """What the web UI's TensorBoard button does: POST /tensorboard with trial ids; the manager starts
    TensorBoard on the trials' logs, which must hold the search, training and evaluation runs."""
    port = compare_run["port"]
    trial_ids = [job["trialJobId"] for job in compare_run["jobs"]]
    api = f"http://127.0.0.1:{port}/api/v1/nni"
    task = requests.post(f"{api}/tensorboard", json={"trials": ",".join(trial_ids)}, timeout=30).json()
    try:
        def tensorboard_runs():
            detail = requests.get(f"{api}/tensorboard/{task['id']}", timeout=10).json()
            assert detail["status"] != "ERROR", detail
            try:
                runs = requests.get(f"http://127.0.0.1:{detail['port']}/data/runs", timeout=5).json()
            except (requests.ConnectionError, ValueError):
                return None
            return runs if len(runs) >= 6 else None

        runs = wait_until(tensorboard_runs, 90, 2.0, "TensorBoard to list the trials' runs")
        for trial_id in trial_ids:
            for part in ("search", "train", "eval"):
                assert any(trial_id in run and run.endswith(part) for run in runs), (trial_id, part, runs)
    finally:
        requests.delete(f"{api}/tensorboard/{task['id']}", timeout=30)


def test_report_of_the_comparison(compare_run):
    out = compare_run["root"] / "report"
    result = ruas_cli(["report", compare_run["id"], "--out", str(out)], compare_run["home"])
    assert result.returncode == 0, result.stderr
    text = (out / "report.md").read_text()
    for strategy in ("cooperative", "darts"):
        assert f"| {strategy} | 1/1 |" in text
        assert (out / f"alphas_{strategy}.png").is_file()
    assert (out / "psnr_vs_params.png").is_file() and (out / "alphas.png").is_file()


def test_crafted_trials_and_search_space_are_refused(compare_run):
    """The manager is unauthenticated (test_untrusted_manager.py): trials with crafted parameters (the
    web UI's "customized trial") and a crafted search space, posted through its REST API once the
    comparison's own trials have finished, each fail with one line and run nothing. Changes the
    experiment (more trials, another search space): the tests that read it come before this one."""
    port, root = compare_run["port"], compare_run["root"]
    notes = [line for line in compare_run["stdout"].splitlines() if "without authentication" in line]
    assert len(notes) == 1 and f"port {port}" in notes[0] and "SSH tunnel" in notes[0]
    marker = root / "pwned"
    loaded = root / "decoded-by"
    crafted = crafted_parameters(marker, loaded)
    own = compare_run["jobs"]
    api = f"http://127.0.0.1:{port}/api/v1/nni"
    # a crafted search space (GridSearch makes one trial of it), and room for every extra trial
    profile = rest(port, "/experiment")
    profile["params"]["searchSpace"] = {
        "strategy": {"_type": "choice", "_value": [f"darts && touch {marker}"]},
        "seed": {"_type": "choice", "_value": [-5]},
    }
    requests.put(f"{api}/experiment?update_type=SEARCH_SPACE", json=profile, timeout=10).raise_for_status()
    profile["params"]["maxTrialNumber"] = len(own) + 1 + len(crafted)
    requests.put(f"{api}/experiment?update_type=MAX_TRIAL_NUM", json=profile, timeout=10).raise_for_status()
    for parameters in crafted:  # the web UI's "customized trial"
        requests.post(f"{api}/trial-jobs", json=parameters, timeout=10).raise_for_status()
    total = len(own) + 1 + len(crafted)
    jobs = wait_until(lambda: trials_finished(port, total), 300, 2.0, f"{total} trials to finish")

    by_parameters = {}
    for job in jobs:
        record = json.loads(job["hyperParameters"][-1])
        by_parameters[json.dumps(record["parameters"], sort_keys=True)] = job
    for strategy in ("cooperative", "darts"):
        mine = by_parameters.pop(json.dumps({"seed": 0, "strategy": strategy}, sort_keys=True))
        assert mine["status"] == "SUCCEEDED", mine
    assert len(by_parameters) == 1 + len(crafted), list(by_parameters)
    for key, job in by_parameters.items():
        assert job["status"] == "FAILED", (key, job["status"])
        folder = trial_folder(job)
        log = (folder / "trial.stderr").read_text(errors="replace")  # NNI 3.0: trial.stdout / trial.stderr
        ours = [line for line in log.splitlines() if line.startswith("ruas-nni trial")]
        assert len(ours) == 1 and ours[0].startswith(REFUSED), (key, log[-2000:])
        log += (folder / "trial.stdout").read_text(errors="replace")
        assert "Traceback" not in log and "trial: strategy" not in log, (key, log[-2000:])
        print(f"{key}: {ours[0]}")
        assert not (folder / "search").exists() and not (folder / "tensorboard").exists(), key
    assert not marker.exists(), "a crafted parameter ran a command"
    # No trial decoded the nni.load object (they read plain JSON) -- but NNI's own dispatcher (the
    # tuner process on the manager's machine) does, when the trial ends (msg_dispatcher.py
    # handle_trial_end: load(hyper_params)): a hazard of NNI 3.0 itself, documented in
    # docs/experiments.md. If NNI stops decoding them, this tells us.
    decoders = loaded.read_text().splitlines() if loaded.exists() else []
    assert not any("ruas_nni.experiments.trial" in line for line in decoders), decoders
    print(f"nni.load payload decoded by: {decoders}")


def test_nnictl_stop_leaves_nothing_behind(compare_run):
    processes = process_tree(manager_pid(compare_run["home"], compare_run["id"]))
    assert processes, "the NNI manager is not running"
    result = nnictl(["stop", "--port", str(compare_run["port"])], compare_run["home"])
    assert result.returncode == 0, result.stdout + result.stderr
    compare_run["stopped"] = True
    assert_all_gone(processes + compare_run["processes"])
    assert not listening(compare_run["port"])


# --------------------------------------------------------------------------------------------
# multi-trial NAS on RUASSpace


@pytest.mark.parametrize("scalable", [False, True], ids=["paper-space", "scalable-space"])
def test_sampled_architecture_trains_and_scores(demo_data, tmp_path, monkeypatch, scalable):
    """The function evaluator on a randomly sampled architecture, under NNI's mock trial runtime; from
    RUASSpace.scalable() the sampled shape reaches arch.json and the trained checkpoint."""
    import nni
    from nni.nas.evaluator import FunctionalEvaluator
    from nni.nas.space import RawFormatModelSpace

    from ruas_nni.experiments.nas import train_and_score
    from ruas_nni.model.genotype import Genotype
    from search_spaces import RUASSpace

    monkeypatch.setenv("NNI_OUTPUT_DIR", str(tmp_path / "trial"))
    pairs = small_pairs(Path(demo_data.eval), tmp_path / "pairs")
    evaluator = FunctionalEvaluator(train_and_score, data=[str(demo_data.train)], val_data=str(pairs),
                                    train_steps=2, crop=16, seed=0)
    space = RawFormatModelSpace.from_model(RUASSpace.scalable() if scalable else RUASSpace(), evaluator)
    rng = random.Random(3)
    sample = {label: rng.choice(list(mutable.values)) for label, mutable in space.simplify().items()}
    if scalable:
        sample.update({"iem/stages": 2, "nrm/cells": 1, "nrm/width": 3})  # not the paper's 3, 3, 6
    frozen = space.freeze(sample)
    with evaluator.mock_runtime(frozen):
        metrics = evaluator.evaluate(frozen.executable_model())
        assert nni.get_current_parameter() is frozen
    assert frozen.metric == metrics["psnr"] > 0 and 0 < metrics["ssim"] <= 1
    assert Genotype.from_any(json.loads(metrics["genotype"])) == Genotype.from_sample(sample)
    assert Genotype.from_any(json.loads((tmp_path / "trial" / "arch.json").read_text())) == Genotype.from_sample(sample)
    assert (tmp_path / "trial" / "train" / "model.pt").is_file()
    arch = json.loads((tmp_path / "trial" / "arch.json").read_text())
    options = load_checkpoint(tmp_path / "trial" / "train" / "model.pt").options
    shape = (options.iem_stages, options.nrm_cells, options.nrm_channels)
    if scalable:
        assert arch["shape"] == {"iem_stages": 2, "nrm_cells": 1, "nrm_channels": 3} == json.loads(metrics["genotype"])["shape"]
        assert shape == (2, 1, 3)
    else:
        assert "shape" not in arch and shape == (3, 3, 6)


def test_multi_trial_nas_through_the_nni_manager(demo_data, tmp_path):
    """`ruas-nni nas --space scalable`: NNI's RegularizedEvolution samples RUASSpace.scalable(); two
    trials train and report, and the exported architectures carry their shape."""
    home = tmp_path / "home"
    home.mkdir()
    pairs = small_pairs(Path(demo_data.eval), tmp_path / "pairs")
    port = free_port()
    result = ruas_cli(["nas", "--strategy", "evolution", "--space", "scalable", "--data", str(demo_data.train),
                       "--val-data", str(pairs),
                       "--trials", "2", "--train-steps", "1", "--crop", "16", "--port", str(port),
                       "--concurrency", "2", "--experiment-dir", str(tmp_path / "experiments"),
                       "--export", str(tmp_path / "top"), "--top", "2", "--no-wait-ui"], home, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert "#1: PSNR" in result.stdout and "#2: PSNR" in result.stdout
    experiment_id = next(line.split(": ", 1)[1] for line in result.stdout.splitlines()
                         if line.startswith("experiment id: "))
    from ruas_nni.experiments.report import load_experiment
    from ruas_nni.model.genotype import Genotype

    data = load_experiment(tmp_path / "experiments" / experiment_id)
    assert [t.status for t in data.trials] == ["SUCCEEDED", "SUCCEEDED"]
    space = data.config["searchSpace"]
    assert sorted(space) == sorted([f"{m}/e{i}" for m in ("iem", "nrm") for i in range(1, 8)]  # on the web UI
                                   + ["iem/stages", "nrm/cells", "nrm/width"])
    scores = sorted((t.metric("psnr") for t in data.trials), reverse=True)
    exported = [json.loads((tmp_path / "top" / f"arch_{rank}.json").read_text()) for rank in (1, 2)]
    assert [e["metrics"]["psnr"] for e in exported] == scores
    for arch in exported:
        Genotype.from_any(arch)
        assert set(arch["shape"]) == {"iem_stages", "nrm_cells", "nrm_channels"}
    assert not listening(port)


def test_compare_waits_then_keeps_the_web_ui_until_ctrl_c(demo_data, tmp_path):
    """Without --detach: trial statuses are printed, the web UI stays up after the trials, Ctrl-C
    stops the experiment and nothing is left behind."""
    import queue
    import signal
    import subprocess
    import threading

    from nni_utils import ROOT, home_env

    home = tmp_path / "home"
    home.mkdir()
    pairs = small_pairs(Path(demo_data.eval), tmp_path / "pairs")
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "ruas_nni", "compare", "--strategies", "darts", "--data", str(demo_data.train),
         "--eval-data", str(pairs), "--epochs", "1", "--steps", "1", "--crop", "16", "--train-steps", "1",
         "--port", str(port), "--experiment-dir", str(tmp_path / "experiments")],
        cwd=ROOT, env=home_env(home), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        # as started from a terminal: a shell starts background jobs (`make test &`) with SIGINT ignored,
        # and the child would inherit that and never see the Ctrl-C below
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in process.stdout], daemon=True).start()
    seen: list[str] = []

    def read_until(text: str, timeout: float) -> None:
        def found() -> bool:
            while not lines.empty():
                seen.append(lines.get())
            return any(text in line for line in seen)
        wait_until(found, timeout, 0.5, f"{text!r} in the output of ruas-nni compare")

    try:
        read_until("web UI stays up", 180)
        assert any("(strategy darts seed 0): SUCCEEDED  PSNR" in line for line in seen), seen
        assert any("all trials finished: 1 of 1 succeeded" in line for line in seen)
        experiment_id = next(line.split(": ", 1)[1].strip() for line in seen if line.startswith("experiment id: "))
        processes = process_tree(manager_pid(home, experiment_id))
        assert processes and listening(port) and rest(port, "/check-status")["status"] == "DONE"
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=60) == 0
        read_until("experiment stopped", 5)
        assert_all_gone(processes)
        assert not listening(port)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
