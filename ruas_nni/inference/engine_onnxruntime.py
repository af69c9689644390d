"""The ``onnxruntime`` engine: the folded network's ONNX graph in ONNX Runtime (NumPy in and out, no
PyTorch). The graph is written by :func:`ruas_nni.inference.onnx_export.folded_onnx_bytes`."""

from __future__ import annotations

import os

import numpy as np
import onnxruntime as ort

from .tiling import ORT_TILE_BYTES_PER_PIXEL, tile_pixels_for_budget

__all__ = ["OnnxRuntimeEngine", "ort_session"]


def ort_session(onnx: bytes) -> ort.InferenceSession:
    """An ONNX Runtime session for the folded graph: one intra-op thread (the worker threads give the
    parallelism; ONNX Runtime releases the GIL), basic graph optimisations (the extended and NCHWc
    layout ones measured slower on these 3- to 24-channel convolutions)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.log_severity_level = 3
    if os.environ.get("RUAS_NNI_ORT_ARENA", "1") == "0":  # for measuring what the arena saves
        options.enable_cpu_mem_arena = False
    return ort.InferenceSession(onnx, options, providers=["CPUExecutionProvider"])


class OnnxRuntimeEngine:
    """An :class:`~ruas_nni.inference.engine.Engine` on one ONNX graph (input ``image`` and, with
    exposure normalisation, ``gain``, and with ``denoise_sigma``, ``strength``; output ``enhanced``).
    Raises when ONNX Runtime cannot load it."""

    name = "onnxruntime"

    def __init__(self, onnx: bytes) -> None:
        self.session = ort_session(onnx)

    def run_batch(self, image: np.ndarray, gain: np.ndarray | None = None,
                  strength: np.ndarray | None = None) -> np.ndarray:
        feeds = {"image": image} if gain is None else {"image": image, "gain": gain}
        if strength is not None:
            feeds["strength"] = strength
        return self.session.run(["enhanced"], feeds)[0]

    def tile_pixels(self, budget_mb: float, workers: int, max_channels: int) -> int:
        return tile_pixels_for_budget(budget_mb, workers, max_channels, ORT_TILE_BYTES_PER_PIXEL)

    def close(self) -> None:
        pass  # the session keeps nothing between runs; it is released with the engine
