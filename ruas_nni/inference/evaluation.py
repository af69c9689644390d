"""Evaluating a trained network on paired images: the engine behind ``ruas-nni evaluate``.

A paired folder holds ``low/`` (inputs) and ``high/`` (ground truth) with the same file names, as
the LOL test split does. Every low-light image is enhanced at full size, its output is scored with
:mod:`ruas_nni.inference.metrics` (8-bit rounding, PSNR, SSIM as the reference numbers define them) and,
on request, a side-by-side picture ``input | ours | ground truth`` is written. Beside the plain
scores, a diagnostic: the scores of the output with its exposure matched to the ground truth
(:func:`ruas_nni.inference.metrics.exposure_matched`), and the mean brightness of output and ground truth.

Plain PyTorch only (no NNI, no Lightning).
"""

from __future__ import annotations

import os
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import torch

from ..base.atomic import write_json_atomic
from ..base.errors import UsageError
from ..base.images import ImageReadError, find_images, natural_key, read_image, write_png
from ..model.checkpoint import Checkpoint
from .enhance import Enhancer
from .metrics import ImageScores, exposure_matched, score_image

__all__ = ["ImagePair", "EvaluationResult", "PANEL_LABELS", "find_pairs", "side_by_side", "label_panel", "evaluate",
           "format_table"]

SEPARATOR_PIXELS = 4
"""Width of the white bar between the panels of a side-by-side picture."""


@dataclass(frozen=True)
class ImagePair:
    """A low-light input and its ground truth, sharing a file name."""

    name: str
    low: Path
    high: Path


@dataclass
class EvaluationResult:
    """Per-image scores (in file-name order) and their means."""

    per_image: dict[str, ImageScores] = field(default_factory=dict)
    matched: dict[str, ImageScores] = field(default_factory=dict)
    """Diagnostic: the scores of each output with its exposure matched to the ground truth."""
    brightness: dict[str, tuple[float, float]] = field(default_factory=dict)
    """Diagnostic: ``(mean of the clamped output, mean of the ground truth)`` of each image."""

    @staticmethod
    def _mean(scores: dict[str, ImageScores]) -> ImageScores:
        return ImageScores(statistics.fmean(s.psnr for s in scores.values()),
                           statistics.fmean(s.ssim for s in scores.values()))

    @property
    def mean(self) -> ImageScores:
        if not self.per_image:
            raise ValueError("no images were scored")
        return self._mean(self.per_image)

    @property
    def matched_mean(self) -> ImageScores | None:
        """Mean exposure-matched scores, or ``None`` when they were not computed."""
        return self._mean(self.matched) if self.matched else None

    def to_dict(self) -> dict[str, object]:
        """``{"mean": {"psnr", "ssim"}, "per_image": {name: {"psnr", "ssim"}}}`` (the ``--json`` file),
        plus, when computed, ``"exposure_matched": {"mean": {"psnr", "ssim", "output_brightness",
        "reference_brightness"}, "per_image": {name: {"psnr", "ssim", "output_brightness",
        "reference_brightness"}}}``."""
        payload: dict[str, object] = {
            "mean": self.mean.to_dict(),
            "per_image": {name: scores.to_dict() for name, scores in self.per_image.items()},
        }
        if self.matched:
            def entry(scores: ImageScores, brightness: tuple[float, float] | None) -> dict[str, float]:
                values = scores.to_dict()
                if brightness is not None:
                    values.update(output_brightness=brightness[0], reference_brightness=brightness[1])
                return values

            means = None
            if self.brightness:
                means = (statistics.fmean(b[0] for b in self.brightness.values()),
                         statistics.fmean(b[1] for b in self.brightness.values()))
            payload["exposure_matched"] = {
                "mean": entry(self.matched_mean, means),
                "per_image": {name: entry(scores, self.brightness.get(name)) for name, scores in self.matched.items()},
            }
        return payload

    def write_json(self, path: str | os.PathLike[str], extra: dict[str, object] | None = None) -> Path:
        """Write :meth:`to_dict` (plus ``extra`` keys, e.g. the checkpoint) atomically."""
        return write_json_atomic(path, {**self.to_dict(), **(extra or {})})



def find_pairs(folder: str | os.PathLike[str], key: str = "data") -> list[ImagePair]:
    """The pairs of a paired folder (``low/`` and ``high/``, same names), in natural name order.

    Raises :class:`UsageError` naming the folder (and ``key``, the argument that gave it) when a side
    is missing, empty, or when names do not match (all mismatches are listed, up to five)."""
    root = Path(folder)
    if not root.is_dir():
        raise UsageError(f"`{key}` {root}: no such folder", keys=(key,))
    for side in ("low", "high"):
        if not (root / side).is_dir():
            raise UsageError(f"`{key}` {root}: expected sub-folders low/ and high/ with matching file names; "
                             f"{side}/ is missing", keys=(key,))
    sides = {}
    for side in ("low", "high"):
        path = root / side
        sides[side] = {p.name: p for p in find_images([path])}
        if not sides[side]:
            raise UsageError(f"`{key}` {path}: no image files", keys=(key,))
    only_low = sorted(set(sides["low"]) - set(sides["high"]))
    only_high = sorted(set(sides["high"]) - set(sides["low"]))
    if only_low or only_high:
        details = []
        if only_low:
            details.append(f"no ground truth for {', '.join(only_low[:5])}{' ...' if len(only_low) > 5 else ''}")
        if only_high:
            details.append(f"no input for {', '.join(only_high[:5])}{' ...' if len(only_high) > 5 else ''}")
        raise UsageError(f"`{key}` {root}: low/ and high/ must hold the same file names: {'; '.join(details)}",
                         keys=(key,))
    names = sorted(sides["low"], key=natural_key)
    return [ImagePair(name, sides["low"][name], sides["high"][name]) for name in names]


PANEL_LABELS = ("input", "ours", "reference")
"""The labels of a side-by-side picture's panels: low-light input, our output, ground truth."""


def label_panel(panel: torch.Tensor, label: str) -> torch.Tensor:
    """``panel`` (``3 x H x W`` in [0, 1]) with ``label`` written in its top-left corner, white on a
    black box, in Pillow's default font (nothing is drawn on panels too small to hold it)."""
    from PIL import Image, ImageDraw

    array = (panel.permute(1, 2, 0).numpy() * 255.0).round().astype(np.uint8)
    picture = Image.fromarray(array, "RGB")
    draw = ImageDraw.Draw(picture)
    left, top, right, bottom = draw.textbbox((3, 2), label)
    if right + 3 > picture.width or bottom + 3 > picture.height:
        return panel
    draw.rectangle((0, 0, right + 3, bottom + 3), fill=(0, 0, 0))
    draw.text((3, 2), label, fill=(255, 255, 255))
    box = torch.from_numpy(np.asarray(picture)[: bottom + 4, : right + 4].copy()).permute(2, 0, 1).float() / 255.0
    labelled = panel.clone()
    labelled[:, : bottom + 4, : right + 4] = box  # only the label's box changes
    return labelled


def side_by_side(panels: Sequence[torch.Tensor], separator: int = SEPARATOR_PIXELS,
                 labels: Sequence[str] | None = None) -> torch.Tensor:
    """Panels (``3 x H x W``, same height) left to right with white bars between them; with
    ``labels`` (e.g. :data:`PANEL_LABELS`), each panel's label in its top-left corner."""
    if not panels:
        raise ValueError("no panels")
    if labels is not None and len(labels) != len(panels):
        raise ValueError("one label per panel")
    height = panels[0].shape[1]
    pieces: list[torch.Tensor] = []
    for index, panel in enumerate(panels):
        if panel.shape[1] != height:
            raise ValueError("side-by-side panels must have the same height")
        if index and separator:
            pieces.append(torch.ones(3, height, separator))
        panel = panel.detach().float().clamp(0.0, 1.0).cpu()
        pieces.append(label_panel(panel, labels[index]) if labels is not None else panel)
    return torch.cat(pieces, dim=2)


def evaluate(
    checkpoint: Checkpoint,
    pairs: Iterable[ImagePair],
    *,
    stage: str = "final",
    device: torch.device | str = "cpu",
    side_by_side_dir: str | os.PathLike[str] | None = None,
    progress: Callable[[Iterable[ImagePair]], Iterable[ImagePair]] | None = None,
) -> EvaluationResult:
    """Enhance every pair's input with ``checkpoint`` and score it against the ground truth.

    ``stage`` picks the final output (IEM + NRM) or the IEM output (``iem``; what the authors meant
    ``upe.pt`` and ``dark.pt`` for). With ``side_by_side_dir``, ``<name stem>.png`` there shows
    input | ours | ground truth.
    """
    # The network exactly as trained (no folding): scores must not depend on inference tricks.
    with Enhancer(checkpoint, stage=stage, device=torch.device(device), fold=False) as enhancer:
        return _evaluate(enhancer, list(pairs), side_by_side_dir, progress)


def _evaluate(enhancer: Enhancer, pairs: list[ImagePair], side_by_side_dir: str | os.PathLike[str] | None,
              progress: Callable[[Iterable[ImagePair]], Iterable[ImagePair]] | None) -> EvaluationResult:
    result = EvaluationResult()
    iterator = progress(pairs) if progress is not None else pairs
    for pair in iterator:
        images = []
        for side, path in (("low", pair.low), ("high", pair.high)):
            try:
                images.append(read_image(path).rgb)
            except ImageReadError as exc:
                raise UsageError(f"{path}: cannot read the {'input' if side == 'low' else 'ground truth'} "
                                 f"{side}/{pair.name} ({exc})") from None
        low, high = images
        if low.shape != high.shape:
            raise UsageError(
                f"{pair.name}: input is {low.shape[2]}x{low.shape[1]} but its ground truth is {high.shape[2]}x{high.shape[1]}"
            )
        enhanced = enhancer(low)
        result.per_image[pair.name] = score_image(enhanced, high)
        matched, _ = exposure_matched(enhanced, high)
        result.matched[pair.name] = score_image(matched, high)
        result.brightness[pair.name] = (float(enhanced.detach().float().clamp(0.0, 1.0).mean()), float(high.float().mean()))
        if side_by_side_dir is not None:
            picture = side_by_side([low, enhanced, high], labels=PANEL_LABELS)
            write_png(Path(side_by_side_dir) / f"{Path(pair.name).stem}.png", picture)
    return result


def format_table(result: EvaluationResult) -> str:
    """A plain-text table: one row per image, then the mean. When the exposure-matched diagnostic was
    computed, three more columns: its PSNR and SSIM, and the output's / ground truth's mean brightness."""
    width = max([len("mean")] + [len(name) for name in result.per_image])
    diagnostic = bool(result.matched)
    header = f"{'image':<{width}}  {'PSNR dB':>8}  {'SSIM':>6}"
    if diagnostic:
        header += f"  {'matched PSNR':>12}  {'SSIM':>6}  {'brightness out/ref':>18}"
    lines = [header]

    def row(name: str, scores: ImageScores, matched: ImageScores | None, brightness: tuple[float, float] | None) -> str:
        line = f"{name:<{width}}  {scores.psnr:>8.3f}  {scores.ssim:>6.4f}"
        if diagnostic and matched is not None:
            line += f"  {matched.psnr:>12.3f}  {matched.ssim:>6.4f}"
            if brightness is not None:
                line += f"  {brightness[0]:>8.3f} / {brightness[1]:.3f}"
        return line

    for name, scores in result.per_image.items():
        lines.append(row(name, scores, result.matched.get(name), result.brightness.get(name)))
    means = None
    if result.brightness:
        means = (statistics.fmean(b[0] for b in result.brightness.values()),
                 statistics.fmean(b[1] for b in result.brightness.values()))
    lines.append(row("mean", result.mean, result.matched_mean, means))
    return "\n".join(lines)
