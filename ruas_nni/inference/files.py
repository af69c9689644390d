"""The file side of ``ruas-nni enhance``, without PyTorch: reading 8-bit images, writing PNGs,
choosing output names, and :func:`enhance_files`, which overlaps decoding, the network and encoding.

Nothing here imports ``torch`` at module level: with a cached ONNX graph
(:mod:`ruas_nni.inference.graph_cache`) a whole ``ruas-nni enhance`` run needs only ONNX Runtime,
NumPy and Pillow. :mod:`ruas_nni.inference.enhance` re-exports these names.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
import warnings
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Protocol, Sequence

import numpy as np
from PIL import Image, ImageOps

from ..base.atomic import atomic_write
from ..base.images import _SIXTEEN_BIT_MODES, ImageReadError, _png_bit_depth, read_image, write_png
from .tiling import Tile

if TYPE_CHECKING:
    import torch

DEFAULT_CHECKPOINT = "default.pt"

DEFAULT_PNG_COMPRESSION: int | None = None
"""zlib level for 8-bit PNG outputs; ``None``: zlib's run-length strategy (``Z_RLE``), which on
enhanced photos writes files as small as Pillow's default (level 6) two to three times faster
(measured in ``docs/speed.md``). A level 0-9 uses zlib's default strategy at that level."""

_Z_RLE = 3


def default_checkpoint_path() -> Path | None:
    """The model shipped inside the package, or ``None`` while none is shipped."""
    candidate = resources.files("ruas_nni") / "pretrained" / DEFAULT_CHECKPOINT
    path = Path(str(candidate))
    return path if path.is_file() else None


def available_cores() -> int:
    """CPU cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


_ALLOCATOR_TUNED = False


def tune_allocator() -> bool:
    """Ask glibc's ``malloc`` to keep freed memory for reuse instead of unmapping it.

    By default glibc serves every allocation above a (self-adjusting) threshold with a fresh
    ``mmap`` and returns it on ``free``; the kernel then zeroes every page again on first touch. For
    a network that allocates dozens of 1-30 MB tensors per image that costs more time than the
    arithmetic (measured: 114 -> 65 ms per 600x400 image on one core). Raising the mmap threshold to
    its maximum (32 MB) and the trim threshold to 1 GB keeps such blocks in the heap. This changes
    the process's allocator settings, so it is called by the command-line tools, not on import.
    Returns whether the settings were applied (only with glibc; ``RUAS_NNI_MALLOC_TUNING=0`` in
    the environment turns it off).
    """
    global _ALLOCATOR_TUNED
    if _ALLOCATOR_TUNED:
        return True
    if os.environ.get("RUAS_NNI_MALLOC_TUNING", "1") == "0":  # for measuring what it brings
        return False
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    m_trim_threshold, m_mmap_threshold, m_arena_max = -1, -3, -8
    applied = bool(mallopt(m_mmap_threshold, 32 * 1024 * 1024)) and bool(mallopt(m_trim_threshold, 1 << 30))
    if os.environ.get("RUAS_NNI_ARENAS", "1") == "1":
        mallopt(m_arena_max, 1)
    _ALLOCATOR_TUNED = applied
    return applied


class PendingImage:
    """An image whose tiles are being enhanced straight into a preallocated output; :meth:`result`
    waits for them and returns that output (``3 x H x W`` float32 or ``H x W x 3`` uint8)."""

    def __init__(self, output: torch.Tensor | np.ndarray, tiles: list[Tile], futures: list[Future]) -> None:
        self.output = output
        self.tiles = tiles
        self.futures = futures

    def result(self):
        """The enhanced image: float32 ``3 x H x W`` in ``[0, 1]`` on the CPU for :meth:`Enhancer.submit`,
        uint8 ``H x W x 3`` for :meth:`Enhancer.submit_uint8`."""
        for future in self.futures:
            future.result()
        return self.output

    def cancel(self) -> None:
        for future in self.futures:
            future.cancel()


def _run_now(function: Callable[[Tile], None], tile: Tile) -> Future:
    """A finished future holding ``function(tile)`` or the exception it raised (as a pool would)."""
    future: Future = Future()
    try:
        future.set_result(function(tile))
    except Exception as exc:  # noqa: BLE001 - handed to the caller through the future, like a pool
        future.set_exception(exc)
    return future


# ---------------------------------------------------------------------------------------------
# Whole folders: decode ahead, enhance, encode behind.


@dataclass(frozen=True)
class EnhanceJob:
    """One input file and the PNG it becomes."""

    source: Path
    target: Path


@dataclass
class EnhanceSummary:
    """What :func:`enhance_files` did."""

    written: list[Path] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)


def write_enhanced(path: Path, rgb: torch.Tensor, alpha: torch.Tensor | None, bit_depth: int,
                   png_compression: int | None = DEFAULT_PNG_COMPRESSION) -> None:
    """Write an enhanced image with :func:`ruas_nni.base.images.write_png` (atomically); 8-bit PNGs with
    zlib's run-length strategy, or at level ``png_compression``."""
    if png_compression is None:
        options = {"compress_level": 6, "compress_type": _Z_RLE}
    else:
        options = {"compress_level": int(png_compression)}
    write_png(path, rgb, alpha, bit_depth, png_options=options)


def _write_uint8(path: Path, rgb: np.ndarray, alpha: np.ndarray | None,
                 png_compression: int | None = DEFAULT_PNG_COMPRESSION) -> None:
    """Write an ``H x W x 3`` uint8 result (and an ``H x W`` uint8 alpha) as an 8-bit PNG, atomically,
    with the same encoder options as :func:`write_enhanced`."""
    if png_compression is None:
        options = {"compress_level": 6, "compress_type": _Z_RLE}
    else:
        options = {"compress_level": int(png_compression)}
    array = np.dstack([rgb, alpha]) if alpha is not None else rgb
    image = Image.fromarray(array)
    with atomic_write(path) as handle:
        image.save(handle, format="PNG", **options)


@dataclass
class _Decoded:
    """An input as :func:`enhance_files` holds it: 8-bit ``H x W x 3`` (+ ``H x W`` alpha) arrays for
    ordinary 8-bit images (a quarter of the memory of floats), else the float :class:`LoadedImage`."""

    rgb8: np.ndarray | None = None
    alpha8: np.ndarray | None = None
    loaded: object | None = None  # ruas_nni.data.LoadedImage

    @property
    def pixels(self) -> int:
        if self.rgb8 is not None:
            return int(self.rgb8.shape[0] * self.rgb8.shape[1])
        rgb = self.loaded.rgb  # type: ignore[union-attr]
        return int(rgb.shape[1] * rgb.shape[2])


def _read_8bit(path: Path) -> _Decoded:
    """Decode ``path`` for :func:`enhance_files`. 8-bit images are kept as uint8 arrays, decoded
    exactly as :func:`ruas_nni.data.read_image` decodes them (EXIF orientation, RGB / RGBA
    conversion); anything else (16-bit, float, unreadable) goes through ``read_image`` itself, which
    also gives the one-line reason for a file it cannot read."""
    try:
        if _png_bit_depth(path) != 16:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                with Image.open(path) as opened:
                    image = ImageOps.exif_transpose(opened)
                    image.load()
            if image.width >= 1 and image.height >= 1 and image.mode not in _SIXTEEN_BIT_MODES | {"F"}:
                has_alpha = image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
                    image.mode == "P" and "transparency" in image.info)
                array = np.asarray(image.convert("RGBA" if has_alpha else "RGB"))
                del image
                if has_alpha:
                    return _Decoded(np.ascontiguousarray(array[..., :3]), np.ascontiguousarray(array[..., 3]))
                return _Decoded(np.ascontiguousarray(array))
    except Exception:  # noqa: BLE001 - read_image below decides, and says why in one line
        pass
    return _Decoded(loaded=read_image(path))


def _describe(exc: BaseException) -> str:
    text = " ".join(str(exc).split())[:200]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class ImageEnhancer(Protocol):
    """What :func:`enhance_files` needs of an enhancer (:class:`ruas_nni.inference.enhance.Enhancer`,
    :class:`ruas_nni.inference.graph_enhancer.GraphEnhancer`)."""

    workers: int

    def submit(self, rgb: torch.Tensor, min_tiles: int = 1) -> PendingImage: ...

    def submit_uint8(self, rgb: np.ndarray, min_tiles: int = 1) -> PendingImage: ...


def enhance_files(enhancer: ImageEnhancer, jobs: Sequence[EnhanceJob], *,
                  png_compression: int | None = DEFAULT_PNG_COMPRESSION,
                  on_error: Callable[[Path, str], None] | None = None,
                  on_done: Callable[[EnhanceJob], None] | None = None,
                  read_ahead: int = 2, in_flight_pixels: int = 12_000_000) -> EnhanceSummary:
    """Enhance every job's source into its target, overlapping decoding, the network and encoding.

    The next ``read_ahead`` images are decoded in a background thread, the network works on up to
    ``workers + 1`` images at once (their tiles queue on the worker threads in order), and finished
    images are encoded and written by another background thread. 8-bit images stay 8-bit from
    decoding to encoding (:meth:`Enhancer.submit_uint8`); large images are not held several at a
    time (at most ``in_flight_pixels`` pixels running or waiting to be written, at least one image),
    so peak memory is bounded by the tiles in flight plus a few 8-bit copies of one image. A file
    that cannot be read or written is reported through ``on_error(path, reason)`` and skipped;
    nothing is written for it.
    """
    summary = EnhanceSummary()

    def fail(path: Path, reason: str) -> None:
        summary.failed.append((path, reason))
        if on_error is not None:
            on_error(path, reason)

    def read(job: EnhanceJob) -> _Decoded:
        return _read_8bit(job.source)

    def write(job: EnhanceJob, result, alpha8: np.ndarray | None, loaded) -> None:
        if isinstance(result, np.ndarray):
            _write_uint8(job.target, result, alpha8, png_compression)
        else:
            write_enhanced(job.target, result, loaded.alpha, loaded.bit_depth, png_compression)

    def start(decoded: _Decoded) -> PendingImage:
        if decoded.rgb8 is not None:
            return enhancer.submit_uint8(decoded.rgb8)
        return enhancer.submit(decoded.loaded.rgb)  # type: ignore[union-attr]

    reader = ThreadPoolExecutor(1, thread_name_prefix="ruas-read")
    writer = ThreadPoolExecutor(1, thread_name_prefix="ruas-write")
    reads: deque[tuple[EnhanceJob, Future]] = deque()
    running: deque[tuple[EnhanceJob, _Decoded, PendingImage]] = deque()
    writes: deque[tuple[EnhanceJob, Future, int]] = deque()
    pending_jobs = iter(jobs)
    max_running = enhancer.workers + 1
    max_queued_writes = 2

    last_pixels = 0

    def fill_reads() -> None:
        # Large images: decode one ahead only (each decoded image is held until it is enhanced).
        while len(reads) < (read_ahead if 4 * last_pixels <= in_flight_pixels else 1):
            job = next(pending_jobs, None)
            if job is None:
                return
            reads.append((job, reader.submit(read, job)))

    def finish_write(block: bool, limit: int | None = None) -> None:
        count = 0
        while writes and (block or writes[0][1].done()) and (limit is None or count < limit):
            count += 1
            job, future, _ = writes.popleft()
            try:
                future.result()
            except Exception as exc:  # noqa: BLE001 - report any failure to write as this file's
                fail(job.source, f"cannot write {job.target} ({_describe(exc)})")
            else:
                summary.written.append(job.target)
                if on_done is not None:
                    on_done(job)

    def in_flight() -> int:
        return sum(d.pixels for _, d, _ in running) + sum(p for _, _, p in writes)

    def finish_oldest() -> None:
        job, decoded, pending = running.popleft()
        try:
            result = pending.result()
        except Exception as exc:  # noqa: BLE001 - e.g. out of memory: this file fails, the rest go on
            fail(job.source, f"enhancement failed ({_describe(exc)})")
            return
        # The input itself is not passed on: only what writing needs.
        writes.append((job, writer.submit(write, job, result, decoded.alpha8, decoded.loaded), decoded.pixels))
        del result, decoded
        finish_write(block=False)
        # bound the memory held by images waiting to be written
        while len(writes) > max_queued_writes or (len(writes) > 1 and in_flight() > in_flight_pixels):
            finish_write(block=True, limit=1)

    try:
        fill_reads()
        while reads:
            job, future = reads.popleft()
            fill_reads()
            try:
                decoded = future.result()
            except ImageReadError as exc:
                fail(job.source, str(exc))
                continue
            except Exception as exc:  # noqa: BLE001 - the loader should raise ImageReadError; never crash
                fail(job.source, f"cannot read ({_describe(exc)})")
                continue
            last_pixels = decoded.pixels
            while running and (len(running) >= max_running or in_flight() + decoded.pixels > in_flight_pixels):
                finish_oldest()
            running.append((job, decoded, start(decoded)))
            del decoded
            finish_write(block=False)
        while running:
            finish_oldest()
        finish_write(block=True)
    except BaseException:
        for _, future in reads:
            future.cancel()
        for _, _, pending in running:
            pending.cancel()
        raise
    finally:
        reader.shutdown(wait=True, cancel_futures=True)
        # A write that has started finishes (atomically: temporary name, then rename); queued ones
        # are dropped when interrupted.
        writer.shutdown(wait=True, cancel_futures=True)
    return summary


# ---------------------------------------------------------------------------------------------
# Output names: never an input, never two inputs onto one output.


@dataclass
class JobPlan:
    """What :func:`plan_jobs` decided."""

    jobs: list[EnhanceJob] = field(default_factory=list)
    existing: list[EnhanceJob] = field(default_factory=list)
    """Jobs whose output exists already (kept: not run unless ``overwrite``)."""
    notes: list[str] = field(default_factory=list)
    """One line per renamed output, saying why."""


def _inode(path: Path) -> tuple[int, int] | None:
    try:
        status = path.stat()
    except OSError:
        return None
    return status.st_dev, status.st_ino


def plan_jobs(sources: Iterable[tuple[Path, Path | None]], out_dir: Path, overwrite: bool = False) -> JobPlan:
    """Choose an output PNG for every input: ``OUTDIR/<sub-folder>/<stem>.png``.

    ``sources`` are ``(file, folder it was found in or None)``; files found in a folder keep their
    sub-folder below it. The same file given twice is enhanced once. Inputs that would share an
    output (``a.jpg`` and ``a.png``) get ``a_jpg.png`` and ``a_png.png``; an output that would be an
    input file (``-o`` is the input folder and the input is a PNG) becomes ``<stem>_enhanced.png``;
    a number is appended while a name is still taken. Every such rename is explained in ``notes``.
    Existing outputs go to ``existing`` unless ``overwrite``.
    """
    plan = JobPlan()
    unique: list[Path] = []
    roots: dict[Path, Path | None] = {}
    seen: set[Path] = set()
    for path, root in sources:
        key = path.resolve()
        if key in seen:
            continue
        seen.add(key)
        unique.append(path)
        roots[path] = root
    inputs = seen
    input_inodes = {_inode(p) for p in unique} - {None}

    def is_input(target: Path) -> bool:
        """Whether writing ``target`` would replace an input (same path, symlink or hard link)."""
        return target.resolve() in inputs or (target.exists() and _inode(target) in input_inodes)

    def wanted(path: Path, stem: str) -> Path:
        root = roots[path]
        parent = path.parent.relative_to(root) if root is not None else Path()
        return out_dir / parent / f"{stem}.png"

    by_name: dict[Path, list[Path]] = {}
    for path in unique:
        by_name.setdefault(wanted(path, path.stem).resolve(), []).append(path)
    taken: set[Path] = set()
    for path in unique:
        target = wanted(path, path.stem)
        clash = by_name[target.resolve()]
        if len(clash) > 1:
            suffix = path.suffix.lstrip(".").lower() or "noext"
            target = wanted(path, f"{path.stem}_{suffix}")
            others = ", ".join(str(p) for p in clash if p is not path)
            plan.notes.append(f"{path}: {others} would get the same output name; writing {target}")
        if is_input(target):
            renamed = wanted(path, f"{target.stem}_enhanced")
            plan.notes.append(f"{path}: output {target} would overwrite an input; writing {renamed}")
            target = renamed
        base, number = target, 2
        while is_input(target) or target.resolve() in taken:
            target = base.with_name(f"{base.stem}_{number}.png")
            number += 1
        if target != base:
            plan.notes.append(f"{path}: {base} is taken; writing {target}")
        taken.add(target.resolve())
        job = EnhanceJob(path, target)
        if target.exists() and not overwrite:
            plan.existing.append(job)
        else:
            plan.jobs.append(job)
    return plan

