"""One trial of an NNI experiment, as library code: search -> train -> evaluate, and the trial's side
of NNI (its parameters, its reports, its TensorBoard folder for the web UI).

The comparison's trial command (:mod:`ruas_nni.experiments.trial`, the command line only) runs
:func:`run_trial`; multi-trial NAS (:mod:`ruas_nni.experiments.nas`) uses its scoring, parameters and
TensorBoard pieces. What a trial does, step by step, and what it writes, is described there.

The NNI manager is unauthenticated, so the parameters it sends are untrusted: :func:`nni_parameters`
reads them as plain JSON (:func:`plain_json`, never ``nni.load``, which can import and call what the
text names). NNI's private state is reached only through :mod:`ruas_nni.search.nni_compat`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import re
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import nni
import pytorch_lightning as pl
import torch
from torch.utils.tensorboard import SummaryWriter

from ..base.atomic import atomic_write
from ..base.errors import UsageError
from ..base.images import read_image
from ..inference.benchmark import count_flops
from ..inference.evaluation import evaluate, find_pairs
from ..inference.latency import measure_ms
from ..inference.metrics import count_parameters, score_image
from ..search.config import load_search_config
from ..search.nni_compat import (
    UnsupportedChannel,
    as_trial,
    current_trial,
    derived_choice,
    listed_parameter_text,
    mixed_layers,
    receive_parameter_text,
    set_trial_parameters,
    trial_parameters,
)
from ..search.runner import run_search
from ..training.config import load_train_config
from ..training.run import prepare_training, train
from .settings import ParameterError, TrialSettings, validate_parameters

__all__ = [
    "FLOPS_SIZE",
    "TENSORBOARD_DIR",
    "derived_network",
    "score_derived",
    "load_pairs",
    "SearchOutcome",
    "TrialResult",
    "Reporter",
    "NniReporter",
    "PrintReporter",
    "search_architecture",
    "score_checkpoint",
    "require_eval_data",
    "run_trial",
    "link_tensorboard_for_web_ui",
    "link_dir",
    "ValidationLossPerEpoch",
    "validation_loss_callback",
    "plain_json",
    "adopt_manager_parameters",
    "nni_parameters",
]

_log = logging.getLogger(__name__)

FLOPS_SIZE = (600, 400)
"""Width and height at which FLOPs are counted (the paper's Table 2 uses 600 x 400 LOL images)."""

TENSORBOARD_DIR = "tensorboard"
"""The folder inside a trial's output folder where NNI's web UI looks for TensorBoard logs."""


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
    val_psnrs: list[float] = field(default_factory=list)
    """PSNR (dB) on the evaluation pairs of the network derived after every search epoch."""


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
        self._trial = current_trial()

    def intermediate(self, metrics: Mapping[str, Any]) -> None:
        with as_trial(self._trial):
            nni.report_intermediate_result(dict(metrics))

    def final(self, metrics: Mapping[str, Any]) -> None:
        with as_trial(self._trial):
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


def link_dir(link: Path, target: Path) -> None:
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


def _derived_choices(supernet: torch.nn.Module) -> dict[Any, str]:
    """Every mixed layer of the supernet with the operation the search would derive for it now (the
    argmax of its architecture weights, :func:`~ruas_nni.search.nni_compat.derived_choice`)."""
    return {layer: derived_choice(layer) for layer in mixed_layers(supernet)}


@contextlib.contextmanager
def derived_network(supernet: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """The supernet acting as the network the search would derive now: each mixed layer returns only
    its argmax operation's output, with the supernet's weights of that operation (forward hooks;
    removed on exit)."""
    handles = []
    for layer, choice in _derived_choices(supernet).items():
        def only_choice(module: Any, args: tuple, kwargs: dict, output: Any, choice: str = choice) -> Any:
            return module[choice](*args, **kwargs)
        handles.append(layer.register_forward_hook(only_choice, with_kwargs=True))
    try:
        yield supernet
    finally:
        for handle in handles:
            handle.remove()


def score_derived(supernet: torch.nn.Module, images: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> dict[str, float]:
    """``{"psnr", "ssim"}`` (mean over ``images``, pairs of low-light input and ground truth, 3 x H x W
    in [0, 1]) of the network the search would derive now (:func:`derived_network`), scored as
    ``ruas-nni evaluate`` scores (8-bit quantised, :func:`ruas_nni.inference.metrics.score_image`)."""
    device = next(supernet.parameters()).device
    scores = []
    with torch.no_grad(), derived_network(supernet) as network:
        for low, high in images:
            enhanced = network.enhance(low.unsqueeze(0).to(device)).final.clamp(0, 1)[0].cpu()
            scores.append(score_image(enhanced, high))
    count = max(len(scores), 1)
    return {"psnr": sum(s.psnr for s in scores) / count, "ssim": sum(s.ssim for s in scores) / count}


def load_pairs(pairs: Sequence[Any]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The images of paired files, as ``(low, high)`` tensors."""
    images = []
    for pair in pairs:
        low, high = read_image(pair.low).rgb, read_image(pair.high).rgb
        if low.shape != high.shape:
            raise UsageError(f"{pair.name}: input and ground truth differ in size")
        images.append((low, high))
    return images


class ValidationLossPerEpoch(pl.Callback):
    """After every epoch of the search: the reference-free losses ``{"loss", "iem", "nrm"}`` of the
    supernet on the search's validation images (the upper level's half), and, given ``eval_images``
    (paired, never searched on), ``"psnr"`` and ``"ssim"`` of the network the search would derive at
    that point (:func:`score_derived`). Logged as ``val/*`` and passed to ``on_epoch(epoch, values)``."""

    def __init__(self, on_epoch: Callable[[int, dict[str, float]], None],
                 eval_images: Sequence[tuple[torch.Tensor, torch.Tensor]] | None = None) -> None:
        self.on_epoch = on_epoch
        self.eval_images = list(eval_images or [])

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: Any) -> None:
        data = getattr(trainer, "datamodule", None)
        images = getattr(data, "val_set", None)
        if images is None or len(images) == 0:
            return
        losses_module = getattr(pl_module, "training_module", pl_module)
        was_training = losses_module.training
        losses_module.eval()
        try:
            values = _validation_losses(losses_module, images)
            if self.eval_images:
                values.update(score_derived(losses_module.model, self.eval_images))
        finally:
            losses_module.train(was_training)
        logger = getattr(trainer.logger, "experiment", None)
        if logger is not None and hasattr(logger, "add_scalar"):
            for key, value in values.items():
                logger.add_scalar(f"val/{key}", value, trainer.current_epoch + 1)
        self.on_epoch(trainer.current_epoch, values)


def validation_loss_callback(on_epoch: Callable[[int, dict[str, float]], None],
                             eval_images: Sequence[tuple[torch.Tensor, torch.Tensor]] | None = None,
                             ) -> ValidationLossPerEpoch:
    """A Lightning callback for the search's trainer: :class:`ValidationLossPerEpoch` calling ``on_epoch``."""
    return ValidationLossPerEpoch(on_epoch, eval_images)


def search_architecture(strategy: str, seed: int, settings: TrialSettings, out: Path,
                        on_epoch: Callable[[int, dict[str, float]], None] | None = None,
                        eval_images: Sequence[tuple[torch.Tensor, torch.Tensor]] | None = None) -> SearchOutcome:
    """Search ``RUASSpace`` with ``strategy`` exactly as ``ruas-nni search`` does
    (:func:`ruas_nni.search.runner.run_search`; other settings from ``settings.search_config``) into ``out``
    (``arch.json``, TensorBoard logs, checkpoint). ``on_epoch(epoch, {"loss", "iem", "nrm"})`` receives
    the validation losses after every epoch, and with ``eval_images`` also ``"psnr"`` and ``"ssim"``
    of the network the search would derive at that point."""
    overrides = {"data": list(settings.data), "strategy": strategy, "seed": seed, "epochs": settings.epochs,
                 "steps": settings.steps, "crop": settings.crop, "device": settings.device, "progress": False,
                 "threads": settings.threads, "arch_lr": settings.arch_lr}
    config = load_search_config(settings.search_config, overrides)
    val_losses: list[float] = []
    val_psnrs: list[float] = []

    def epoch_done(epoch: int, losses: dict[str, float]) -> None:
        val_losses.append(losses["loss"])
        if "psnr" in losses:
            val_psnrs.append(losses["psnr"])
        if on_epoch is not None:
            on_epoch(epoch, losses)

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        result = run_search(config, out, callbacks=[validation_loss_callback(epoch_done, eval_images)])
    arch = result.arch
    genotype = {"iem": list(arch["iem"]), "nrm": list(arch["nrm"]) if arch.get("nrm") is not None else None}
    return SearchOutcome(genotype, dict(arch.get("probs") or {}), float(result.seconds), result.arch_path, val_losses, val_psnrs)


# --------------------------------------------------------------------------------------------
# the whole trial


def _count_flops(network: Any) -> float:
    width, height = FLOPS_SIZE
    return float(count_flops(network, width, height)["whole"]["flops"])


def score_checkpoint(checkpoint: Any, pairs: Sequence[Any]) -> dict[str, Any]:
    """``{"psnr", "ssim", "params", "flops", "ms"}`` of a trained checkpoint on paired images: the
    measurements every trial reports. ``ms``: the fastest milliseconds per 600x400 image of
    ``ruas-nni enhance``'s optimised engine (:func:`ruas_nni.inference.latency.measure_ms`), measured
    here, beside whatever else runs on the machine."""
    with torch.no_grad():
        scores = evaluate(checkpoint, pairs).mean
        network = checkpoint.build()
        ms = measure_ms([checkpoint.genotype], checkpoint.options, (600, 400), runs=5)[0]
        return {"psnr": scores.psnr, "ssim": scores.ssim, "params": count_parameters(network),
                "flops": _count_flops(network), "ms": round(ms, 3)}


def _log_eval_scalars(tensorboard_dir: Path, metrics: Mapping[str, Any]) -> None:
    writer = SummaryWriter(log_dir=str(tensorboard_dir / "eval"))
    try:
        for key in ("psnr", "ssim", "params", "flops", "ms", "search_seconds", "train_seconds"):
            writer.add_scalar(f"eval/{key}", float(metrics[key]), 0)
        writer.add_text("genotype", f"`{metrics['genotype']}`", 0)
    finally:
        writer.close()


def require_eval_data(settings: TrialSettings) -> str:
    """The paired folder the trial scores on (``settings.eval_data``); a :class:`UsageError` naming
    ``eval_data`` when there is none."""
    if not settings.eval_data:
        raise UsageError("`eval_data`: give a folder with low/ and high/", keys=("eval_data",))
    return settings.eval_data


def run_trial(settings: TrialSettings, strategy: str, seed: int, out: str | os.PathLike[str],
              reporter: Reporter) -> TrialResult:
    """Search with ``strategy`` and ``seed``, train the result, evaluate it; report everything."""
    strategy, seed = validate_parameters({"strategy": strategy, "seed": seed}, settings.strategies)
    if settings.device is None:
        settings = dataclasses.replace(settings, device="cpu")
    eval_data = require_eval_data(settings)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if settings.threads is not None:
        torch.set_num_threads(settings.threads)
    pairs = find_pairs(eval_data, "eval_data")  # check before spending time on the search
    tensorboard_dir = out / TENSORBOARD_DIR

    eval_images = load_pairs(pairs)

    def on_epoch(epoch: int, values: dict[str, float]) -> None:
        # One metric for the web UI's curves and NNI's assessors: PSNR in dB (higher is better) of the
        # network the search would derive now, on the evaluation pairs; SSIM and losses as extras.
        metrics = {"default": values["psnr"], "psnr": values["psnr"], "ssim": values["ssim"],
                   "val_loss": values["loss"], "epoch": epoch + 1}
        metrics.update({f"val_{key}": value for key, value in values.items() if key not in ("loss", "psnr", "ssim")})
        reporter.intermediate(metrics)

    # Search and training write TensorBoard logs into their own folders; links put them under
    # tensorboard/, the one folder of the trial that the web UI's TensorBoard button opens.
    link_dir(out / "search" / TENSORBOARD_DIR, tensorboard_dir / "search")
    outcome = search_architecture(strategy, seed, settings, out / "search", on_epoch, eval_images)

    overrides = {"arch": str(outcome.arch_path), "data": list(settings.data), "steps": settings.train_steps,
                 "crop": settings.crop, "seed": seed}
    config = load_train_config(settings.train_config, overrides)
    training_run = prepare_training(config, out / "train")
    link_dir(out / "train" / TENSORBOARD_DIR, tensorboard_dir / "train")
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
              "val_losses": outcome.val_losses, "val_psnrs": outcome.val_psnrs,
              "model": str(trained.model_path), "eval_images": len(pairs)}
    with atomic_write(out / "result.json") as handle:
        handle.write((json.dumps(record, indent=2) + "\n").encode())
    reporter.final(metrics)
    return TrialResult(metrics, out)


# --------------------------------------------------------------------------------------------
# parameters from the NNI manager


def plain_json(text: Any) -> Any:
    """JSON with no extensions: no NaN or Infinity, and none of ``nni.load``'s object hooks (which
    would import and call what the text names, or unpickle it)."""
    if not isinstance(text, (str, bytes)):
        raise ParameterError("the parameter record is not text")

    def no_constant(name: str) -> Any:
        raise ParameterError(f"the parameter record holds {name}")

    return json.loads(text, parse_constant=no_constant)


def adopt_manager_parameters(loads: Callable[[str], Any] | None = None) -> bool:
    """Make this trial run the parameters that the NNI manager (and its web UI) lists for it.

    NNI 3.0's local training service queues the parameters of the trials it starts and hands them to
    whichever trial asks first (``V3asV1.onRequestParameter``). With several trials starting at once a
    trial can receive the parameters recorded for another (microsoft/nni#5726): the web UI would list
    one strategy's (or architecture's) result under another's name, and a multi-trial strategy would
    learn from the wrong architecture. Call this right after :func:`nni.get_next_parameter`: when the
    manager lists other parameters for this trial id, they replace the received ones (parameter id
    included, so the reports match them too). Every parameter set still runs exactly once. Returns
    whether anything was replaced. ``loads`` decodes the record (default ``nni.load``, which NNI's
    multi-trial NAS needs; the comparison's trial passes plain JSON).
    """
    current = trial_parameters()
    if not isinstance(current, dict):
        return False
    text = listed_parameter_text()
    if text is None:
        return False
    try:
        record = (loads or nni.load)(text)
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


def nni_parameters() -> Any:
    """This trial's parameters from NNI, consistent with what the web UI shows for it, decoded as
    plain JSON (they are untrusted: anyone who reaches the manager's port can choose them)."""
    try:
        text = receive_parameter_text()
    except UnsupportedChannel as exc:
        raise ParameterError(str(exc)) from None
    if text is None:
        raise ParameterError("the NNI manager sent no parameters")
    record = plain_json(text)
    if not isinstance(record, dict) or "parameters" not in record:
        raise ParameterError("the parameter record has no 'parameters'")
    set_trial_parameters(record)
    adopt_manager_parameters(loads=plain_json)
    return trial_parameters()["parameters"]
