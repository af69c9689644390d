"""One trial of the strategy comparison: search -> train -> evaluate, reported to NNI.

``python -m ruas_nni.experiments.trial`` is the trial command of the experiments that ``ruas-nni compare`` and
``examples/compare_experiment.yaml`` start. The tuner (GridSearch over the search space
``{"strategy": choice, "seed": choice}``) gives each trial its strategy and seed through
:func:`nni.get_next_parameter`; everything else (data folders, epochs, crops, training steps) is a
flag of the trial command, the same for every trial. A trial

1. **searches** an architecture with its strategy (``cooperative``, ``separate``, ``joint``,
   ``darts``, ``gumbel-darts``) on the unpaired images, reporting the validation loss of every search
   epoch as an NNI intermediate result (``{"default": val_loss, ...}``), and writes ``search/arch.json``
   (genotype plus the architecture probabilities);
2. **trains** the exported network for ``--train-steps`` steps with the reference recipe;
3. **evaluates** it on the paired images (PSNR / SSIM as ``ruas-nni evaluate`` computes them), counts
   its parameters and FLOPs (600 x 400 input, paper Table 2), and reports the final metric
   ``{"default": psnr, "psnr", "ssim", "params", "flops", "search_seconds", "train_seconds",
   "strategy", "seed", "genotype"}`` (the genotype as a JSON string, which the web UI shows as text).

Everything goes to the trial's output folder (``$NNI_OUTPUT_DIR``): ``search/arch.json``,
``train/model.pt``, ``result.json``, and TensorBoard logs under ``tensorboard/`` (``search/``,
``train/``, ``eval/``), where the web UI's TensorBoard button looks. Outside NNI (no
``NNI_PLATFORM``), ``--strategy``, ``--seed`` and ``--out`` say what to run and where, and the results
are printed instead of reported.
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import json
import logging
import os
import re
import sys
import time
import urllib.error
import urllib.request
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence
from urllib.parse import urlsplit

import nni
import pytorch_lightning as pl
import torch
from nni.runtime.trial_command_channel import get_default_trial_command_channel, set_default_trial_command_channel
from torch.utils.tensorboard import SummaryWriter

from ..base.atomic import atomic_write
from ..base.errors import RuasError, UsageError
from ..inference.benchmark import count_flops
from ..inference.evaluation import evaluate, find_pairs
from ..inference.metrics import count_parameters
from ..search import runner as search
from ..search.config import STRATEGIES, load_search_config
from ..search.nni_compat import set_trial_parameters, trial_parameters
from ..search.runner import run_search
from ..training.config import load_train_config
from ..training.run import prepare_training, train

__all__ = [
    "STRATEGIES",
    "FLOPS_SIZE",
    "TrialSettings",
    "SearchOutcome",
    "TrialResult",
    "Reporter",
    "NniReporter",
    "PrintReporter",
    "search_architecture",
    "run_trial",
    "link_tensorboard_for_web_ui",
    "ValidationLossPerEpoch",
    "validation_loss_callback",
    "adopt_manager_parameters",
    "main",
]

_log = logging.getLogger(__name__)

# STRATEGIES (imported above from ruas_nni.search.config) are the search strategies a trial can run
# (those of ``ruas-nni search``): RUAS's cooperative bilevel search, its two ablations (paper Fig. 9:
# ``separate``, naive ``joint``), NNI's ``DARTS`` and ``GumbelDARTS``.

FLOPS_SIZE = (600, 400)
"""Width and height at which FLOPs are counted (the paper's Table 2 uses 600 x 400 LOL images)."""

TENSORBOARD_DIR = "tensorboard"
"""The folder inside a trial's output folder where NNI's web UI looks for TensorBoard logs."""


@dataclass(frozen=True)
class TrialSettings:
    """What every trial of an experiment shares (the flags of the trial command)."""

    data: tuple[str, ...]
    """Folders of unpaired low-light images (search and training)."""
    eval_data: str
    """Paired folder (``low/``, ``high/``) for PSNR / SSIM; never searched or trained on."""
    epochs: int = 20
    """Search epochs."""
    steps: int | None = None
    """Search steps (batches) per epoch; ``None``: one pass over the training half of the images."""
    crop: int = 320
    """Side of the random square crops of search and training."""
    train_steps: int = 800
    """Training steps of the searched network (reference: 800)."""
    device: str = "cpu"
    """``cpu``, ``cuda`` or ``auto`` for search and training."""
    threads: int | None = None
    """CPU threads of torch in this trial (``None``: torch's default, all cores)."""
    search_config: str | None = None
    """YAML of ``ruas-nni search`` for every other search setting (flags above override it)."""
    train_config: str | None = None
    """YAML of ``ruas-nni train`` for every other training setting (flags above override it)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "data", tuple(str(d) for d in self.data))
        for name in ("epochs", "crop", "train_steps"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise UsageError(f"--{name.replace('_', '-')} must be a positive integer, got {value!r}")
        if self.steps is not None and self.steps < 1:
            raise UsageError(f"--steps must be a positive integer, got {self.steps!r}")
        if self.threads is not None and self.threads < 1:
            raise UsageError(f"--threads must be a positive integer, got {self.threads!r}")
        if self.device not in ("cpu", "cuda", "auto"):
            raise UsageError(f"--device must be cpu, cuda or auto, got {self.device!r}")


@dataclass
class SearchOutcome:
    """What a search left behind (``arch.json`` holds the same, in the format of ``ruas-nni search``)."""

    genotype: dict[str, list[str] | None]
    """``{"iem": [7 ops], "nrm": [7 ops]}``."""
    probs: dict[str, list[list[float]] | None]
    """``{"iem": 7 x 7, "nrm": 7 x 7}``: per edge (rows e1..e7) the softmax of its architecture weights
    over the operations (columns, :data:`ruas_nni.model.ops.OPERATION_NAMES` order), as ``arch.json`` holds it."""
    seconds: float
    arch_path: Path
    val_losses: list[float] = field(default_factory=list)
    """Validation loss after every search epoch."""


@dataclass
class TrialResult:
    """The final metric of a trial (what NNI stores) plus where its files are."""

    metrics: dict[str, Any]
    out: Path


class Reporter:
    """Where a trial's results go: NNI, or the terminal outside NNI."""

    def intermediate(self, metrics: Mapping[str, Any]) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def final(self, metrics: Mapping[str, Any]) -> None:  # pragma: no cover - interface
        raise NotImplementedError


class NniReporter(Reporter):
    """Reports through NNI's trial API (``nni.report_intermediate_result`` / ``report_final_result``).

    Create it after the trial received its parameters. NNI's one-shot strategies run their supernet
    in a :class:`~nni.nas.execution.SequentialExecutionEngine`, which replaces NNI's trial command
    channel and parameter record while the search runs (so that the search's own evaluator reports
    to it); results reported from inside the search would vanish there and the final result would
    carry the engine's parameter id. The reporter therefore keeps this trial's channel and record and
    puts them back around every report."""

    def __init__(self) -> None:
        self._channel = get_default_trial_command_channel()
        self._params = trial_parameters()

    @contextlib.contextmanager
    def _trial_channel(self) -> Iterator[None]:
        channel, params = get_default_trial_command_channel(), trial_parameters()
        set_default_trial_command_channel(self._channel)
        set_trial_parameters(self._params)
        try:
            yield
        finally:
            set_default_trial_command_channel(channel)
            set_trial_parameters(params)

    def intermediate(self, metrics: Mapping[str, Any]) -> None:
        with self._trial_channel():
            nni.report_intermediate_result(dict(metrics))

    def final(self, metrics: Mapping[str, Any]) -> None:
        with self._trial_channel():
            nni.report_final_result(dict(metrics))


class PrintReporter(Reporter):
    """Prints results as JSON lines (a trial run by hand)."""

    def intermediate(self, metrics: Mapping[str, Any]) -> None:
        print("intermediate " + json.dumps(dict(metrics)), flush=True)

    def final(self, metrics: Mapping[str, Any]) -> None:
        print("final " + json.dumps(dict(metrics)), flush=True)


# --------------------------------------------------------------------------------------------
# TensorBoard where the web UI finds it


_LOCAL_V3_OUTPUT = re.compile(r"^(?P<root>.+)[/\\]environments[/\\][^/\\]+[/\\]trials[/\\](?P<trial>[^/\\]+)$")


def link_tensorboard_for_web_ui(output_dir: Path, trial_id: str | None) -> Path | None:
    """Make NNI 3.0's TensorBoard button find ``output_dir/tensorboard`` on the local training service.

    NNI's convention is ``$NNI_OUTPUT_DIR/tensorboard``, and that is where the logs are written. The
    NNI 3.0 manager, however, runs local trials in ``<experiment>/environments/local-env/trials/<id>``
    (their ``NNI_OUTPUT_DIR``) while its TensorBoard manager looks in ``<experiment>/trials/<id>/output/
    tensorboard`` (``V3asV1.getTrialOutputLocalPath``). When the output folder has the first form,
    this links the second to the first (the manager resolves links before starting TensorBoard) and
    returns the link; otherwise it does nothing and returns ``None``.
    """
    match = _LOCAL_V3_OUTPUT.match(str(output_dir))
    if match is None or not trial_id or match.group("trial") != trial_id:
        return None
    link = Path(match.group("root")) / "trials" / trial_id / "output" / TENSORBOARD_DIR
    target = output_dir / TENSORBOARD_DIR
    target.mkdir(parents=True, exist_ok=True)
    if link.is_symlink() or link.exists():
        return link
    try:
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(target, target_is_directory=True)
    except OSError as exc:  # no symlinks (some file systems): the logs stay in NNI_OUTPUT_DIR only
        _log.warning("cannot link %s -> %s for the web UI's TensorBoard button: %s", link, target, exc)
        return None
    return link


def _link_dir(link: Path, target: Path) -> None:
    """Make ``link`` (a folder another component writes to) a relative link to the folder ``target``."""
    target.mkdir(parents=True, exist_ok=True)
    if link.is_symlink() or link.exists():
        return
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(os.path.relpath(target, link.parent), target_is_directory=True)


# --------------------------------------------------------------------------------------------
# search


def _validation_losses(module: Any, images: Any) -> dict[str, float]:
    """Mean reference-free losses of the supernet (current architecture weights) over ``images``."""
    totals: dict[str, float] = {}
    device = next(module.parameters()).device
    with torch.no_grad():
        for index in range(len(images)):
            y = images[index].unsqueeze(0).to(device)
            for key, value in module.losses(y).items():
                totals[key] = totals.get(key, 0.0) + float(value)
    return {key: value / max(len(images), 1) for key, value in totals.items()}


class ValidationLossPerEpoch(pl.Callback):
    """After every epoch of the search, the reference-free losses ``{"loss", "iem", "nrm"}`` of the
    supernet on the search's validation images (the upper level's half), logged as ``val/*`` and passed
    to ``on_epoch(epoch, losses)``."""

    def __init__(self, on_epoch: Callable[[int, dict[str, float]], None]) -> None:
        self.on_epoch = on_epoch

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: Any) -> None:
        data = getattr(trainer, "datamodule", None)
        images = getattr(data, "val_set", None)
        if images is None or len(images) == 0:
            return
        losses_module = getattr(pl_module, "training_module", pl_module)
        was_training = losses_module.training
        losses_module.eval()
        try:
            losses = _validation_losses(losses_module, images)
        finally:
            losses_module.train(was_training)
        logger = getattr(trainer.logger, "experiment", None)
        if logger is not None and hasattr(logger, "add_scalar"):
            for key, value in losses.items():
                logger.add_scalar(f"val/{key}", value, trainer.current_epoch + 1)
        self.on_epoch(trainer.current_epoch, losses)


def validation_loss_callback(on_epoch: Callable[[int, dict[str, float]], None]) -> ValidationLossPerEpoch:
    """A Lightning callback for the search's trainer: :class:`ValidationLossPerEpoch` calling ``on_epoch``."""
    return ValidationLossPerEpoch(on_epoch)


@contextlib.contextmanager
def _extra_search_callbacks(callbacks: Sequence[Any]) -> Iterator[dict[str, Any]]:
    """Hand ``callbacks`` to :func:`ruas_nni.search.runner.run_search`'s trainer.

    ``run_search`` takes no callbacks yet; until it does, this wraps the module's callback factory for
    the duration of one call. Yields the keyword arguments to pass to ``run_search`` (``callbacks=``
    once it accepts them)."""
    if "callbacks" in inspect.signature(search.run_search).parameters:
        yield {"callbacks": list(callbacks)}
        return
    factory = getattr(search, "_callbacks", None)
    if factory is None:
        _log.warning("run_search accepts no callbacks: no validation loss per search epoch will be reported")
        yield {}
        return

    def with_extra(*args: Any, **kwargs: Any) -> list[Any]:
        return [*factory(*args, **kwargs), *callbacks]

    search._callbacks = with_extra
    try:
        yield {}
    finally:
        search._callbacks = factory


def search_architecture(strategy: str, seed: int, settings: TrialSettings, out: Path,
                        on_epoch: Callable[[int, dict[str, float]], None] | None = None) -> SearchOutcome:
    """Search ``RUASSpace`` with ``strategy`` exactly as ``ruas-nni search`` does
    (:func:`ruas_nni.search.runner.run_search`; other settings from ``settings.search_config``) into ``out``
    (``arch.json``, TensorBoard logs, checkpoint). ``on_epoch(epoch, {"loss", "iem", "nrm"})`` receives
    the validation losses after every epoch."""
    overrides = {"data": list(settings.data), "strategy": strategy, "seed": seed, "epochs": settings.epochs,
                 "steps": settings.steps, "crop": settings.crop, "device": settings.device, "progress": False,
                 "threads": settings.threads}
    config = load_search_config(settings.search_config, overrides)
    val_losses: list[float] = []

    def epoch_done(epoch: int, losses: dict[str, float]) -> None:
        val_losses.append(losses["loss"])
        if on_epoch is not None:
            on_epoch(epoch, losses)

    with warnings.catch_warnings(), _extra_search_callbacks([validation_loss_callback(epoch_done)]) as extra:
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        result = run_search(config, out, **extra)
    arch = result.arch
    genotype = {"iem": list(arch["iem"]), "nrm": list(arch["nrm"]) if arch.get("nrm") is not None else None}
    return SearchOutcome(genotype, dict(arch.get("probs") or {}), float(result.seconds), result.arch_path, val_losses)


# --------------------------------------------------------------------------------------------
# the whole trial


def _count_flops(network: Any) -> float:
    width, height = FLOPS_SIZE
    return float(count_flops(network, width, height)["whole"]["flops"])


def score_checkpoint(checkpoint: Any, pairs: Sequence[Any]) -> dict[str, Any]:
    """``{"psnr", "ssim", "params", "flops"}`` of a trained checkpoint on paired images: the
    measurements every trial reports."""
    with torch.no_grad():
        scores = evaluate(checkpoint, pairs).mean
        network = checkpoint.build()
        return {"psnr": scores.psnr, "ssim": scores.ssim, "params": count_parameters(network),
                "flops": _count_flops(network)}


def _log_eval_scalars(tensorboard_dir: Path, metrics: Mapping[str, Any]) -> None:
    writer = SummaryWriter(log_dir=str(tensorboard_dir / "eval"))
    try:
        for key in ("psnr", "ssim", "params", "flops", "search_seconds", "train_seconds"):
            writer.add_scalar(f"eval/{key}", float(metrics[key]), 0)
        writer.add_text("genotype", f"`{metrics['genotype']}`", 0)
    finally:
        writer.close()


def run_trial(settings: TrialSettings, strategy: str, seed: int, out: str | os.PathLike[str],
              reporter: Reporter) -> TrialResult:
    """Search with ``strategy`` and ``seed``, train the result, evaluate it; report everything."""
    if strategy not in STRATEGIES:
        raise UsageError(f"unknown strategy {strategy!r}; expected one of {', '.join(STRATEGIES)}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if settings.threads is not None:
        torch.set_num_threads(settings.threads)
    pairs = find_pairs(settings.eval_data, "eval_data")  # check before spending time on the search
    tensorboard_dir = out / TENSORBOARD_DIR

    def on_epoch(epoch: int, losses: dict[str, float]) -> None:
        metrics = {"default": losses["loss"], "val_loss": losses["loss"], "epoch": epoch + 1}
        metrics.update({f"val_{key}": value for key, value in losses.items() if key != "loss"})
        reporter.intermediate(metrics)

    # Search and training write TensorBoard logs into their own folders; links put them under
    # tensorboard/, the one folder of the trial that the web UI's TensorBoard button opens.
    _link_dir(out / "search" / TENSORBOARD_DIR, tensorboard_dir / "search")
    outcome = search_architecture(strategy, seed, settings, out / "search", on_epoch)

    overrides = {"arch": str(outcome.arch_path), "data": list(settings.data), "steps": settings.train_steps,
                 "crop": settings.crop, "seed": seed}
    config = load_train_config(settings.train_config, overrides)
    training_run = prepare_training(config, out / "train")
    _link_dir(out / "train" / TENSORBOARD_DIR, tensorboard_dir / "train")
    for name in ("pytorch_lightning", "lightning_fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)
    trained = train(training_run, device=settings.device, progress=False)

    measured = score_checkpoint(trained.checkpoint, pairs)
    metrics: dict[str, Any] = {
        "default": measured["psnr"],
        **measured,
        "search_seconds": round(outcome.seconds, 3),
        "train_seconds": round(trained.seconds, 3),
        "strategy": strategy,
        "seed": seed,
        "genotype": json.dumps(outcome.genotype, separators=(",", ":")),
    }
    _log_eval_scalars(tensorboard_dir, metrics)
    record = {"metrics": metrics, "settings": asdict(settings), "probs": outcome.probs,
              "val_losses": outcome.val_losses, "model": str(trained.model_path), "eval_images": len(pairs)}
    with atomic_write(out / "result.json") as handle:
        handle.write((json.dumps(record, indent=2) + "\n").encode())
    reporter.final(metrics)
    return TrialResult(metrics, out)


# --------------------------------------------------------------------------------------------
# command line (the trial command)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m ruas_nni.experiments.trial",
        description="One trial of `ruas-nni compare`: search, train and evaluate; strategy and seed come from "
                    "NNI's tuner (or --strategy / --seed outside NNI).")
    parser.add_argument("--data", action="append", required=True, metavar="DIR", help="unpaired low-light images")
    parser.add_argument("--eval-data", required=True, metavar="PAIRED_DIR", help="folder with low/ and high/")
    parser.add_argument("--epochs", type=int, default=20, help="search epochs (default 20)")
    parser.add_argument("--steps", type=int, default=None, help="search steps per epoch (default: all batches)")
    parser.add_argument("--crop", type=int, default=320, help="crop side of search and training (default 320)")
    parser.add_argument("--train-steps", type=int, default=800, help="training steps (default 800)")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda", "auto"), help="cpu (default), cuda or auto")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads of torch (default: all cores)")
    parser.add_argument("--search-config", default=None, metavar="YAML", help="other search settings (ruas-nni search)")
    parser.add_argument("--train-config", default=None, metavar="YAML", help="other training settings (ruas-nni train)")
    parser.add_argument("--strategy", choices=STRATEGIES, default=None, help="outside NNI: the strategy")
    parser.add_argument("--seed", type=int, default=None, help="outside NNI: the seed (default 0)")
    parser.add_argument("--out", default=None, help="outside NNI: output folder (inside: $NNI_OUTPUT_DIR)")
    return parser


def _manager_record_text(timeout: float = 20.0) -> str | None:
    """The parameter record that the NNI manager lists for this trial (the text it sent, as its REST
    API ``/trial-jobs/<id>`` shows it); ``None`` when it cannot be read."""
    channel = os.environ.get("NNI_TRIAL_COMMAND_CHANNEL", "")
    trial_id = os.environ.get("NNI_TRIAL_JOB_ID", "")
    parts = urlsplit(channel)
    if parts.scheme not in ("http", "ws") or not parts.hostname or not parts.port or not trial_id:
        return None
    url = f"http://{parts.hostname}:{parts.port}/api/v1/nni/trial-jobs/{trial_id}"
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                job = json.loads(response.read().decode("utf-8"))
            records = job.get("hyperParameters") or []
            if records and isinstance(records[-1], str):
                return records[-1]
        except (urllib.error.URLError, OSError, ValueError):
            pass
        if time.monotonic() > deadline:
            return None
        time.sleep(0.5)


def adopt_manager_parameters() -> bool:
    """Make this trial run the parameters that the NNI manager (and its web UI) lists for it.

    NNI 3.0's local training service queues the parameters of the trials it starts and hands them to
    whichever trial asks first (``V3asV1.onRequestParameter``). With several trials starting at once a
    trial can receive the parameters recorded for another (microsoft/nni#5726): the web UI would list
    one strategy's (or architecture's) result under another's name, and a multi-trial strategy would
    learn from the wrong architecture. Call this right after :func:`nni.get_next_parameter`: when the
    manager lists other parameters for this trial id, they replace the received ones (parameter id
    included, so the reports match them too). Every parameter set still runs exactly once. Returns
    whether anything was replaced.
    """
    current = trial_parameters()
    if not isinstance(current, dict):
        return False
    text = _manager_record_text()
    if text is None:
        return False
    try:
        record = nni.load(text)
    except Exception:  # an unexpected format: keep what was received
        return False
    if not isinstance(record, dict) or "parameters" not in record:
        return False
    if record.get("parameter_id") == current.get("parameter_id"):
        return False
    _log.warning("NNI handed this trial parameter set %s but lists %s for it (microsoft/nni#5726); running the latter",
                 current.get("parameter_id"), record.get("parameter_id"))
    set_trial_parameters(record)
    return True


def _nni_parameters() -> dict[str, Any]:
    """This trial's parameters from NNI, consistent with what the web UI shows for it."""
    nni.get_next_parameter()
    adopt_manager_parameters()
    parameters = nni.get_current_parameter()
    return dict(parameters) if isinstance(parameters, Mapping) else {}


def _parameters(args: argparse.Namespace) -> tuple[str, int, Reporter, Path]:
    """Strategy, seed, reporter and output folder: from NNI when running as a trial, else from flags."""
    in_nni = bool(os.environ.get("NNI_PLATFORM")) and os.environ.get("NNI_PLATFORM") != "unittest"
    if in_nni:
        parameters = _nni_parameters()
        strategy = parameters.get("strategy", args.strategy)
        seed = parameters.get("seed", args.seed if args.seed is not None else 0)
        out = Path(os.environ.get("NNI_OUTPUT_DIR") or args.out or ".")
        link_tensorboard_for_web_ui(out, os.environ.get("NNI_TRIAL_JOB_ID"))
        reporter: Reporter = NniReporter()
    else:
        strategy, seed = args.strategy, args.seed if args.seed is not None else 0
        if args.out is None:
            raise UsageError("--out is required outside an NNI experiment")
        out = Path(args.out)
        reporter = PrintReporter()
    if strategy is None:
        raise UsageError(f"no strategy: the search space must have 'strategy' (one of {', '.join(STRATEGIES)}), "
                         "or pass --strategy")
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise UsageError(f"seed must be an integer, got {seed!r}")
    return str(strategy), seed, reporter, out


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = TrialSettings(tuple(args.data), args.eval_data, args.epochs, args.steps, args.crop,
                                 args.train_steps, args.device, args.threads, args.search_config, args.train_config)
        strategy, seed, reporter, out = _parameters(args)
        _log.info("trial: strategy %s, seed %d, output %s", strategy, seed, out)
        result = run_trial(settings, strategy, seed, out, reporter)
    except RuasError as exc:
        print(f"ruas-nni trial: error: {exc.spelled(lambda key: '--' + key.replace('_', '-'))}", file=sys.stderr)
        return exc.exit_code
    _log.info("trial done: PSNR %.3f dB, SSIM %.4f", result.metrics["psnr"], result.metrics["ssim"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
