#!/usr/bin/env python
"""Regenerate the golden outputs under ``tests/golden/`` (checked by ``tests/test_golden.py``).

    python scripts/make_golden.py

Run it after a deliberate change of the network's numbers, e.g. when ``ruas_nni/pretrained/default.pt``
is replaced by a newly trained model, and commit the result. It writes:

* ``inputs.npz``: ``64 x 64`` centre crops (uint8, ``H x W x 3``) of the built-in demo's low-light
  evaluation images (:func:`ruas_nni.training.demo_data.make_demo_data`), one array per image;
* ``<model>.npz`` for each model (``default``: the shipped default model; ``paper_seed0``: the paper
  genotype, randomly initialised after ``torch.manual_seed(0)``), holding for every image and for
  the ``final`` (IEM + NRM) and ``iem`` outputs of ``network.enhance`` on its crop (float32, not
  clipped): ``<image>/<stage>/u8`` the whole ``64 x 64`` output in 8 bits (``round(255 * clip)``,
  ``3 x H x W``) and ``<image>/<stage>/f32`` its ``16 x 16`` centre in float32; plus ``sha256``,
  the checkpoint's hash (``default`` only).

Everything runs on the CPU in float32, one thread.
"""

from __future__ import annotations

import hashlib
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

GOLDEN = ROOT / "tests" / "golden"
CROP = 64
PATCH = 16
MODELS = ("default", "paper_seed0")
STAGES = ("final", "iem")


def demo_crops() -> dict[str, np.ndarray]:
    """The ``CROP x CROP`` centre crop of every demo evaluation input, by image stem."""
    from PIL import Image

    from ruas_nni.training.demo_data import make_demo_data

    with tempfile.TemporaryDirectory() as tmp:
        data = make_demo_data(Path(tmp) / "demo")
        crops = {}
        for path in sorted((data.eval / "low").glob("*.png")):
            with Image.open(path) as image:
                pixels = np.asarray(image.convert("RGB"))
            top, left = (pixels.shape[0] - CROP) // 2, (pixels.shape[1] - CROP) // 2
            crops[path.stem] = np.ascontiguousarray(pixels[top:top + CROP, left:left + CROP])
    return crops


def default_checkpoint_path() -> Path:
    from ruas_nni.inference.enhance import default_checkpoint_path as packaged

    path = packaged()
    if path is None:
        raise SystemExit("no default model is shipped (ruas_nni/pretrained/default.pt)")
    return path


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def build(model: str) -> torch.nn.Module:
    """The network of ``model`` (see the module doc), in eval mode."""
    from ruas_nni.model.checkpoint import load_checkpoint
    from ruas_nni.model.export import export
    from ruas_nni.model.genotype import PAPER_GENOTYPE

    if model == "default":
        return load_checkpoint(default_checkpoint_path()).build().eval()
    if model == "paper_seed0":
        torch.manual_seed(0)
        return export(PAPER_GENOTYPE).eval()
    raise ValueError(f"unknown golden model {model!r}")


def as_input(crop: np.ndarray) -> torch.Tensor:
    """``H x W x 3`` uint8 -> ``1 x 3 x H x W`` float32 in ``[0, 1]``."""
    return torch.from_numpy(crop).permute(2, 0, 1).unsqueeze(0).float() / 255


def to_u8(image: torch.Tensor) -> np.ndarray:
    return torch.round(image.clamp(0, 1) * 255).to(torch.uint8).numpy()


def centre(image: torch.Tensor) -> torch.Tensor:
    """The ``PATCH x PATCH`` centre of a ``... x H x W`` tensor."""
    h, w = image.shape[-2:]
    top, left = (h - PATCH) // 2, (w - PATCH) // 2
    return image[..., top:top + PATCH, left:left + PATCH]


def outputs(network: torch.nn.Module, crop: np.ndarray) -> dict[str, torch.Tensor]:
    """``{"final": x, "iem": u}`` (``3 x H x W``, float32, not clipped) for one crop."""
    with torch.no_grad():
        result = network.enhance(as_input(crop))
    return {"final": result.final[0], "iem": result.iem[0]}


def main() -> int:
    torch.set_num_threads(1)
    GOLDEN.mkdir(parents=True, exist_ok=True)
    crops = demo_crops()
    np.savez_compressed(GOLDEN / "inputs.npz", **crops)
    for model in MODELS:
        network = build(model)
        arrays: dict[str, np.ndarray] = {}
        for name, crop in crops.items():
            for stage, image in outputs(network, crop).items():
                arrays[f"{name}/{stage}/u8"] = to_u8(image)
                arrays[f"{name}/{stage}/f32"] = centre(image).numpy().astype(np.float32)
        if model == "default":
            arrays["sha256"] = np.array(sha256(default_checkpoint_path()))
        np.savez_compressed(GOLDEN / f"{model}.npz", **arrays)
    for path in sorted(GOLDEN.glob("*.npz")):
        print(f"{path.relative_to(ROOT)}: {path.stat().st_size} bytes")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
