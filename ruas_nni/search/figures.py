"""The figures of searches and experiments, drawn with matplotlib: the 7 x 7 architecture-probability
heatmaps (the paper's Fig. 9), for TensorBoard and for ``ruas-nni report``, and PSNR against
parameters per strategy (the paper's Fig. 1).

Figures are :class:`matplotlib.figure.Figure` objects rendered by the Agg canvas: no display and no
pyplot state, so they are safe in trials, in worker threads and on machines without a screen.
:func:`save_png` writes one atomically; ``SummaryWriter.add_figure`` logs one to TensorBoard.
"""

from __future__ import annotations

import os
import statistics
import textwrap
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.patheffects import withStroke
from matplotlib.ticker import FuncFormatter

from ..base.atomic import atomic_write
from ..model.network import EDGE_NAMES
from ..model.ops import OPERATION_NAMES

__all__ = ["MODULE_TITLES", "HEATMAP_COLOURS", "alpha_heatmaps", "pareto_front", "psnr_vs_ms", "psnr_vs_params", "save_png"]

Matrix = Sequence[Sequence[float]]

MODULE_TITLES = {"iem": "IEM (illumination)", "nrm": "NRM (noise removal)"}
HEATMAP_COLOURS = "viridis"
"""The heatmaps' colour map: perceptually ordered, dark purple (least probable) to yellow (most)."""

_PANEL = (5.6, 5.2)
"""Inches of one heatmap with its labels and colour bar (at 100 dpi: 560 x 520 pixels)."""


def _heatmap_panel(figure: Figure, ax, matrix: Matrix, title: str) -> None:
    """One 7 x 7 matrix on ``ax``: rows edges, columns operations, the values written in the cells,
    the most probable operation of each edge ringed, and a colour bar. The colour scale runs from the
    matrix's smallest to its largest value, so the ranking shows even while all probabilities are
    still close to 1/7."""
    values = np.asarray(matrix, dtype=np.float64)
    rows, cols = values.shape
    low, high = float(values.min()), float(values.max())
    if high - low < 1e-12:
        low, high = low - 1e-3, high + 1e-3
    norm = Normalize(low, high)
    image = ax.imshow(values, cmap=HEATMAP_COLOURS, norm=norm, interpolation="nearest", aspect="equal")
    colours = image.cmap(norm(values))
    for r in range(rows):
        for c in range(cols):
            red, green, blue, _ = colours[r, c]
            luminance = 0.2126 * red + 0.7152 * green + 0.0722 * blue
            ax.text(c, r, f"{values[r, c]:.4f}", ha="center", va="center", fontsize=8,
                    color="black" if luminance > 0.45 else "white", in_layout=False)  # inside the cells
        chosen = int(np.argmax(values[r]))
        ring = Rectangle((chosen - 0.42, r - 0.42), 0.84, 0.84, fill=False, edgecolor="white", linewidth=1.8,
                         in_layout=False)
        ring.set_path_effects([withStroke(linewidth=3.6, foreground="black")])
        ax.add_patch(ring)
    ax.set_xticks(range(cols), [OPERATION_NAMES[c] if c < len(OPERATION_NAMES) else str(c) for c in range(cols)],
                  rotation=40, ha="right", rotation_mode="anchor", fontsize=9)
    ax.set_yticks(range(rows), [EDGE_NAMES[r] if r < len(EDGE_NAMES) else str(r) for r in range(rows)], fontsize=10)
    ax.set_xticks(np.arange(-0.5, cols), minor=True)
    ax.set_yticks(np.arange(-0.5, rows), minor=True)
    ax.grid(which="minor", color="white", linewidth=1)
    ax.tick_params(which="minor", length=0)
    ax.tick_params(which="major", length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    ax.set_xlabel("operation")
    ax.set_ylabel("edge")
    ax.set_title(title, fontsize=11)
    bar = figure.colorbar(image, ax=ax, fraction=0.046, pad=0.03)
    bar.set_label("probability")
    bar.set_ticks(np.linspace(low, high, 5))  # the extremes are the matrix's smallest and largest value
    bar.ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.4f}"))
    bar.ax.tick_params(labelsize=8)


def alpha_heatmaps(rows: Sequence[tuple[str, Mapping[str, Matrix | None]]], dpi: int = 100) -> Figure:
    """The architecture probabilities as heatmaps: one row per ``(title, {module: 7 x 7})``, the
    modules (``iem``, ``nrm``, in that order; ``None`` ones left out) side by side. The axes of the
    heatmaps are ``figure.axes`` that hold an image, row by row."""
    drawn = []
    for title, probs in rows:
        order = [*MODULE_TITLES, *(m for m in probs if m not in MODULE_TITLES)]
        panels = [(module, probs[module]) for module in order if probs.get(module) is not None]
        if panels:
            drawn.append((title, panels))
    rows = drawn
    if not rows:
        raise ValueError("alpha_heatmaps: no matrix to draw")
    columns = max(len(panels) for _, panels in rows)
    figure = Figure(figsize=(_PANEL[0] * columns, (_PANEL[1] + 0.4) * len(rows)), dpi=dpi, layout="constrained")
    FigureCanvasAgg(figure)
    subfigures = figure.subfigures(len(rows), 1, squeeze=False)[:, 0]
    for subfigure, (title, panels) in zip(subfigures, rows):
        axes = subfigure.subplots(1, columns, squeeze=False)[0]
        for ax, (module, matrix) in zip(axes, panels):
            _heatmap_panel(subfigure, ax, matrix, MODULE_TITLES.get(module, module))
        for ax in axes[len(panels):]:
            ax.set_visible(False)
        if title:
            subfigure.suptitle(textwrap.fill(title, 66 * columns), fontsize=12, x=0.02, ha="left")
    return figure


def _scale(largest: float) -> tuple[float, str]:
    if largest >= 1e6:
        return 1e-6, "parameters (millions)"
    if largest >= 1e3:
        return 1e-3, "parameters (thousands)"
    return 1.0, "parameters"


def pareto_front(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """The points of ``(cost, quality)`` that no other point beats on both (lower or equal cost and
    higher or equal quality, one of them strictly), sorted by cost."""
    front: list[tuple[float, float]] = []
    for cost, quality in sorted(set(points), key=lambda p: (p[0], -p[1])):
        if not front or quality > front[-1][1]:
            front.append((cost, quality))
    return front


def psnr_vs_params(series: Sequence[tuple[str, Sequence[tuple[float, float]]]],
                   title: str = "PSNR against model size", dpi: int = 100) -> Figure:
    """PSNR (dB) against parameters: per ``(strategy, [(parameters, psnr), ...])`` one dot per trial
    in the strategy's colour, and its mean as a ring with error bars of one sample standard deviation
    over the trials (both axes; none for a single trial). The legend counts each strategy's trials.
    The PSNR axis spans at least 1 dB, so seed noise is not blown up into a trend."""
    every = [(x, y) for _, points in series for x, y in points]
    factor, x_label = _scale(max((abs(x) for x, _ in every), default=0.0))
    return _psnr_scatter(series, factor, x_label, title, dpi, front=False, missing="params")


def psnr_vs_ms(series: Sequence[tuple[str, Sequence[tuple[float, float]]]],
               title: str = "PSNR against latency (Pareto front)", dpi: int = 100) -> Figure:
    """PSNR (dB) against milliseconds per 600x400 image, drawn as :func:`psnr_vs_params`, with the
    Pareto front over all trials (:func:`pareto_front`: faster or better than every other) as a
    black staircase."""
    return _psnr_scatter(series, 1.0, "ms per 600x400 image (optimised engine)", title, dpi, front=True, missing="ms")


def _psnr_scatter(series: Sequence[tuple[str, Sequence[tuple[float, float]]]], factor: float, x_label: str,
                  title: str, dpi: int, *, front: bool, missing: str) -> Figure:
    figure = Figure(figsize=(9, 6), dpi=dpi, layout="constrained")
    FigureCanvasAgg(figure)
    ax = figure.add_subplot()
    colours = [f"C{i % 10}" for i in range(len(series))]
    every = [(x, y) for _, points in series for x, y in points]
    if front and every:
        steps = pareto_front(every)
        ax.step([x * factor for x, _ in steps], [y for _, y in steps], where="post", color="black",
                linewidth=1.3, zorder=2, label=f"Pareto front ({len(steps)})")
    for colour, (name, points) in zip(colours, series):
        xs, ys = [x * factor for x, _ in points], [y for _, y in points]
        ax.scatter(xs, ys, s=36, color=colour, label=f"{name} ({len(points)})", zorder=3)
        if not points:
            continue
        mean_x, mean_y = statistics.fmean(xs), statistics.fmean(ys)
        spread_x = statistics.stdev(xs) if len(xs) > 1 else None
        spread_y = statistics.stdev(ys) if len(ys) > 1 else None
        ax.errorbar(mean_x, mean_y, xerr=spread_x, yerr=spread_y, fmt="o", markersize=13, markerfacecolor="none",
                    markeredgewidth=2.2, color=colour, ecolor=colour, elinewidth=1.4, capsize=4, zorder=4)
    ax.errorbar([], [], xerr=[], yerr=[], fmt="o", markersize=11, markerfacecolor="none", markeredgewidth=2,
                color="black", elinewidth=1.2, capsize=3, label="mean ± std over seeds")
    if every:
        low, high = ax.get_ylim()
        if high - low < 1.0:
            centre = (min(y for _, y in every) + max(y for _, y in every)) / 2
            ax.set_ylim(centre - 0.5, centre + 0.5)
        left, right = ax.get_xlim()
        widest = max(abs(x) * factor for x, _ in every)
        if right - left < 0.1 * widest:
            centre = (left + right) / 2
            ax.set_xlim(centre - 0.05 * widest, centre + 0.05 * widest)
    else:
        ax.text(0.5, 0.5, f"no finished trial with psnr and {missing}", transform=ax.transAxes, ha="center",
                va="center")
        ax.set_xticks([])
        ax.set_yticks([])
    ax.set_xlabel(x_label, fontsize=11)
    ax.set_ylabel("PSNR (dB)", fontsize=11)
    ax.set_title(title, loc="left", fontsize=13)
    ax.grid(True, color="0.9", zorder=0)
    ax.set_axisbelow(True)
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0, frameon=False, title="strategy (trials)")
    return figure


def save_png(figure: Figure, path: str | os.PathLike[str]) -> Path:
    """Write ``figure`` as a PNG atomically (complete or not at all) at its own dpi."""
    path = Path(path)
    with atomic_write(path) as handle:
        figure.savefig(handle, format="png", facecolor="white", metadata={"Software": None})
    return path

