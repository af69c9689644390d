"""NNI's private state that this project relies on (:mod:`strategies.nni_compat`,
:mod:`ruas_nni.search.nni_compat`) is still where NNI keeps it. Each failure names what changed in NNI."""

from __future__ import annotations

import ast
import atexit
import inspect
import re
import sqlite3
from pathlib import Path

import nni.nas.strategy  # noqa: F401, I001  (before nni.nas.oneshot, see strategies/cooperative.py)
import nni.trial
import pytest
from nni.nas.nn.pytorch import LayerChoice, ModelSpace
from nni.nas.oneshot.pytorch.base_lightning import BaseOneShotLightningModule
from nni.nas.oneshot.pytorch.supermodule.differentiable import DifferentiableMixedLayer
from nni.nas.strategy import DARTS, GumbelDARTS
from torch import nn

from ruas_nni.search import nni_compat
from search_spaces import RUASSpace
from strategies import labelled_architecture_parameters
from strategies.nni_compat import ARCH_ALPHA, OPTIMIZER_PROGRESS, SOFTMAX, arch_alpha, count_optimizer_step, layer_softmax


def test_darts_layers_keep_their_architecture_weights_in_arch_alpha():
    space = RUASSpace(iem_stages=1, nrm_cells=1, nrm_channels=3)
    DARTS().mutate_model(space)
    layers = [m for m in space.modules() if isinstance(m, DifferentiableMixedLayer)]
    assert len(layers) == 14, f"NNI's DARTS made {len(layers)} DifferentiableMixedLayer of RUASSpace's 14 edges"
    for layer in layers:
        assert isinstance(arch_alpha(layer), nn.Parameter), (
            f"NNI changed where DifferentiableMixedLayer keeps its architecture weights: no parameter "
            f"{ARCH_ALPHA!r} on {layer.label}")
        assert arch_alpha(layer).shape == (len(layer.names),)
    assert len(labelled_architecture_parameters(space)) == 14
    assert arch_alpha(space) is None  # only the modules that hold the weights themselves
    assert nni_compat.mixed_layers(space) == layers
    for layer in layers:
        assert nni_compat.derived_choice(layer) == layer.names[int(arch_alpha(layer).argmax())], (
            "NNI's DifferentiableMixedLayer.export no longer exports the argmax of its weights")


@pytest.mark.parametrize("strategy, softmax", [(DARTS, "Softmax"), (GumbelDARTS, "GumbelSoftmax")])
def test_darts_layers_keep_their_softmax_in_softmax(strategy, softmax):
    space = RUASSpace(iem_stages=1, nrm_cells=1, nrm_channels=3)
    strategy().mutate_model(space)
    for layer in nni_compat.mixed_layers(space):
        assert isinstance(getattr(layer, SOFTMAX, None), nn.Module), (
            f"NNI changed where DifferentiableMixedLayer keeps its softmax: no module {SOFTMAX!r} on {layer.label}")
        assert type(layer_softmax(layer)).__name__ == softmax
    assert type(layer_softmax(nn.Linear(1, 1))).__name__ == "Softmax"


def test_darts_layer_choice_keeps_its_weights_in_arch_alpha():
    class Net(ModelSpace):
        def __init__(self) -> None:
            super().__init__()
            self.layer = LayerChoice([nn.Linear(2, 2), nn.Linear(2, 2, bias=False)], label="layer")

    net = Net()
    DARTS().mutate_model(net)
    assert list(labelled_architecture_parameters(net)) == ["layer"], (
        f"NNI changed where its DARTS LayerChoice keeps its architecture weights (expected {ARCH_ALPHA!r})")


def test_one_shot_modules_count_optimizer_steps_in_optimizer_progress():
    names = BaseOneShotLightningModule.advance_optimization.__code__.co_names
    assert OPTIMIZER_PROGRESS in names, (
        f"NNI's BaseOneShotLightningModule.advance_optimization no longer counts steps in {OPTIMIZER_PROGRESS!r}")
    assert OPTIMIZER_PROGRESS in BaseOneShotLightningModule.setup.__code__.co_names, (
        f"NNI's BaseOneShotLightningModule.setup no longer resets {OPTIMIZER_PROGRESS!r}")

    class Counted(nn.Module):
        pass

    module = Counted()
    setattr(module, OPTIMIZER_PROGRESS, 4)
    count_optimizer_step(module)
    assert getattr(module, OPTIMIZER_PROGRESS) == 5


def test_the_trial_parameter_record_is_nni_trial_params():
    attribute = nni_compat.TRIAL_PARAMETERS
    assert hasattr(nni.trial, attribute), f"nni.trial has no {attribute!r} any more (the trial's parameter record)"
    for function in (nni.trial.get_next_parameter, nni.trial.get_current_parameter):
        assert attribute in function.__code__.co_names, (
            f"nni.trial.{function.__name__} no longer keeps the parameter record in nni.trial.{attribute}")
    before = nni_compat.trial_parameters()
    record = {"parameter_id": 7, "parameters": {"strategy": "darts"}, "parameter_source": "algorithm"}
    try:
        nni_compat.set_trial_parameters(record)
        assert nni.trial.get_current_parameter() == {"strategy": "darts"}
    finally:
        nni_compat.set_trial_parameters(before)


def test_the_trial_command_channels_keep_their_private_names():
    from nni.runtime.trial_command_channel.local_legacy import LocalLegacyTrialCommandChannel
    from nni.runtime.trial_command_channel.v3 import TrialCommandChannelV3

    v3 = TrialCommandChannelV3.receive_parameter.__code__
    assert nni_compat.V3_HTTP_CHANNEL in v3.co_names and "send" in v3.co_names and "receive" in v3.co_names, (
        f"NNI's TrialCommandChannelV3.receive_parameter no longer asks its HTTP channel "
        f"{nni_compat.V3_HTTP_CHANNEL!r} (send/receive) for the parameter")
    assert nni_compat.V3_HTTP_CHANNEL in TrialCommandChannelV3.__init__.__code__.co_names
    legacy = LocalLegacyTrialCommandChannel.receive_parameter.__code__.co_names
    missing = [name for name in nni_compat.LEGACY_CHANNEL_NAMES if name not in legacy]
    assert not missing, f"NNI's LocalLegacyTrialCommandChannel.receive_parameter no longer uses {missing}"


class _FakeHttp:
    def __init__(self, answer):
        self.sent, self.answer = [], answer

    def send(self, command):
        self.sent.append(command)

    def receive(self):
        return self.answer


def test_receive_parameter_text_returns_the_v3_text_undecoded(monkeypatch):
    from nni.runtime.trial_command_channel.v3 import TrialCommandChannelV3

    text = '{"parameter_id": 1, "parameters": {"strategy": {"__symbol__": "os.system"}}}'
    channel = TrialCommandChannelV3.__new__(TrialCommandChannelV3)
    http = _FakeHttp({"type": "parameter", "parameter": text})
    setattr(channel, nni_compat.V3_HTTP_CHANNEL, http)
    monkeypatch.setattr(nni_compat, "get_default_trial_command_channel", lambda: channel)
    assert nni_compat.receive_parameter_text() == text
    assert http.sent == [{"type": "request_parameter"}]
    http.answer = None
    assert nni_compat.receive_parameter_text() is None


def test_receive_parameter_text_reads_the_legacy_parameter_file(monkeypatch, tmp_path):
    from nni.runtime.trial_command_channel.local_legacy import LocalLegacyTrialCommandChannel

    text = '{"parameter_id": 2, "parameters": {"seed": 1}}'
    (tmp_path / "parameter.cfg").write_text(text)
    channel = LocalLegacyTrialCommandChannel.__new__(LocalLegacyTrialCommandChannel)
    channel._sysdir, channel._param_index = str(tmp_path), 0  # noqa: SLF001 (what NNI's __init__ sets)
    monkeypatch.setattr(nni_compat, "get_default_trial_command_channel", lambda: channel)
    assert nni_compat.receive_parameter_text() == text
    assert nni_compat.receive_parameter_text() is None  # one record per trial
    monkeypatch.setattr(nni_compat, "get_default_trial_command_channel", lambda: object())
    with pytest.raises(nni_compat.UnsupportedChannel):
        nni_compat.receive_parameter_text()


def _nni_manager_schema() -> str:
    """The ``create table`` statements of the NNI manager that this NNI ships (``nni_node``)."""
    import nni_node

    source = Path(nni_node.__path__[0]) / "core" / "sqlDatabase.js"
    assert source.is_file(), f"NNI's manager no longer has {source}: check where it creates nni.sqlite"
    text = source.read_text(encoding="utf-8")
    match = re.search(r"const createTables = `(.*?)`;", text, re.S)
    assert match, f"{source}: no `createTables` SQL any more; NNI changed how it creates its database"
    assert "'nni.sqlite'" in text, f"{source}: the database is no longer named nni.sqlite"
    return match.group(1)


def test_the_experiment_database_has_the_tables_and_columns_the_report_reads():
    connection = sqlite3.connect(":memory:")
    try:
        connection.executescript(_nni_manager_schema())
        for table, columns in nni_compat.DATABASE_COLUMNS.items():
            present = {row[1] for row in connection.execute(f"pragma table_info({table})")}
            assert present, f"NNI's experiment database has no table {table} any more"
            missing = sorted(set(columns) - present)
            assert not missing, f"NNI's table {table} lost the column(s) {missing}"
        connection.execute("insert into ExperimentProfile (params, id, startTime, endTime, revision) "
                           "values ('{}', 'abc', 1, 2, 0)")
        connection.execute("insert into TrialJobEvent (timestamp, trialJobId, event) values (5, 't', 'WAITING')")
        rows = nni_compat.read_experiment_database(connection)
    finally:
        connection.close()
    assert rows.profile == ("{}", "abc", 1, 2) and rows.events == [(5, "t", "WAITING", None, None, None)]
    assert rows.metrics == []


@pytest.mark.parametrize("attribute,pattern", [
    ("_arch_alpha", r"[\w)\]]\._arch_alpha\b|[\"']_arch_alpha[\"']"),
    ("_optimizer_progress", r"[\w)\]]\._optimizer_progress\b|[\"']_optimizer_progress[\"']"),
    ("nni.trial._params", r"trial\._params\b|trial,\s*[\"']_params[\"']"),
    ("TrialCommandChannelV3._channel", r"\._channel\b|[\"']_channel[\"']"),
    ("LocalLegacyTrialCommandChannel._sysdir", r"\._sysdir\b|[\"']_sysdir[\"']"),
    ("LocalLegacyTrialCommandChannel._param_index", r"\._param_index\b|[\"']_param_index[\"']"),
    ("LocalLegacyTrialCommandChannel._request_next_parameter", r"_request_next_parameter\b"),
    ("DifferentiableMixedLayer._softmax", r"[\w)\]]\._softmax\b|[\"']_softmax[\"']"),
    ("nni.experiment.launcher._check_rest_server", r"_check_rest_server\b"),
])
def test_private_names_are_used_only_in_the_compat_modules(attribute, pattern):
    root = Path(__file__).resolve().parents[1]
    allowed = {root / "strategies" / "nni_compat.py", root / "ruas_nni" / "search" / "nni_compat.py"}
    users = [str(path.relative_to(root)) for package in ("ruas_nni", "search_spaces", "strategies")
             for path in (root / package).rglob("*.py")
             if path not in allowed and re.search(pattern, path.read_text(encoding="utf-8"))]
    assert not users, f"NNI's private {attribute} used outside the compat modules: {users}"


def test_the_launcher_checks_the_manager_with_check_rest_server():
    from nni.experiment import launcher, rest

    check = getattr(launcher, nni_compat.REST_CHECK, None)
    assert check is not None, f"nni.experiment.launcher has no {nni_compat.REST_CHECK!r} any more"
    assert list(inspect.signature(check).parameters) == ["port", "retry", "url_prefix"], (
        f"NNI changed the signature of launcher.{nni_compat.REST_CHECK}")
    assert any(nni_compat.REST_CHECK in f.__code__.co_names for f in vars(launcher).values()
               if inspect.isfunction(f) and f is not check), f"nothing in the launcher calls {nni_compat.REST_CHECK}"
    assert list(inspect.signature(rest.get).parameters) == ["port", "api", "prefix"]


def test_experiment_start_stops_the_manager_at_exit():
    from nni.experiment import Experiment

    source = inspect.getsource(Experiment.start)
    assert "atexit.register(self.stop)" in source, "NNI's Experiment.start no longer stops the manager at exit"

    class Started:
        def stop(self) -> None:
            raise AssertionError("forgotten")

    started = Started()
    atexit.register(started.stop)
    nni_compat.forget_at_exit(started)  # else the interpreter's exit would raise


def test_registered_experiment_dir_reads_nnictls_list(tmp_path, monkeypatch):
    from nni.tools.nnictl import config_utils

    assert hasattr(config_utils.Experiments, "get_all_experiments")
    monkeypatch.setattr(config_utils.Experiments.__init__, "__defaults__", (str(tmp_path),))
    config_utils.Experiments().add_experiment("abc", 8080, 0, "local", "x", logDir=str(tmp_path / "logs"))
    assert nni_compat.registered_experiment_dir("abc") == tmp_path / "logs" / "abc"
    assert nni_compat.registered_experiment_dir("other") is None


def test_set_nni_log_level_outlasts_nnis_own_logging_setup():
    import logging

    logger = logging.getLogger("nni")
    before = logger.level
    try:
        nni_compat.set_nni_log_level(logging.ERROR)
        import nni.runtime.log  # noqa: F401 - already imported: its import-time INFO does not come back

        assert logger.level == logging.ERROR
    finally:
        logger.setLevel(before)


# NNI's public API (its documented names) that the project imports outside the compat modules; anything
# else of NNI (``nni.runtime``, ``nni.experiment.launcher`` / ``rest``, ``nni.tools``, supermodules,
# private attributes) is reached only through strategies/nni_compat.py and ruas_nni/search/nni_compat.py.
PUBLIC_NNI = {
    "nni": {"*", "get_current_parameter", "report_intermediate_result", "report_final_result", "load", "trace", "choice"},
    "nni.experiment": {"AlgorithmConfig", "Experiment", "RemoteConfig", "RemoteMachineConfig", "RunMode"},
    # Mutable, ensure_frozen, frozen_context and model_context: NNI's documented way for a model space to
    # make choices in its __init__ (RUASSpace.scalable(); nni.mutable.frozen's and nni.nas.space's __all__)
    "nni.mutable": {"Categorical", "MutableExpression", "label_scope", "Mutable", "ensure_frozen", "frozen_context"},
    "nni.nas": {"strategy"},
    "nni.nas.evaluator": {"FunctionalEvaluator"},
    "nni.nas.evaluator.pytorch": {"Lightning", "LightningModule", "Trainer"},
    "nni.nas.evaluator.pytorch.lightning": {"LightningModule"},
    "nni.nas.execution": {"SequentialExecutionEngine"},
    "nni.nas.experiment": {"NasExperiment"},
    "nni.nas.nn.pytorch": {"LayerChoice", "ModelSpace"},
    "nni.nas.oneshot.pytorch.differentiable": {"DartsLightningModule"},
    "nni.nas.oneshot.pytorch.profiler": {"ExpectationProfilerPenalty"},
    "nni.nas.profiler": {"ExpressionProfiler"},
    "nni.nas.space": {"RawFormatModelSpace", "model_context"},
    "nni.nas.strategy": {"*", "DARTS", "GumbelDARTS", "Strategy"},
}
"""``module: names`` imported with ``from module import name`` (``"*"``: ``import module`` itself; for
``nni``, the names also used as ``nni.name``)."""

COMPAT_MODULES = ("strategies/nni_compat.py", "ruas_nni/search/nni_compat.py")


def nni_uses_outside_the_allow_list(path: str, source: str) -> list[str]:
    """``path:line name`` of every NNI name that ``source`` imports or reaches as ``nni.name`` and that
    :data:`PUBLIC_NNI` does not list."""
    found = []
    for node in ast.walk(ast.parse(source, path)):
        if isinstance(node, ast.Import):
            names = [(alias.name, "*") for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and not node.level:
            names = [(node.module or "", alias.name) for alias in node.names]
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "nni":
            names = [("nni", node.attr)]
        else:
            continue
        for module, name in names:
            if module.split(".")[0] == "nni" and name not in PUBLIC_NNI.get(module, ()):
                found.append(f"{path}:{node.lineno} {module if name == '*' else module + '.' + name}")
    return found


def test_nni_outside_the_compat_modules_is_public_api_only():
    root = Path(__file__).resolve().parents[1]
    found = []
    for package in ("ruas_nni", "search_spaces", "strategies"):
        for path in sorted((root / package).rglob("*.py")):
            relative = str(path.relative_to(root))
            if relative not in COMPAT_MODULES:
                found += nni_uses_outside_the_allow_list(relative, path.read_text(encoding="utf-8"))
    assert not found, ("NNI internals used outside the compat modules (move them into one, or add a public name "
                       "to PUBLIC_NNI):\n" + "\n".join(found))


def test_the_allow_list_scan_catches_internals():
    source = ("import nni\nimport nni.runtime.log\nfrom nni.experiment import launcher, Experiment\n"
              "from nni.nas.oneshot.pytorch.supermodule.differentiable import DifferentiableMixedLayer\n"
              "def f():\n    from nni.tools.nnictl.config_utils import Experiments\n    return nni.trial._params\n")
    assert nni_uses_outside_the_allow_list("probe.py", source) == [
        "probe.py:2 nni.runtime.log", "probe.py:3 nni.experiment.launcher",
        "probe.py:4 nni.nas.oneshot.pytorch.supermodule.differentiable.DifferentiableMixedLayer",
        "probe.py:6 nni.tools.nnictl.config_utils.Experiments", "probe.py:7 nni.trial"]
