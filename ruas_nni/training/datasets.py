"""Unpaired low-light images for search and training: random crops and flips, reproducible.

No ground truth is needed (the losses are reference-free). Every sample is a pure function of
``(seed, epoch, index)``, so a run that is stopped and resumed draws the same crops as one that
was not. Images are decoded once and kept as 8-bit arrays in memory.
"""

from __future__ import annotations

import logging
import os
import random
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from ..base.errors import UsageError
from ..base.images import ImageReadError, find_images, read_image

__all__ = ["scan_folders", "split_files", "UnpairedImages", "SeededShuffle"]

_log = logging.getLogger(__name__)


def scan_folders(folders: Sequence[str | os.PathLike[str]], key: str = "data") -> list[Path]:
    """All image files below ``folders`` (sorted per folder). A missing folder or one without
    images is a :class:`UsageError` naming it and ``key``, the argument that gave the folders."""
    if not folders:
        raise UsageError(f"`{key}`: give at least one folder of low-light images", keys=(key,))
    files: list[Path] = []
    for folder in folders:
        path = Path(folder)
        if not path.exists():
            raise UsageError(f"`{key}` {path}: no such folder", keys=(key,))
        found = find_images([path], recursive=True) if path.is_dir() else [path]
        if not found:
            raise UsageError(f"`{key}` {path}: no image files found (looked for .png, .jpg, .bmp, .tif ...)", keys=(key,))
        files.extend(found)
    return files


def split_files(files: Sequence[Path], val_fraction: float, seed: int) -> tuple[list[Path], list[Path]]:
    """A reproducible train / validation split; both sides get at least one image (the same one
    when there is only one)."""
    if not 0 <= val_fraction < 1:
        raise UsageError(f"validation fraction must be in [0, 1), got {val_fraction}")
    order = list(files)
    random.Random(seed).shuffle(order)
    n_val = min(max(1, round(len(order) * val_fraction)), len(order) - 1) if len(order) > 1 else 0
    if n_val == 0:
        return list(order), list(order)
    return sorted(order[n_val:]), sorted(order[:n_val])


class UnpairedImages(Dataset):
    """Low-light images as ``3 x crop x crop`` float tensors in ``[0, 1]``.

    Parameters
    ----------
    files
        Image files. Unreadable files and files smaller than ``crop`` are left out with a warning;
        when nothing usable remains, a :class:`UsageError` says why.
    crop
        Side of the random square crop; ``None`` keeps whole images (batch size 1 then).
    flip
        Random horizontal and vertical flips.
    seed
        Base of every random draw: sample ``index`` of epoch ``e`` is the same in every run.
    repeats
        How many times each image appears per epoch (different crops each time).
    role
        What these images are, for the warnings (e.g. "the search's training split (4 of 8 images ...)").
    """

    def __init__(self, files: Sequence[Path], crop: int | None = 320, flip: bool = True, seed: int = 0,
                 repeats: int = 1, role: str | None = None) -> None:
        if crop is not None and crop < 1:
            raise UsageError(f"`crop` must be a positive number of pixels, got {crop}", keys=("crop",))
        self.crop = crop
        self.flip = flip
        self.seed = seed
        self.repeats = max(1, int(repeats))
        self.epoch = 0
        self.files: list[Path] = []
        self.images: list[np.ndarray] = []
        unreadable: list[str] = []
        too_small: list[str] = []
        largest = (0, 0)
        for path in files:
            try:
                image = read_image(path)
            except ImageReadError as exc:
                unreadable.append(f"{path} ({exc})")
                continue
            w, h = image.size
            largest = max(largest, (min(w, h), w * h))
            if crop is not None and (w < crop or h < crop):
                too_small.append(str(path))
                continue
            self.files.append(Path(path))
            self.images.append((image.rgb * 255.0).round().to(torch.uint8).numpy())
        among = f" of {role}" if role else ""
        for item in unreadable:
            _log.warning("skipping unreadable image%s: %s", among, item)
        if too_small:
            _log.warning("skipping %d of the %d image(s)%s: smaller than the %d-pixel crop, e.g. %s",
                         len(too_small), len(files), among, crop, too_small[0])
        if not self.images:
            if too_small:
                raise UsageError(
                    f"`crop` {crop} is larger than every image (the largest has a shortest side of {largest[0]} "
                    "pixels); use a smaller `crop`", keys=("crop",)
                )
            raise UsageError(f"no readable images among {len(files)} file(s), e.g. {unreadable[0] if unreadable else '-'}")

    def set_epoch(self, epoch: int) -> None:
        """Make the crops of ``epoch`` (call at the start of every epoch)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.images) * self.repeats

    def __getitem__(self, index: int) -> torch.Tensor:
        array = self.images[index % len(self.images)]
        rng = np.random.default_rng([self.seed, self.epoch, index])
        h, w = array.shape[1:]
        if self.crop is not None:
            top = int(rng.integers(0, h - self.crop + 1))
            left = int(rng.integers(0, w - self.crop + 1))
            array = array[:, top: top + self.crop, left: left + self.crop]
        if self.flip:
            if rng.random() < 0.5:
                array = array[:, :, ::-1]
            if rng.random() < 0.5:
                array = array[:, ::-1, :]
        return torch.from_numpy(np.ascontiguousarray(array)).float() / 255.0


class SeededShuffle(Sampler[int]):
    """A shuffle whose order is a pure function of ``(seed, epoch)``; call :meth:`set_epoch`."""

    def __init__(self, length: int, seed: int = 0) -> None:
        self.length = length
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self) -> Iterator[int]:
        return iter(np.random.default_rng([self.seed, self.epoch, 7]).permutation(self.length).tolist())

    def __len__(self) -> int:
        return self.length
