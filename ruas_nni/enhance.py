"""Enhancing images with a trained network: the engine behind ``ruas-nni enhance``.

Plain PyTorch only (no NNI, no Lightning), so that inference starts fast and deploys anywhere.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import torch

from .checkpoint import Checkpoint, load_checkpoint
from .errors import UsageError

__all__ = ["STAGES", "Enhancer", "default_checkpoint_path", "resolve_device", "load_model"]

STAGES = ("final", "iem")
"""Which output to keep: the whole network's (IEM + NRM) or the IEM's alone."""

DEFAULT_CHECKPOINT = "default.pt"


def default_checkpoint_path() -> Path | None:
    """The model shipped inside the package, or ``None`` while none is shipped."""
    candidate = resources.files("ruas_nni") / "models" / DEFAULT_CHECKPOINT
    path = Path(str(candidate))
    return path if path.is_file() else None


def resolve_device(device: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cuda`` without a GPU is a usage error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA GPU is available here; use --device cpu or auto")
    try:
        return torch.device(device)
    except RuntimeError:
        raise UsageError(f"--device: unknown device {device!r}; expected auto, cpu or cuda") from None


def load_model(path: str | os.PathLike[str] | None) -> tuple[Checkpoint, Path]:
    """Load ``path``, or the packaged default model when ``path`` is ``None``."""
    if path is None:
        default = default_checkpoint_path()
        if default is None:
            raise UsageError(
                "no default model is shipped with this version yet: pass --checkpoint PATH "
                "(a ruas-nni model.pt or one of the authors' lol.pt / upe.pt / dark.pt)"
            )
        path = default
    return load_checkpoint(path), Path(path)


@dataclass
class Enhancer:
    """Runs one checkpoint's network on single images (``3 x H x W`` in ``[0, 1]``)."""

    checkpoint: Checkpoint
    stage: str = "final"
    device: torch.device = torch.device("cpu")

    def __post_init__(self) -> None:
        if self.stage not in STAGES:
            raise UsageError(f"--stage must be one of {', '.join(STAGES)}, got {self.stage!r}")
        self.network = self.checkpoint.build().to(self.device)

    @torch.inference_mode()
    def __call__(self, rgb: torch.Tensor) -> torch.Tensor:
        """The enhanced image, clipped to ``[0, 1]``, on the CPU."""
        batch = rgb.unsqueeze(0).to(self.device, torch.float32)
        result = self.network.enhance(batch)
        output = result.final if self.stage == "final" else result.iem
        return output[0].clamp(0.0, 1.0).to("cpu")
