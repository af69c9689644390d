"""Built-in demo data: low-light images synthesised from real photographs that scikit-image ships.

The project cannot ship the LOL or DICM images, so ``make demo`` and the tests make their own
low-light pairs with a simple, documented camera model (fixed seed, same bytes every time):

1. **Linearise**: ``x = (v / 255) ** 2.2`` turns the 8-bit sRGB-like photograph into scene light.
2. **Expose**: ``s = e * x`` with an exposure ``e`` drawn in ``[EXPOSURE_MIN, EXPOSURE_MAX]``
   (about 3.3 to 4.6 stops darker than the original).
3. **Shot noise** (Poisson): ``p ~ Poisson(s * FULL_WELL) / FULL_WELL``: a sensor that collects
   ``FULL_WELL`` photo-electrons at full white.
4. **Read noise** (Gaussian): ``r = p + N(0, READ_NOISE^2)``.
5. **Tone and quantise**: ``y = round(255 * clip(r, 0, 1) ** (1 / 2.2))``.

The well-exposed photograph is the ground truth of its pair. Training images (``train/``) and
evaluation pairs (``eval/low``, ``eval/high``) come from different photographs.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
from PIL import Image

from ..base.atomic import atomic_write

__all__ = ["DemoData", "make_demo_data", "synthesize_low_light", "SENSOR"]

EXPOSURE_MIN = 0.04
EXPOSURE_MAX = 0.10
FULL_WELL = 1000.0
READ_NOISE = 0.002
GAMMA = 2.2
SEED = 2021

SENSOR = {
    "gamma": GAMMA,
    "exposure_range": [EXPOSURE_MIN, EXPOSURE_MAX],
    "full_well_electrons": FULL_WELL,
    "read_noise_sigma": READ_NOISE,
    "seed": SEED,
}

# scikit-image sample photographs (skimage/data): name -> file.
TRAIN_PHOTOS = {"astronaut": "astronaut.png", "rocket": "rocket.jpg", "motorcycle": "motorcycle_left.png"}
EVAL_PHOTOS = {"coffee": "coffee.png", "chelsea": "chelsea.png", "camera": "camera.png"}
TRAIN_EXPOSURES_PER_PHOTO = 2
VERSION = 1


@dataclass(frozen=True)
class DemoData:
    """Where the demo data lies."""

    root: Path
    train: Path
    """Unpaired low-light images for search and training."""
    eval: Path
    """Paired folder: ``low/`` and ``high/`` with the same file names."""


def synthesize_low_light(photo: np.ndarray, exposure: float, rng: np.random.Generator) -> np.ndarray:
    """Apply the camera model above to an ``H x W x 3`` uint8 photograph; return uint8."""
    linear = (photo.astype(np.float64) / 255.0) ** GAMMA
    electrons = rng.poisson(linear * exposure * FULL_WELL)
    signal = electrons / FULL_WELL + rng.normal(0.0, READ_NOISE, size=linear.shape)
    toned = np.clip(signal, 0.0, 1.0) ** (1.0 / GAMMA)
    return np.round(toned * 255.0).astype(np.uint8)


def _photo(file_name: str) -> np.ndarray:
    source = resources.files("skimage") / "data" / file_name
    with Image.open(str(source)) as image:
        return np.asarray(image.convert("RGB"))


def _save(array: np.ndarray, path: Path) -> None:
    with atomic_write(path) as handle:
        Image.fromarray(array).save(handle, format="PNG")


def make_demo_data(root: str | os.PathLike[str]) -> DemoData:
    """Write the demo data under ``root`` (skipped when a complete copy is already there)."""
    root = Path(root)
    data = DemoData(root, root / "train", root / "eval")
    manifest_path = root / "manifest.json"
    manifest = {"version": VERSION, "sensor": SENSOR, "train": {}, "eval": {}}
    if manifest_path.is_file():
        try:
            if json.loads(manifest_path.read_text()).get("version") == VERSION:
                return data
        except (OSError, ValueError):
            pass
    rng = np.random.default_rng(SEED)
    for name, file_name in TRAIN_PHOTOS.items():
        photo = _photo(file_name)
        for index in range(TRAIN_EXPOSURES_PER_PHOTO):
            exposure = float(rng.uniform(EXPOSURE_MIN, EXPOSURE_MAX))
            out = f"{name}_{index}.png"
            _save(synthesize_low_light(photo, exposure, rng), data.train / out)
            manifest["train"][out] = {"photo": f"skimage/data/{file_name}", "exposure": exposure}
    for name, file_name in EVAL_PHOTOS.items():
        photo = _photo(file_name)
        exposure = float(rng.uniform(EXPOSURE_MIN, EXPOSURE_MAX))
        _save(synthesize_low_light(photo, exposure, rng), data.eval / "low" / f"{name}.png")
        _save(photo, data.eval / "high" / f"{name}.png")
        manifest["eval"][f"{name}.png"] = {"photo": f"skimage/data/{file_name}", "exposure": exposure}
    with atomic_write(manifest_path) as handle:
        handle.write((json.dumps(manifest, indent=2) + "\n").encode())
    return data
