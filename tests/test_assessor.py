"""`compare --assessor medianstop` hands NNI's Medianstop assessor the comparison's intermediate PSNR
(higher is better), and Medianstop stops a trial that is clearly behind. A real NNI manager runs the
comparison's experiment config; only the trial command is a cheap stand-in that reports a PSNR curve
(good seeds about 20 dB, the last seed 5 dB) the way the real trial does."""

from __future__ import annotations

import json
import shlex
import sys
import textwrap

import pytest
from nni_utils import free_port, rest, trials_finished, wait_until

from ruas_nni.experiments.compare import CompareConfig, compare_experiment
from ruas_nni.experiments.launch import start_experiment

pytestmark = pytest.mark.slow

FAKE_TRIAL = textwrap.dedent("""
    import time
    import nni

    seed = nni.get_next_parameter()["seed"]
    for epoch in range(8):
        psnr = (5.0 if seed == 3 else 20.0 + seed) + 0.1 * epoch
        nni.report_intermediate_result({"default": psnr, "psnr": psnr, "ssim": 0.5, "epoch": epoch + 1})
        time.sleep(0.3 if seed != 3 else 1.5)
    nni.report_final_result({"default": psnr, "psnr": psnr, "ssim": 0.5})
""")


def test_assessor_config_goes_to_nni(demo_data, tmp_path):
    config = CompareConfig(strategies=["darts"], data=[str(demo_data.train)], eval_data=str(demo_data.eval),
                           assessor="curvefitting", experiment_dir=str(tmp_path))
    assessor = compare_experiment(config).config.canonical_copy().assessor
    assert assessor.name == "Curvefitting" and assessor.class_args["optimize_mode"] == "maximize"


def test_medianstop_stops_the_trial_that_is_behind(demo_data, tmp_path):
    script = tmp_path / "fake_trial.py"
    script.write_text(FAKE_TRIAL)
    config = CompareConfig(strategies=["darts"], repeats=4, data=[str(demo_data.train)], eval_data=str(demo_data.eval),
                           assessor="medianstop", assessor_start_step=2, concurrency=1,
                           experiment_dir=str(tmp_path / "experiments"))
    experiment = compare_experiment(config)
    assert experiment.config.assessor.name == "Medianstop"
    experiment.config.trial_command = shlex.join([sys.executable, str(script)])
    port = free_port()
    start_experiment(experiment, port, detach=False)
    try:
        jobs = wait_until(lambda: trials_finished(port, 4), 240, 2.0, "four trials to finish")
        seeds, ids = {}, {}
        for job in jobs:
            seed = json.loads(job["hyperParameters"][-1])["parameters"]["seed"]
            seeds[seed], ids[seed] = job["status"], job["trialJobId"]
        # NNI 3.0 marks the trial EARLY_STOPPED only if its process ends after the manager noted the
        # assessor's verdict (training_service/v3/compat.js sets isEarlyStopped after awaiting the
        # stop), so it often shows USER_CANCELED; the manager's log says who stopped it: the
        # assessor's KILL_TRIAL_JOB command is logged as "cancelTrialJob: <id>".
        assert seeds[3] in ("EARLY_STOPPED", "USER_CANCELED"), seeds
        log = (tmp_path / "experiments" / experiment.id / "log" / "nnimanager.log").read_text()
        stopped_by_assessor = {seed for seed, trial in ids.items() if f'cancelTrialJob: "{trial}"' in log}
        assert stopped_by_assessor == {3}, (stopped_by_assessor, ids)
        assert [seeds[s] for s in (0, 1, 2)] == ["SUCCEEDED"] * 3, seeds
        profile = rest(port, "/experiment")
        assert profile["params"]["assessor"]["name"] == "Medianstop"
    finally:
        experiment.stop()
