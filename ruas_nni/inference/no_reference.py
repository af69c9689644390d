"""No-reference measures of an enhancement: the engine behind ``ruas-nni evaluate --no-reference``.

Real low-light photos have no ground truth, so the enhanced output is judged against its own input
by five measures of artefacts an enhancer makes (definitions in ``docs/no_reference.md``). All work
on 8-bit values: the input as read (16-bit files rounded to 8 bits), the output clamped to ``[0, 1]``
and rounded, ``round(x * 255)``, as a saved PNG holds it. "Max channel" is a pixel's largest
of R, G, B.

* ``clip``: fraction of pixels with output max channel >= 250 and input max channel < 200.
* ``crush``: fraction of pixels with output max channel <= 5 and input max channel >= 3.
* ``bright``: mean of the output over all pixels and channels, on a 0..1 scale (``levels / 255``).
* ``post``: among all horizontally and vertically adjacent pixel pairs, the fraction whose input max
  channels differ by <= 1 level and whose output max channels differ by >= 8 levels.
* ``cast``: over the pixels whose input max channel is >= 12 and whose output max channel lies in
  26..229 (inclusive; ``0.1 * 255 = 25.5`` and ``0.9 * 255 = 229.5`` on the 0..255 scale), the mean
  chromaticity ``(r, g, b) / (r + g + b)`` of the output and of the input (per pixel, then the mean;
  pixels with ``r + g + b = 0`` excluded, which the thresholds already exclude); ``cast`` is 100 x
  the largest absolute difference of the three components, 0 when no pixel qualifies
  (``cast_pixels`` says how many did).

Over a folder: the mean of each measure over photos, and the worst photo's value (the maximum of
``clip``, ``crush``, ``post``, ``cast``; the minimum of ``bright``). A contact sheet shows the photos
with the largest :attr:`PhotoMeasures.artefact` score ``clip + crush + post + cast / 100``.

The measures are plain numpy on ``H x W x 3`` uint8 arrays; the folder driver reads images with
:mod:`ruas_nni.base.images` and enhances them with :class:`ruas_nni.inference.enhance.Enhancer`.
"""

from __future__ import annotations

import io
import os
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Sequence

import numpy as np

from ..base.atomic import atomic_write, write_json_atomic
from ..base.errors import UsageError
from ..base.images import ImageReadError, find_images, natural_key, read_image, to_uint

if TYPE_CHECKING:
    import torch

    from ..model.checkpoint import Checkpoint

__all__ = [
    "MEASURES", "PhotoMeasures", "NoReferenceResult", "NoReferencePhoto",
    "max_channel", "clip_fraction", "crush_fraction", "brightness", "posterisation", "colour_cast", "measure",
    "find_low_light", "match_outputs", "evaluate_no_reference", "format_table", "contact_sheet",
    "write_contact_sheet",
]

CLIP_OUTPUT_MIN = 250
"""``clip``: output max channel >= this ..."""
CLIP_INPUT_BELOW = 200
"""... and input max channel < this."""
CRUSH_OUTPUT_MAX = 5
"""``crush``: output max channel <= this ..."""
CRUSH_INPUT_MIN = 3
"""... and input max channel >= this."""
POST_INPUT_STEP_MAX = 1
"""``post``: adjacent input max channels differ by <= this ..."""
POST_OUTPUT_JUMP_MIN = 8
"""... and the output's by >= this."""
CAST_INPUT_MIN = 12
"""``cast``: pixels whose input max channel is >= this ..."""
CAST_OUTPUT_MIN = 26
"""... and whose output max channel is >= this (``0.1 * 255 = 25.5`` rounded up) ..."""
CAST_OUTPUT_MAX = 229
"""... and <= this (``0.9 * 255 = 229.5`` rounded down)."""

MEASURES = ("clip", "crush", "bright", "post", "cast")
"""The measures, in table order."""
LOWER_IS_WORSE = frozenset({"bright"})
"""Measures whose worst photo is the one with the smallest value (the others: the largest)."""

SHEET_ROW_HEIGHT = 320
"""Height in pixels of the input and output panels of a contact-sheet row."""
SHEET_SEPARATOR = 4
SHEET_FONT_SIZE = 15
SHEET_MAX_ASPECT = 4
"""A panel is at most this many times :data:`SHEET_ROW_HEIGHT` wide (wider photos get a lower panel)."""


# ---------------------------------------------------------------------------- measures

def _levels(image: np.ndarray, what: str) -> np.ndarray:
    array = np.asarray(image)
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f"{what}: expected an H x W x 3 uint8 array, got {array.dtype} {array.shape}")
    return array


def _pair(low: np.ndarray, out: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    low, out = _levels(low, "input"), _levels(out, "output")
    if low.shape != out.shape:
        raise ValueError(f"output {out.shape[1]}x{out.shape[0]} and input {low.shape[1]}x{low.shape[0]} differ in size")
    return low, out


def max_channel(image: np.ndarray) -> np.ndarray:
    """The largest of R, G, B of each pixel of an ``H x W x 3`` uint8 array (``H x W``, int16)."""
    return _levels(image, "image").max(axis=2).astype(np.int16)


def clip_fraction(low: np.ndarray, out: np.ndarray) -> float:
    """Fraction of pixels whose output max channel is >= 250 and whose input max channel is < 200."""
    low, out = _pair(low, out)
    hit = (max_channel(out) >= CLIP_OUTPUT_MIN) & (max_channel(low) < CLIP_INPUT_BELOW)
    return float(hit.mean())


def crush_fraction(low: np.ndarray, out: np.ndarray) -> float:
    """Fraction of pixels whose output max channel is <= 5 and whose input max channel is >= 3."""
    low, out = _pair(low, out)
    hit = (max_channel(out) <= CRUSH_OUTPUT_MAX) & (max_channel(low) >= CRUSH_INPUT_MIN)
    return float(hit.mean())


def brightness(out: np.ndarray) -> float:
    """Mean of all pixels and channels of the output, on a 0..1 scale."""
    return float(_levels(out, "output").mean(dtype=np.float64) / 255.0)


def posterisation(low: np.ndarray, out: np.ndarray) -> float:
    """Among all horizontally and vertically adjacent pixel pairs, the fraction whose input max
    channels differ by <= 1 level and whose output max channels differ by >= 8 levels (0 for an image
    of one pixel, which has no pairs)."""
    low, out = _pair(low, out)
    a, b = max_channel(low), max_channel(out)
    hits = pairs = 0
    for axis in (0, 1):
        smooth = np.abs(np.diff(a, axis=axis)) <= POST_INPUT_STEP_MAX
        jump = np.abs(np.diff(b, axis=axis)) >= POST_OUTPUT_JUMP_MIN
        hits += int(np.count_nonzero(smooth & jump))
        pairs += smooth.size
    return hits / pairs if pairs else 0.0


def colour_cast(low: np.ndarray, out: np.ndarray) -> tuple[float, int]:
    """``(cast, pixels)``: over the pixels whose input max channel is >= 12 and whose output max
    channel is in 26..229 (inclusive), 100 x the largest absolute difference between the mean
    chromaticity ``(r, g, b) / (r + g + b)`` of the output and that of the input; ``pixels`` is the
    number of qualifying pixels (``cast`` is 0 when there are none)."""
    low, out = _pair(low, out)
    out_max = max_channel(out)
    chosen = (max_channel(low) >= CAST_INPUT_MIN) & (out_max >= CAST_OUTPUT_MIN) & (out_max <= CAST_OUTPUT_MAX)
    o = out[chosen].astype(np.float64)
    i = low[chosen].astype(np.float64)
    o_sum, i_sum = o.sum(axis=1), i.sum(axis=1)
    keep = (o_sum > 0) & (i_sum > 0)  # always true given the thresholds; kept for the definition's sake
    count = int(np.count_nonzero(keep))
    if count == 0:
        return 0.0, 0
    o_chroma = (o[keep] / o_sum[keep, None]).mean(axis=0)
    i_chroma = (i[keep] / i_sum[keep, None]).mean(axis=0)
    return float(100.0 * np.abs(o_chroma - i_chroma).max()), count


@dataclass(frozen=True)
class PhotoMeasures:
    """The measures of one photo (see the module's docstring)."""

    clip: float
    crush: float
    bright: float
    post: float
    cast: float
    cast_pixels: int
    """Pixels that qualified for ``cast`` (0: ``cast`` is 0 by definition, not measured)."""
    width: int
    height: int

    @property
    def artefact(self) -> float:
        """The combined artefact score that orders the contact sheet: ``clip + crush + post + cast / 100``
        (three fractions of pixels or pairs, plus the chromaticity shift as a fraction)."""
        return self.clip + self.crush + self.post + self.cast / 100.0

    def to_dict(self) -> dict[str, float | int]:
        return {"clip": self.clip, "crush": self.crush, "bright": self.bright, "post": self.post, "cast": self.cast,
                "cast_pixels": self.cast_pixels, "artefact": self.artefact, "width": self.width, "height": self.height}


def measure(low: np.ndarray, out: np.ndarray) -> PhotoMeasures:
    """All measures of one photo: ``low`` the input, ``out`` the enhanced output, both ``H x W x 3``
    uint8 arrays of the same size."""
    low, out = _pair(low, out)
    cast, pixels = colour_cast(low, out)
    return PhotoMeasures(clip=clip_fraction(low, out), crush=crush_fraction(low, out), bright=brightness(out),
                         post=posterisation(low, out), cast=cast, cast_pixels=pixels,
                         width=int(out.shape[1]), height=int(out.shape[0]))


# ---------------------------------------------------------------------------- results

@dataclass
class NoReferenceResult:
    """Per-photo measures (in file-name order), their means and worst values; with a contact sheet
    requested, the thumbnails of the photos with the largest artefact scores."""

    per_image: dict[str, PhotoMeasures] = field(default_factory=dict)
    sheet: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict, repr=False)
    """``name -> (input, output)`` thumbnails (uint8) of at most ``sheet_rows`` photos."""

    def _check(self) -> None:
        if not self.per_image:
            raise ValueError("no photos were measured")

    @property
    def mean(self) -> dict[str, float]:
        """The plain mean over photos of each measure."""
        self._check()
        return {m: statistics.fmean(getattr(p, m) for p in self.per_image.values()) for m in MEASURES}

    @property
    def worst_image(self) -> dict[str, str]:
        """The photo with the worst value of each measure (the first in file-name order on ties)."""
        self._check()
        names = list(self.per_image)
        chosen = {}
        for m in MEASURES:
            values = [getattr(self.per_image[n], m) for n in names]
            target = min(values) if m in LOWER_IS_WORSE else max(values)
            chosen[m] = names[values.index(target)]
        return chosen

    @property
    def worst(self) -> dict[str, float]:
        """The worst value of each measure over photos: the maximum, for ``bright`` the minimum."""
        return {m: getattr(self.per_image[name], m) for m, name in self.worst_image.items()}

    def ranked(self, names: Iterable[str] | None = None) -> list[str]:
        """Photo names (all, or those of ``names``) by decreasing :attr:`PhotoMeasures.artefact` score,
        file-name order on ties."""
        order = {name: index for index, name in enumerate(self.per_image)}
        chosen = self.per_image if names is None else names
        return sorted(chosen, key=lambda n: (-self.per_image[n].artefact, order[n]))

    def to_dict(self) -> dict[str, object]:
        """``{"mean": {measure: value}, "worst": {measure: value}, "worst_image": {measure: name},
        "per_image": {name: {clip, crush, bright, post, cast, cast_pixels, artefact, width, height}}}``
        (the ``--json`` file)."""
        return {"mean": self.mean, "worst": self.worst, "worst_image": self.worst_image,
                "per_image": {name: m.to_dict() for name, m in self.per_image.items()}}

    def write_json(self, path: str | os.PathLike[str], extra: dict[str, object] | None = None) -> Path:
        """Write :meth:`to_dict` (plus ``extra`` keys, e.g. the checkpoint) atomically."""
        return write_json_atomic(path, {**self.to_dict(), **(extra or {})})


def format_table(result: NoReferenceResult) -> str:
    """A plain-text table: one row per photo, then the mean and the worst value of each measure."""
    width = max([len("worst")] + [len(name) for name in result.per_image])
    lines = [f"{'image':<{width}}  {'clip':>6}  {'crush':>6}  {'bright':>6}  {'post':>6}  {'cast':>5}  {'cast px':>9}"]

    def row(name: str, values: dict[str, float], pixels: str) -> str:
        return (f"{name:<{width}}  {values['clip']:>6.3f}  {values['crush']:>6.3f}  {values['bright']:>6.3f}  "
                f"{values['post']:>6.3f}  {values['cast']:>5.1f}  {pixels:>9}")

    for name, m in result.per_image.items():
        lines.append(row(name, m.to_dict(), str(m.cast_pixels)))
    lines.append(row("mean", result.mean, ""))
    lines.append(row("worst", result.worst, ""))
    return "\n".join(lines)


# ---------------------------------------------------------------------------- folders

@dataclass(frozen=True)
class NoReferencePhoto:
    """A low-light input and, when it was enhanced elsewhere, its output (same file stem)."""

    name: str
    """The input's file name: the photo's key in tables and JSON, in both modes."""
    low: Path
    output: Path | None = None



def _images(folder: str | os.PathLike[str], key: str) -> list[Path]:
    root = Path(folder)
    if not root.is_dir():
        raise UsageError(f"`{key}` {root}: no such folder", keys=(key,))
    found = find_images([root])
    if not found:
        raise UsageError(f"`{key}` {root}: no image files", keys=(key,))
    return found


def _by_stem(paths: list[Path], key: str, folder: str | os.PathLike[str]) -> dict[str, Path]:
    stems: dict[str, Path] = {}
    for path in paths:
        if path.stem in stems:
            raise UsageError(f"`{key}` {folder}: {stems[path.stem].name} and {path.name} share the stem "
                             f"{path.stem!r}; keep one", keys=(key,))
        stems[path.stem] = path
    return stems


def find_low_light(folder: str | os.PathLike[str], key: str = "no_reference") -> list[NoReferencePhoto]:
    """The images of ``folder`` (not its sub-folders), in natural name order, to be enhanced."""
    paths = _images(folder, key)
    return [NoReferencePhoto(p.name, p) for p in sorted(paths, key=lambda p: natural_key(p.name))]


def _listing(names: list[str]) -> str:
    return ", ".join(names[:5]) + (" ..." if len(names) > 5 else "")


def match_outputs(outputs: str | os.PathLike[str], inputs: str | os.PathLike[str],
                  outputs_key: str = "no_reference", inputs_key: str = "inputs") -> list[NoReferencePhoto]:
    """Pair the enhanced images of ``outputs`` with the low-light images of ``inputs`` by file stem
    (``a.png`` with ``a.jpg``); every output needs its input and every input its output."""
    out = _by_stem(_images(outputs, outputs_key), outputs_key, outputs)
    low = _by_stem(_images(inputs, inputs_key), inputs_key, inputs)
    no_input = sorted(set(out) - set(low))
    no_output = sorted(set(low) - set(out))
    if no_input or no_output:
        details = []
        if no_input:
            details.append(f"no input for {_listing([out[s].name for s in no_input])}")
        if no_output:
            details.append(f"no output for {_listing([low[s].name for s in no_output])}")
        raise UsageError(f"`{outputs_key}` {outputs} and `{inputs_key}` {inputs} must hold the same file stems: "
                         f"{'; '.join(details)}", keys=(outputs_key, inputs_key))
    photos = [NoReferencePhoto(low[s].name, low[s], out[s]) for s in low]
    return sorted(photos, key=lambda p: natural_key(p.name))


def _read_levels(path: Path, what: str) -> tuple[np.ndarray, torch.Tensor]:
    try:
        rgb = read_image(path).rgb
    except ImageReadError as exc:
        raise UsageError(f"{path}: cannot read the {what} ({exc})") from None
    return to_uint(rgb, 8), rgb


def _thumbnail(levels: np.ndarray, height: int) -> np.ndarray:
    from PIL import Image

    image = Image.fromarray(levels)
    scale = min(height / image.height, SHEET_MAX_ASPECT * height / image.width)  # very wide photos: lower
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    method = Image.Resampling.LANCZOS if scale < 1 else Image.Resampling.NEAREST
    return np.asarray(image.resize(size, method))


def evaluate_no_reference(
    photos: Sequence[NoReferencePhoto],
    checkpoint: Checkpoint | None = None,
    *,
    stage: str = "final",
    device: torch.device | str = "cpu",
    sheet_rows: int = 0,
    progress: Callable[[Iterable[NoReferencePhoto]], Iterable[NoReferencePhoto]] | None = None,
) -> NoReferenceResult:
    """Measure every photo: photos with an ``output`` are read as they are (no model runs; then
    ``checkpoint`` must be ``None``), the others are enhanced with ``checkpoint`` (the network as
    trained, unfolded, as :func:`ruas_nni.inference.evaluation.evaluate` runs it). With
    ``sheet_rows``, the thumbnails of that many photos with the largest artefact scores are kept for
    :func:`contact_sheet`."""
    photos = list(photos)
    enhanced_elsewhere = [p.output is not None for p in photos]
    if any(enhanced_elsewhere) and not all(enhanced_elsewhere):
        raise ValueError("either every photo has an output or none has")
    if all(enhanced_elsewhere) and photos:
        if checkpoint is not None:
            raise ValueError("photos with outputs are measured without a model")
        return _measure(photos, None, sheet_rows, progress)
    if checkpoint is None:
        raise ValueError("photos without outputs need a checkpoint to enhance them")
    import torch

    from .enhance import Enhancer

    with Enhancer(checkpoint, stage=stage, device=torch.device(device), fold=False) as enhancer:
        return _measure(photos, enhancer, sheet_rows, progress)


def _measure(photos: list[NoReferencePhoto], enhancer: Callable | None, sheet_rows: int,
             progress: Callable[[Iterable[NoReferencePhoto]], Iterable[NoReferencePhoto]] | None) -> NoReferenceResult:
    result = NoReferenceResult()
    iterator = progress(photos) if progress is not None else photos
    for photo in iterator:
        low, rgb = _read_levels(photo.low, "input")
        if photo.output is None:
            out = to_uint(enhancer(rgb), 8)
        else:
            out, _ = _read_levels(photo.output, "output")
        if out.shape != low.shape:
            where = photo.output if photo.output is not None else photo.low
            raise UsageError(f"{where}: the output is {out.shape[1]}x{out.shape[0]} but its input {photo.low.name} is "
                             f"{low.shape[1]}x{low.shape[0]}")
        result.per_image[photo.name] = measure(low, out)
        if sheet_rows > 0:
            result.sheet[photo.name] = (_thumbnail(low, SHEET_ROW_HEIGHT), _thumbnail(out, SHEET_ROW_HEIGHT))
            for name in result.ranked(result.sheet)[sheet_rows:]:  # keep only the worst so far
                del result.sheet[name]
    return result


# ---------------------------------------------------------------------------- contact sheet

def _caption(rank: int, name: str, m: PhotoMeasures) -> str:
    return (f"{rank}. {name}  artefact {m.artefact:.3f} = clip {m.clip:.3f} + crush {m.crush:.3f} + post {m.post:.3f} "
            f"+ cast {m.cast:.1f}/100 ({m.cast_pixels} px)   bright {m.bright:.3f}")


def _font():
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=SHEET_FONT_SIZE)
    except (TypeError, ImportError, OSError):  # Pillow < 10.1 or without FreeType: the small bitmap font
        return ImageFont.load_default()


def _label(draw, xy: tuple[int, int], text: str, font) -> None:
    left, top, right, bottom = draw.textbbox(xy, text, font=font)
    draw.rectangle((left - 3, top - 2, right + 3, bottom + 2), fill=(0, 0, 0))
    draw.text(xy, text, fill=(255, 255, 255), font=font)


def contact_sheet(result: NoReferenceResult) -> bytes:
    """A PNG: one row per kept photo, by decreasing artefact score, each ``input | output`` at
    :data:`SHEET_ROW_HEIGHT` pixels high under a caption with the photo's name and measures."""
    from PIL import Image, ImageDraw

    if not result.sheet:
        raise ValueError("no contact-sheet thumbnails were kept (sheet_rows = 0)")
    names = result.ranked(result.sheet)
    font = _font()
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    captions = [_caption(rank, name, result.per_image[name]) for rank, name in enumerate(names, 1)]
    text_height = max(probe.textbbox((0, 0), c, font=font)[3] for c in captions) + 8
    widths = [result.sheet[n][0].shape[1] + SHEET_SEPARATOR + result.sheet[n][1].shape[1] for n in names]
    text_width = max(probe.textbbox((0, 0), c, font=font)[2] for c in captions) + 12
    width = max(max(widths), text_width) + 2 * SHEET_SEPARATOR
    row_height = text_height + SHEET_ROW_HEIGHT + SHEET_SEPARATOR
    sheet = Image.new("RGB", (width, SHEET_SEPARATOR + len(names) * row_height), (40, 40, 40))
    draw = ImageDraw.Draw(sheet)
    for index, (name, caption) in enumerate(zip(names, captions)):
        top = SHEET_SEPARATOR + index * row_height
        draw.text((SHEET_SEPARATOR + 2, top + 3), caption, fill=(255, 255, 255), font=font)
        low, out = result.sheet[name]
        y = top + text_height
        x = SHEET_SEPARATOR
        for panel, label in ((low, "input"), (out, "output")):
            sheet.paste(Image.fromarray(panel), (x, y))
            _label(draw, (x + 4, y + 3), label, font)
            x += panel.shape[1] + SHEET_SEPARATOR
    buffer = io.BytesIO()
    sheet.save(buffer, format="PNG")
    return buffer.getvalue()


def write_contact_sheet(path: str | os.PathLike[str], result: NoReferenceResult) -> Path:
    """Write :func:`contact_sheet` to ``path`` atomically."""
    data = contact_sheet(result)
    path = Path(path)
    with atomic_write(path) as handle:
        handle.write(data)
    return path
