"""What a device name means, decided in one place for every job (enhance, evaluate, train, search).

``auto`` means a CUDA GPU when one is available, else the CPU. It never picks Apple's MPS or other
accelerators on its own (Lightning's own ``"auto"`` would): results on a CPU are reproducible, and
the search's NNI strategies are not tested elsewhere. Other names are passed on as given; a CUDA
name (``cuda``, ``cuda:N``, Lightning's ``gpu``) on a machine without a CUDA GPU is a usage error.

:func:`may_use_cuda` answers without importing PyTorch (for the PyTorch-free enhance path);
:func:`resolve_device` imports it when called.
"""

from __future__ import annotations

from pathlib import Path

from .errors import UsageError

__all__ = ["GPU_DRIVER_FILES", "resolve_device", "may_use_cuda"]

GPU_DRIVER_FILES = ("/proc/driver/nvidia", "/dev/nvidiactl", "/dev/kfd")
"""Files whose presence says a GPU driver is installed (NVIDIA, or AMD's ROCm)."""


def _is_cuda(device: str) -> bool:
    return device in ("cuda", "gpu") or device.startswith("cuda:")


def resolve_device(device: str) -> str:
    """``device`` with ``auto`` resolved: ``"cuda"`` when a CUDA GPU is available, else ``"cpu"``;
    any other name unchanged. Raises :class:`UsageError` naming the argument ``device`` for a CUDA
    name on a machine without a CUDA GPU."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if _is_cuda(device) and not torch.cuda.is_available():
        raise UsageError(f"`device` {device.split(':')[0]}: no CUDA GPU is available here; use `device` cpu or auto",
                         keys=("device",))
    return device


def may_use_cuda(device: str) -> bool:
    """Whether ``device`` may mean a CUDA GPU, answered without importing PyTorch: every name but
    ``cpu``, and ``auto`` only where a GPU driver is installed (then only PyTorch can say whether
    CUDA is usable)."""
    if device == "auto":
        return any(Path(path).exists() for path in GPU_DRIVER_FILES)
    return device != "cpu"
