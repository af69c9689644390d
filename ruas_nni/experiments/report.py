"""Tables and plots of an NNI experiment of ruas-nni, from NNI's own stored data.

``ruas-nni report EXPERIMENT_ID_OR_DIR`` reads the experiment's SQLite database
(``<experiment dir>/db/nni.sqlite``: trial events with their parameters, intermediate and final
metrics), which the NNI manager keeps while it runs and after it stopped, and each trial's output
folder (``search/arch.json`` with the architecture probabilities) where it is on this machine. It writes

* ``report.md``: per strategy the mean and spread (sample standard deviation, min..max) over seeds of
  PSNR, SSIM, parameters, FLOPs, milliseconds per 600x400 image and search time; every trial; failed
  trials with their logs;
* ``psnr_vs_params.png``: PSNR against parameters per trial, strategy means and their spread over seeds
  marked (the paper's Fig. 1);
* ``psnr_vs_ms.png``: PSNR against the optimised engine's milliseconds per 600x400 image (the
  trials' metric ``ms``), with the Pareto front over all trials;
* ``alphas_<strategy>.png`` and ``alphas.png``: per strategy the IEM and NRM architecture
  probabilities as 7 x 7 heatmaps, rows edges e1..e7, columns operations, averaged over seeds (the
  paper's Fig. 9).

Plots are drawn with matplotlib by :mod:`ruas_nni.search.figures` (the same heatmaps the search logs to
TensorBoard). Trials report their own strategy and seed in
their final metric; those are used rather than the parameters NNI lists for the trial.
"""

from __future__ import annotations

import json
import math
import os
import sqlite3
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from matplotlib.figure import Figure

from ..base.atomic import atomic_write
from ..base.errors import UsageError
from ..model.network import EDGE_NAMES
from ..model.ops import OPERATION_NAMES
from ..search.figures import alpha_heatmaps, pareto_front, psnr_vs_ms, psnr_vs_params, save_png
from ..search.nni_compat import DATABASE, read_experiment_database, registered_experiment_dir

__all__ = [
    "TrialRecord",
    "ExperimentData",
    "StrategySummary",
    "locate_experiment",
    "load_experiment",
    "summarize",
    "write_report",
    "plot_psnr_vs_params",
    "plot_psnr_vs_ms",
    "psnr_vs_params_figure",
    "psnr_vs_ms_figure",
    "alpha_heatmaps_figure",
    "plot_psnr_vs_params",
    "plot_alpha_heatmaps",
]

MODULES = ("iem", "nrm")
METRICS = ("psnr", "ssim", "params", "flops", "ms", "search_seconds")


# --------------------------------------------------------------------------------------------
# reading NNI's stored data


@dataclass
class TrialRecord:
    """One trial as NNI stored it."""

    trial_id: str
    sequence: int
    status: str
    parameters: dict[str, Any]
    final: dict[str, Any] | None
    intermediate: list[Any] = field(default_factory=list)
    output_dir: Path | None = None
    start_ms: int | None = None
    end_ms: int | None = None

    @property
    def strategy(self) -> str:
        """What the trial says it ran (its final metric), else what NNI lists for it."""
        for source in (self.final or {}, self.parameters):
            if isinstance(source.get("strategy"), str):
                return source["strategy"]
        return "nas"

    @property
    def seed(self) -> Any:
        for source in (self.final or {}, self.parameters):
            if "seed" in source:
                return source["seed"]
        return None

    def metric(self, name: str) -> float | None:
        value = (self.final or {}).get(name)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            return float(value)
        return None

    def arch(self) -> dict[str, Any] | None:
        """The trial's ``arch.json`` (search output), when its output folder is on this machine."""
        if self.output_dir is None:
            return None
        for candidate in (self.output_dir / "search" / "arch.json", self.output_dir / "arch.json"):
            try:
                return json.loads(candidate.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
        return None


@dataclass
class ExperimentData:
    """An experiment: its id, folder, configuration and trials."""

    experiment_id: str
    directory: Path
    config: dict[str, Any]
    trials: list[TrialRecord]
    start_ms: int | None = None
    end_ms: int | None = None


def locate_experiment(id_or_dir: str, experiment_dir: str | os.PathLike[str] | None = None) -> Path:
    """The folder (holding ``db/nni.sqlite``) of an experiment given by id or by folder."""
    path = Path(id_or_dir).expanduser()
    if path.is_file() and path.name == DATABASE.name:
        return path.parent.parent
    if path.is_dir():
        for folder in (path, path.parent):
            if (folder / DATABASE).is_file():
                return folder
        raise UsageError(f"{id_or_dir}: not an NNI experiment folder (no {DATABASE} inside)")
    candidates: list[Path] = []
    if experiment_dir is not None:
        candidates.append(Path(experiment_dir).expanduser() / id_or_dir)
    registered = registered_experiment_dir(id_or_dir)
    if registered is not None:
        candidates.append(registered)
    candidates.append(Path("~/nni-experiments").expanduser() / id_or_dir)
    for folder in candidates:
        if (folder / DATABASE).is_file():
            return folder
    raise UsageError(f"{id_or_dir}: no such experiment folder, and no NNI experiment with this id in "
                     f"{', '.join(str(c.parent) for c in dict.fromkeys(candidates))}; give the experiment's folder "
                     "or `experiment_dir`", keys=("experiment_dir",))


def _decode(text: Any) -> Any:
    """NNI stores metrics as a JSON string inside a JSON string."""
    value = text
    for _ in range(2):
        if not isinstance(value, str):
            break
        try:
            value = json.loads(value)
        except ValueError:
            break
    return value


def _output_dir(directory: Path, trial_id: str, log_path: str | None) -> Path | None:
    candidates = []
    if log_path and "://" not in log_path and not log_path.startswith(("hdfs:", "file:")):
        candidates.append(Path(log_path))
    candidates += [directory / "environments" / "local-env" / "trials" / trial_id,
                   directory / "trials" / trial_id / "output", directory / "trials" / trial_id]
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    return None


def load_experiment(directory: str | os.PathLike[str]) -> ExperimentData:
    """Read an experiment's database (read-only; fine while the manager runs)."""
    directory = Path(directory)
    database = directory / DATABASE
    if not database.is_file():
        raise UsageError(f"{directory}: no {DATABASE} (not an NNI experiment folder)")
    try:
        connection = sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=10)
    except sqlite3.Error as exc:
        raise UsageError(f"{database}: cannot open ({exc})") from None
    try:
        rows = read_experiment_database(connection)
    except sqlite3.Error as exc:
        raise UsageError(f"{database}: not an NNI database ({exc})") from None
    finally:
        connection.close()
    config: dict[str, Any] = {}
    experiment_id, start_ms, end_ms = directory.name, None, None
    if rows.profile is not None:
        params, experiment_id, start_ms, end_ms = rows.profile
        config = _decode(params) if params else {}
    trials: dict[str, TrialRecord] = {}
    for timestamp, trial_id, event, data, log_path, sequence in rows.events:
        trial = trials.get(trial_id)
        if trial is None:
            trial = trials[trial_id] = TrialRecord(trial_id, int(sequence if sequence is not None else -1), event, {}, None)
        trial.status = event
        if data:
            record = _decode(data)
            if isinstance(record, dict) and isinstance(record.get("parameters"), dict):
                trial.parameters = record["parameters"]
        if log_path:
            trial.output_dir = _output_dir(directory, trial_id, log_path) or trial.output_dir
        if event == "RUNNING" and trial.start_ms is None:
            trial.start_ms = timestamp
        if event in ("SUCCEEDED", "FAILED", "USER_CANCELED", "SYS_CANCELED", "EARLY_STOPPED"):
            trial.end_ms = timestamp
    for _, trial_id, kind, _, data in rows.metrics:
        trial = trials.get(trial_id)
        if trial is None:
            continue
        value = _decode(data)
        if kind == "FINAL":
            trial.final = value if isinstance(value, dict) else {"default": value}
        else:
            trial.intermediate.append(value)
    for trial in trials.values():
        if trial.output_dir is None:
            trial.output_dir = _output_dir(directory, trial.trial_id, None)
    ordered = sorted(trials.values(), key=lambda t: (t.sequence, t.trial_id))
    return ExperimentData(str(experiment_id), directory, config if isinstance(config, dict) else {}, ordered,
                          start_ms, end_ms)


# --------------------------------------------------------------------------------------------
# summaries


@dataclass
class Spread:
    """Mean, sample standard deviation (``None`` for one value), minimum and maximum."""

    mean: float
    std: float | None
    low: float
    high: float
    count: int

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread | None:
        if not values:
            return None
        std = statistics.stdev(values) if len(values) > 1 else None
        return cls(statistics.fmean(values), std, min(values), max(values), len(values))


@dataclass
class StrategySummary:
    """One strategy over its seeds."""

    strategy: str
    trials: list[TrialRecord]
    metrics: dict[str, Spread | None]
    probs: dict[str, list[list[float]]]
    """Architecture probabilities averaged over the seeds that have them (module -> 7 x 7)."""
    probs_count: int

    @property
    def succeeded(self) -> list[TrialRecord]:
        return [t for t in self.trials if t.final is not None and t.status == "SUCCEEDED"]


def _mean_matrix(matrices: Sequence[Sequence[Sequence[float]]]) -> list[list[float]]:
    rows, cols = len(matrices[0]), len(matrices[0][0])
    return [[statistics.fmean(float(m[r][c]) for m in matrices) for c in range(cols)] for r in range(rows)]


def _probs_of(arch: Mapping[str, Any] | None) -> dict[str, list[list[float]]]:
    """``arch.json``'s probabilities as ``{module: 7 x 7}`` (rows edges, columns operations)."""
    if not arch or not isinstance(arch.get("probs"), Mapping):
        return {}
    probs = arch["probs"]
    operations = list(arch.get("operations") or OPERATION_NAMES)
    result: dict[str, list[list[float]]] = {}
    for module in MODULES:
        matrix = probs.get(module)
        if isinstance(matrix, list) and len(matrix) == len(EDGE_NAMES):
            by_name = [dict(zip(operations, row)) for row in matrix]
        elif all(f"{module}/{edge}" in probs for edge in EDGE_NAMES):  # NNI's export_probs layout
            by_name = [dict(probs[f"{module}/{edge}"]) for edge in EDGE_NAMES]
        else:
            continue
        result[module] = [[float(row.get(op, 0.0)) for op in OPERATION_NAMES] for row in by_name]
    return result


def summarize(data: ExperimentData) -> list[StrategySummary]:
    """Per strategy (in the order of the experiment's search space, then first appearance)."""
    groups: dict[str, list[TrialRecord]] = {}
    space = (data.config.get("searchSpace") or {}).get("strategy", {}).get("_value", [])
    for name in space if isinstance(space, list) else []:
        groups.setdefault(str(name), [])
    for trial in data.trials:
        groups.setdefault(trial.strategy, []).append(trial)
    summaries = []
    for strategy, trials in groups.items():
        finished = [t for t in trials if t.final is not None and t.status == "SUCCEEDED"]
        metrics = {name: Spread.of([v for t in finished if (v := t.metric(name)) is not None]) for name in METRICS}
        per_module: dict[str, list[list[list[float]]]] = {}
        with_probs = 0
        for trial in finished:
            probs = _probs_of(trial.arch())
            with_probs += bool(probs)
            for module, matrix in probs.items():
                per_module.setdefault(module, []).append(matrix)
        probs = {module: _mean_matrix(matrices) for module, matrices in per_module.items()}
        summaries.append(StrategySummary(strategy, trials, metrics, probs, with_probs))
    return summaries


# --------------------------------------------------------------------------------------------
# plots (drawn by :mod:`ruas_nni.search.figures`)


def _series(summaries: Sequence[StrategySummary], x_metric: str) -> list[tuple[str, list[tuple[float, float]]]]:
    series = []
    for summary in summaries:
        points = [(t.metric(x_metric), t.metric("psnr")) for t in summary.succeeded]
        series.append((summary.strategy, [(x, y) for x, y in points if x is not None and y is not None]))
    return series


def psnr_vs_params_figure(summaries: Sequence[StrategySummary], title: str = "PSNR against model size") -> Figure:
    """PSNR (dB) against parameters: one dot per finished trial, per strategy its mean as a ring with
    the spread over seeds, a legend (the paper's Fig. 1)."""
    return psnr_vs_params(_series(summaries, "params"), title)


def psnr_vs_ms_figure(summaries: Sequence[StrategySummary],
                      title: str = "PSNR against latency (Pareto front)") -> Figure:
    """PSNR (dB) against ms per 600x400 image, as :func:`psnr_vs_params_figure`, with the Pareto front."""
    return psnr_vs_ms(_series(summaries, "ms"), title)


def plot_psnr_vs_ms(summaries: Sequence[StrategySummary], path: str | os.PathLike[str],
                    title: str = "PSNR against latency (Pareto front)") -> Path:
    """:func:`psnr_vs_ms_figure` as a PNG file."""
    return save_png(psnr_vs_ms_figure(summaries, title), path)


def _heatmap_title(summary: StrategySummary) -> str:
    seeds = f"mean of {summary.probs_count} seed{'s' if summary.probs_count != 1 else ''}"
    return f"{summary.strategy}: softmax of the architecture weights ({seeds}); ringed: most probable"


def alpha_heatmaps_figure(summaries: Sequence[StrategySummary]) -> Figure | None:
    """The IEM and NRM architecture probabilities side by side, one row per strategy that has them
    (``None`` when none has)."""
    rows = [(_heatmap_title(s), s.probs) for s in summaries if s.probs]
    return alpha_heatmaps(rows) if rows else None


def plot_psnr_vs_params(summaries: Sequence[StrategySummary], path: str | os.PathLike[str],
                        title: str = "PSNR against model size") -> Path:
    """:func:`psnr_vs_params_figure` as a PNG file."""
    return save_png(psnr_vs_params_figure(summaries, title), path)


def plot_alpha_heatmaps(summary: StrategySummary | Sequence[StrategySummary],
                        path: str | os.PathLike[str]) -> Path | None:
    """:func:`alpha_heatmaps_figure` of one strategy (or of several, stacked) as a PNG file; ``None``
    (and no file) without probabilities."""
    figure = alpha_heatmaps_figure([summary] if isinstance(summary, StrategySummary) else summary)
    return save_png(figure, path) if figure is not None else None


# --------------------------------------------------------------------------------------------
# Markdown


def _cell(spread: Spread | None, digits: int, scale: float = 1.0) -> str:
    if spread is None:
        return "–"
    mean = spread.mean * scale
    if spread.std is None:
        return f"{mean:.{digits}f}"
    return (f"{mean:.{digits}f} ± {spread.std * scale:.{digits}f} "
            f"({spread.low * scale:.{digits}f}..{spread.high * scale:.{digits}f})")


def _safe_name(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in name) or "strategy"


def _genotype_text(trial: TrialRecord) -> str:
    text = (trial.final or {}).get("genotype")
    try:
        genotype = json.loads(text) if isinstance(text, str) else text
    except ValueError:
        return str(text)
    if isinstance(genotype, Mapping):
        parts = [f"{m.upper()}: {', '.join(genotype[m])}" for m in MODULES if genotype.get(m)]
        shape = genotype.get("shape")
        if isinstance(shape, Mapping) and shape:  # a searched shape (ruas-nni nas --space scalable)
            parts.insert(0, ", ".join(f"{key} {value}" for key, value in shape.items()))
        return "; ".join(parts)
    return "–"


def _duration(start_ms: int | None, end_ms: int | None) -> str:
    if start_ms is None or end_ms is None:
        return "–"
    return f"{(end_ms - start_ms) / 1000:.0f} s"


def _fmt(value: float | None, digits: int, scale: float = 1.0) -> str:
    return "–" if value is None else f"{value * scale:.{digits}f}"


def render_markdown(data: ExperimentData, summaries: Sequence[StrategySummary], figures: Mapping[str, Path]) -> str:
    """The text of ``report.md``."""
    lines = [f"# NNI experiment {data.experiment_id}", ""]
    config = data.config
    statuses: dict[str, int] = {}
    for trial in data.trials:
        statuses[trial.status] = statuses.get(trial.status, 0) + 1
    lines.append(f"- folder: `{data.directory}`")
    if config.get("experimentName"):
        lines.append(f"- name: {config['experimentName']}")
    lines.append(f"- trials: {len(data.trials)} ({', '.join(f'{n} {s.lower()}' for s, n in sorted(statuses.items()))})"
                 if data.trials else "- trials: none yet")
    lines.append(f"- duration: {_duration(data.start_ms, data.end_ms)}")
    if config.get("trialCommand"):
        lines.append(f"- trial command: `{config['trialCommand']}`")
    multi_trial = bool(summaries) and all(summary.strategy == "nas" for summary in summaries)
    if multi_trial:  # a `ruas-nni nas` experiment: every trial is one sampled architecture, no seeds
        lines += ["", "## All sampled architectures (mean ± sample std (min..max) over the trials)", "",
                  "| experiment | finished | PSNR (dB) | SSIM | parameters | GFLOPs (600x400) | ms (600x400) | search (s) |",
                  "|---|---|---|---|---|---|---|---|"]
    else:
        lines += ["", "## Per strategy (mean ± sample std (min..max) over seeds)", "",
                  "| strategy | finished | PSNR (dB) | SSIM | parameters | GFLOPs (600x400) | ms (600x400) | search (s) |",
                  "|---|---|---|---|---|---|---|---|"]
    for summary in summaries:
        m = summary.metrics
        label = "multi-trial NAS" if multi_trial else summary.strategy
        lines.append(f"| {label} | {len(summary.succeeded)}/{len(summary.trials)} | {_cell(m['psnr'], 3)} | "
                     f"{_cell(m['ssim'], 4)} | {_cell(m['params'], 0)} | {_cell(m['flops'], 3, 1e-9)} | "
                     f"{_cell(m['ms'], 1)} | {_cell(m['search_seconds'], 1)} |")
    finished = [t for t in data.trials if t.final is not None]
    if finished:
        best = max(finished, key=lambda t: t.metric("psnr") if t.metric("psnr") is not None else -math.inf)
        seed = f", seed {best.seed}" if best.seed is not None else ""
        lines += ["", f"Best trial: `{best.trial_id}` ({best.strategy}{seed}): "
                      f"PSNR {_fmt(best.metric('psnr'), 3)} dB, SSIM {_fmt(best.metric('ssim'), 4)}; "
                      f"{_genotype_text(best)}"]
    lines += ["", "## Trials", "",
              "| trial | strategy | seed | status | PSNR (dB) | SSIM | parameters | GFLOPs | ms | search (s) | genotype |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for trial in data.trials:
        lines.append(f"| `{trial.trial_id}` | {trial.strategy} | {trial.seed if trial.seed is not None else '–'} | "
                     f"{trial.status} | {_fmt(trial.metric('psnr'), 3)} | {_fmt(trial.metric('ssim'), 4)} | "
                     f"{_fmt(trial.metric('params'), 0)} | {_fmt(trial.metric('flops'), 3, 1e-9)} | "
                     f"{_fmt(trial.metric('ms'), 1)} | {_fmt(trial.metric('search_seconds'), 1)} | "
                     f"{_genotype_text(trial) if trial.final else '–'} |")
    failed = [t for t in data.trials if t.status in ("FAILED", "SYS_CANCELED")]
    if failed:
        lines += ["", "## Failed trials", ""]
        for trial in failed:
            where = trial.output_dir / "trial.log" if trial.output_dir else "(log not on this machine)"
            lines.append(f"- `{trial.trial_id}` ({trial.strategy}, seed {trial.seed}): see `{where}`")
    lines += ["", "## PSNR against parameters (paper Fig. 1)", ""]
    if "psnr_vs_params" in figures:
        lines.append(f"![PSNR against parameters]({figures['psnr_vs_params'].name})")
    lines += ["", "## PSNR against latency: the Pareto front", ""]
    if "psnr_vs_ms" in figures:
        lines.append(f"![PSNR against ms per 600x400]({figures['psnr_vs_ms'].name})")
    timed = [(t.metric("ms"), t.metric("psnr"), t) for t in data.trials if t.final is not None
             and t.metric("ms") is not None and t.metric("psnr") is not None]
    front = pareto_front([(ms, psnr) for ms, psnr, _ in timed])
    if front:
        lines += ["", "On the front (no other trial is both faster and better), fastest first:", "",
                  "| trial | strategy | seed | ms (600x400) | PSNR (dB) | parameters |", "|---|---|---|---|---|---|"]
        for ms, psnr in front:
            trial = next(t for m, p, t in timed if (m, p) == (ms, psnr))
            lines.append(f"| `{trial.trial_id}` | {trial.strategy} | {trial.seed if trial.seed is not None else '–'} | "
                         f"{_fmt(ms, 1)} | {_fmt(psnr, 3)} | {_fmt(trial.metric('params'), 0)} |")
    else:
        lines.append("No finished trial reports `ms` (trials of ruas-nni before this metric).")
    lines += ["", "## Architecture probabilities (paper Fig. 9)", "",
              "Per edge (rows e1..e7) the softmax of the architecture weights over the operations (columns), "
              "averaged over seeds; the ringed cell of each row is the most probable operation (the one a "
              "search derives).", ""]
    any_heatmap = False
    for summary in summaries:
        key = f"alphas_{_safe_name(summary.strategy)}"
        if key in figures:
            any_heatmap = True
            lines += [f"### {summary.strategy}", "", f"![{summary.strategy} alphas]({figures[key].name})", ""]
    if not any_heatmap:
        lines.append("No heatmaps: no finished trial has architecture probabilities (`search/arch.json`) on this "
                     "machine. Multi-trial NAS samples architectures without them; remote or Kubernetes trials keep "
                     "their output folders where they ran.")
    return "\n".join(lines).rstrip() + "\n"


def write_report(id_or_dir: str, out: str | os.PathLike[str] | None = None,
                 experiment_dir: str | os.PathLike[str] | None = None) -> Path:
    """Write ``report.md`` and its PNG plots for an experiment; return the Markdown file."""
    directory = locate_experiment(id_or_dir, experiment_dir)
    data = load_experiment(directory)
    out_dir = Path(out) if out is not None else Path(f"report-{data.experiment_id}")
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"`out` {out_dir}: exists and is not a folder", keys=("out",))
    out_dir.mkdir(parents=True, exist_ok=True)
    summaries = summarize(data)
    figures: dict[str, Path] = {"psnr_vs_params": plot_psnr_vs_params(summaries, out_dir / "psnr_vs_params.png"),
                                "psnr_vs_ms": plot_psnr_vs_ms(summaries, out_dir / "psnr_vs_ms.png")}
    heatmaps = []
    for summary in summaries:
        name = f"alphas_{_safe_name(summary.strategy)}"
        path = plot_alpha_heatmaps(summary, out_dir / f"{name}.png")
        if path is not None:
            figures[name] = path
            heatmaps.append(path)
    if len(heatmaps) > 1:
        combined = plot_alpha_heatmaps(summaries, out_dir / "alphas.png")
        if combined is not None:
            figures["alphas"] = combined
    report = out_dir / "report.md"
    with atomic_write(report) as handle:
        handle.write(render_markdown(data, summaries, figures).encode("utf-8"))
    return report

