"""Export a checkpoint's network to ONNX, with dynamic batch, height and width.

The exported graph is the folded inference network (:mod:`ruas_nni.inference.fold`; ``fold=False`` exports the
network exactly as trained). Input ``image``: float32 ``N x 3 x H x W`` RGB in ``[0, 1]``, any
``H, W >= 1``; output ``enhanced``: same shape, the output of the chosen stage, *not clipped* (like
:class:`ruas_nni.model.network.RUASNet`: clip to ``[0, 1]`` before saving). The receptive radius is stored
in the model's metadata (``receptive_radius``) for callers that tile large images.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import torch
from torch import nn

from ..base.atomic import atomic_write
from ..base.errors import UsageError
from ..model.checkpoint import Checkpoint
from ..model.network import LEAKY_SLOPE, T_MIN
from .engine_torch import StageOutput
from .fold import FoldedRUAS, _Act, _Conv, strength_input, walk_program

__all__ = ["export_onnx", "DEFAULT_OPSET"]

DEFAULT_OPSET = 17


def _inference_module(checkpoint: Checkpoint, stage: str, fold: bool) -> nn.Module:
    network = checkpoint.build()
    if fold:
        return FoldedRUAS(network, stage, functional=True).eval()
    return StageOutput(network, stage).eval()


def export_onnx(checkpoint: Checkpoint, path: str | os.PathLike[str], *, stage: str = "final", fold: bool = True,
                opset: int = DEFAULT_OPSET, sample_size: tuple[int, int] = (64, 96)) -> Path:
    """Write ``checkpoint``'s network as an ONNX model to ``path`` (atomically); returns the path.

    Uses PyTorch's TorchScript-based exporter (``dynamo=False``), which needs no extra package and
    keeps height and width symbolic; ``sample_size`` is only the trace's example input.
    """
    if stage not in ("final", "iem"):
        raise ValueError(f"stage must be 'final' or 'iem', got {stage!r}")
    if checkpoint.options.exposure is not None:
        raise UsageError(f"this model normalises exposure (E = {checkpoint.options.exposure:g}), which the ONNX graph "
                         "cannot carry (its gain is measured on a downsampled whole image); use 'ruas-nni enhance'")
    module = _inference_module(checkpoint, stage, fold)
    sample = torch.rand(1, 3, *sample_size, generator=torch.Generator().manual_seed(0))
    buffer = io.BytesIO()
    axes = {0: "batch", 2: "height", 3: "width"}
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore")  # the exporter's deprecation and tracer notices
        torch.onnx.export(module, (sample,), buffer, dynamo=False, opset_version=opset,
                          input_names=["image"], output_names=["enhanced"],
                          dynamic_axes={"image": axes, "enhanced": axes})
    data = buffer.getvalue()
    radius = module.receptive_radius()
    try:  # onnx is an optional extra (pip install onnx): imported here so that this module works without it
        import onnx
    except ImportError:  # pragma: no cover - onnx is optional; the model is complete without metadata
        pass
    else:
        model = onnx.load_from_string(data)
        model.doc_string = (f"RUAS low-light enhancement ({'IEM + NRM' if stage == 'final' else 'IEM only'}); "
                            "input RGB in [0, 1], output not clipped")
        for key, value in {"stage": stage, "receptive_radius": str(radius), "folded": str(fold).lower(),
                           "producer": "ruas-nni"}.items():
            entry = model.metadata_props.add()
            entry.key, entry.value = key, value
        data = model.SerializeToString()
    path = Path(path)
    with atomic_write(path) as handle:
        handle.write(data)
    return path


# ---------------------------------------------------------------------------------------------
# The folded network written straight as ONNX bytes: no tracing, no ``onnx`` package.
#
# ``torch.onnx.export`` plus ``import onnx`` cost about 1.5 s of CPU the first time in a process,
# which is more than ``ruas-nni enhance`` spends on the network for a dozen 600x400 photos. The
# folded network (:class:`ruas_nni.fold.FoldedRUAS`) is a short program of convolutions and
# element-wise steps, so its graph is written here directly in protobuf's wire format (a few
# milliseconds). ``tests/test_onnx.py``-style checks compare it with PyTorch and with ``onnx.checker``.


def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1  # int64 fields: negative numbers as two's complement
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field_bytes(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _field_str(number: int, text: str) -> bytes:
    return _field_bytes(number, text.encode())


def _field_int(number: int, value: int) -> bytes:
    return _varint(number << 3) + _varint(value)


def _field_float(number: int, value: float) -> bytes:
    import struct

    return _varint(number << 3 | 5) + struct.pack("<f", value)


_ATTRIBUTE_FLOAT, _ATTRIBUTE_INT, _ATTRIBUTE_INTS = 1, 2, 7
_TENSOR_FLOAT, _TENSOR_INT64 = 1, 7


def _attribute(name: str, value: float | int | list[int]) -> bytes:
    body = _field_str(1, name)
    if isinstance(value, float):
        body += _field_float(2, value) + _field_int(20, _ATTRIBUTE_FLOAT)
    elif isinstance(value, int):
        body += _field_int(3, value) + _field_int(20, _ATTRIBUTE_INT)
    else:
        body += b"".join(_field_int(8, v) for v in value) + _field_int(20, _ATTRIBUTE_INTS)
    return body


def _tensor(name: str, values: torch.Tensor) -> bytes:
    import numpy as np

    if values.dtype == torch.int64:
        kind, raw = _TENSOR_INT64, values.numpy().astype("<i8").tobytes()
    else:
        kind, raw = _TENSOR_FLOAT, values.detach().to(torch.float32).numpy().astype(np.dtype("<f4")).tobytes()
    return (b"".join(_field_int(1, d) for d in values.shape) + _field_int(2, kind) + _field_str(8, name)
            + _field_bytes(9, raw))


def _value_info(name: str, shape: tuple = ("batch", 3, "height", "width")) -> bytes:
    dims = b"".join(_field_bytes(1, _field_str(2, p) if isinstance(p, str) else _field_int(1, p))
                    for p in shape)
    tensor_type = _field_int(1, _TENSOR_FLOAT) + _field_bytes(2, dims)
    return _field_str(1, name) + _field_bytes(2, _field_bytes(1, tensor_type))


class _GraphWriter:
    def __init__(self) -> None:
        self.nodes: list[bytes] = []
        self.initializers: list[bytes] = []
        self.count = 0
        self.constants: dict[tuple, str] = {}

    def name(self, hint: str) -> str:
        self.count += 1
        return f"{hint}_{self.count}"

    def node(self, op: str, inputs: list[str], outputs: int | list[str] = 1, **attributes) -> list[str]:
        names = outputs if isinstance(outputs, list) else [self.name(op.lower()) for _ in range(outputs)]
        body = (b"".join(_field_str(1, i) for i in inputs) + b"".join(_field_str(2, o) for o in names)
                + _field_str(3, self.name(f"node_{op}")) + _field_str(4, op)
                + b"".join(_field_bytes(5, _attribute(k, v)) for k, v in attributes.items()))
        self.nodes.append(body)
        return names

    def constant(self, values: torch.Tensor, hint: str = "const") -> str:
        key = (hint, values.dtype, tuple(values.shape), tuple(values.flatten().tolist()[:64]), values.numel())
        if values.numel() <= 64 and key in self.constants:
            return self.constants[key]
        name = self.name(hint)
        self.initializers.append(_tensor(name, values))
        if values.numel() <= 64:
            self.constants[key] = name
        return name

    def scalar(self, value: float) -> str:
        return self.constant(torch.tensor(value, dtype=torch.float32), "scalar")


class _OnnxProgram:
    """The folded program as ONNX nodes (a :class:`~ruas_nni.inference.fold.ProgramWriter`)."""

    def __init__(self, graph: _GraphWriter, model) -> None:
        self.graph = graph
        self.model = model

    def warm(self, x: str) -> str:
        pads = self.graph.constant(torch.tensor([0, 0, 0, 0, 0, 0, 1, 1], dtype=torch.int64), "pads")
        padded = self.graph.node("Pad", [x, pads])[0]
        return self.graph.node("MaxPool", [padded], kernel_shape=[2, 2], strides=[1, 1])[0]

    def rectify(self, u: str, y: str, gamma: float | None) -> str:
        if gamma is None:
            return self.warm(u)
        difference = self.graph.node("Sub", [u, y])[0]
        scaled = self.graph.node("Mul", [difference, self.graph.scalar(gamma)])[0]
        return self.graph.node("Sub", [self.warm(u), scaled])[0]

    def iem_output(self, z: str, y: str, clamp: bool = True) -> str:
        t = self.graph.node("Sigmoid", [z])[0]
        t = self.graph.node("Clip", [t, self.graph.scalar(T_MIN), self.graph.scalar(1.0)])[0]
        ratio = self.graph.node("Div", [y, t])[0]
        if not clamp:
            return ratio
        return self.graph.node("Clip", [ratio, self.graph.scalar(0.0), self.graph.scalar(1.0)])[0]

    def _shoulder_curve(self, v: str, gamma: float) -> str:
        """S(gain * g(v)) of :mod:`ruas_nni.model.tone` (``v >= 0``)."""
        graph, tone = self.graph, self.model.tone
        if gamma != 1.0 or tone.toe:
            shifted = graph.node("Add", [v, graph.scalar(tone.toe)])[0] if tone.toe else v
            v = graph.node("Pow", [shifted, graph.scalar(gamma)])[0]
            if tone.toe:
                v = graph.node("Sub", [v, graph.scalar(tone.toe ** gamma)])[0]
        z = graph.node("Mul", [v, "gain"])[0]
        knee = tone.knee
        # 1 - exp(-(z - c) / (1 - c)), scaled by (1 - c) and shifted by c (c = 0: 1 - exp(-z))
        scaled = graph.node("Mul", [graph.node("Sub", [graph.scalar(knee), z])[0], graph.scalar(1.0 / (1.0 - knee))])[0]
        soft = graph.node("Sub", [graph.scalar(1.0), graph.node("Exp", [scaled])[0]])[0]
        soft = graph.node("Add", [graph.node("Mul", [soft, graph.scalar(1.0 - knee)])[0], graph.scalar(knee)])[0]
        if knee <= 0.0:
            return soft
        below = graph.node("LessOrEqual", [z, graph.scalar(knee)])[0]
        return graph.node("Where", [below, z, soft])[0]

    def _dequantise(self, x: str, blurred: str) -> str:  # dequantise of ruas_nni.model.tone
        graph, model = self.graph, self.model
        ones = graph.node("Add", [graph.node("Mul", [x, graph.scalar(0.0)])[0], graph.scalar(1.0)])[0]
        kernel = int(model.tone_blur_weight.shape[-1])
        norm = graph.node("Conv", [ones, graph.constant(model.tone_blur_weight, "weight")], kernel_shape=[kernel, kernel],
                          pads=[kernel // 2] * 4, dilations=[1, 1], strides=[1, 1])[0]
        blurred = graph.node("Div", [blurred, norm])[0]
        darkest = graph.node("ReduceMax", [blurred], axes=[1], keepdims=1)[0]
        weight = graph.node("Exp", [graph.node("Mul", [darkest, graph.scalar(-1.0 / model.tone.dequantise)])[0]])[0]
        return graph.node("Add", [x, graph.node("Mul", [weight, graph.node("Sub", [blurred, x])[0]])[0]])[0]

    def _shoulder(self, x: str, blurred: str | None) -> str:  # shoulder_curve of ruas_nni.model.tone
        graph, tone = self.graph, self.model.tone
        gamma = float(self.model.exposure_gamma)
        if blurred is not None:
            x = self._dequantise(x, blurred)
        x = graph.node("Max", [x, graph.scalar(0.0)])[0]
        out = self._shoulder_curve(x, gamma)
        if tone.hue <= 0.0:
            return out
        m = graph.node("ReduceMax", [x], axes=[1], keepdims=1)[0]
        safe = graph.node("Max", [m, graph.scalar(1e-6)])[0]
        ratio = graph.node("Div", [self._shoulder_curve(m, gamma), safe])[0]
        hue = graph.node("Mul", [graph.node("Mul", [x, ratio])[0], graph.scalar(tone.hue)])[0]
        return graph.node("Add", [graph.node("Mul", [out, graph.scalar(1.0 - tone.hue)])[0], hue])[0]

    def gain(self, u: str, blurred: str | None = None) -> str:  # apply_tone: clamp(k max(u, 0) ** p, 0, 1) or shoulder
        if self.model.tone is not None:
            return self._shoulder(u, blurred)
        gamma = float(self.model.exposure_gamma)
        if gamma != 1.0:
            positive = self.graph.node("Max", [u, self.graph.scalar(0.0)])[0]
            u = self.graph.node("Pow", [positive, self.graph.scalar(gamma)])[0]
        scaled = self.graph.node("Mul", [u, "gain"])[0]
        return self.graph.node("Clip", [scaled, self.graph.scalar(0.0), self.graph.scalar(1.0)])[0]

    def conv(self, step: _Conv, env: dict[str, str]) -> None:
        graph, model = self.graph, self.model
        weight = graph.constant(getattr(model, step.weight), "weight")
        bias = graph.constant(getattr(model, step.bias), "bias")
        kernel = int(getattr(model, step.weight).shape[-1])
        out = graph.node("Conv", [env[step.source], weight, bias], kernel_shape=[kernel, kernel],
                         pads=[step.padding] * 4, dilations=[step.dilation] * 2, strides=[1, 1])[0]
        total = int(getattr(model, step.weight).shape[0])
        if len(step.outputs) == 1 and step.outputs[0][:2] == (0, total):
            parts = [out]
        else:
            sizes = graph.constant(torch.tensor([end - start for start, end, _ in step.outputs], dtype=torch.int64), "split")
            parts = graph.node("Split", [out, sizes], len(step.outputs), axis=1)
        for part, (_, _, destination) in zip(parts, step.outputs):
            env[destination] = graph.node("LeakyRelu", [part], alpha=LEAKY_SLOPE)[0] if step.activate else part

    def act(self, step: _Act, env: dict[str, str]) -> None:
        env[step.destination] = self.graph.node("LeakyRelu", [env[step.source]], alpha=LEAKY_SLOPE)[0]

    def concat(self, slots: list[str], prefix: str) -> str:
        return self.graph.node("Concat", slots, axis=1)[0]

    def output(self, u: str, noise: str | None, scaled: bool = False) -> None:
        if noise is None:
            self.graph.node("Identity", [u], ["enhanced"])
        else:
            if scaled:  # the NRM's strength, the graph's input "strength"
                noise = self.graph.node("Mul", [noise, "strength"])[0]
            self.graph.node("Sub", [u, noise], ["enhanced"])


def folded_onnx_bytes(model, opset: int = DEFAULT_OPSET, *, gain_input: bool = False) -> bytes:
    """The ONNX model (bytes) of a :class:`ruas_nni.fold.FoldedRUAS` (float32, channels-first, any
    layout option; the fuse left for the next cell to compose is not supported), with dynamic batch,
    height and width; input ``image``, output ``enhanced`` as :func:`export_onnx` writes them.

    Exposure normalisation: without ``gain_input`` the graph ignores it (the IEM output is not
    scaled: what the exposure gain is measured on); with it, a second input ``gain`` (float32
    ``batch x 1 x 1 x 1``, :func:`ruas_nni.model.network.exposure_gain` of the whole image) scales the
    IEM output as :func:`ruas_nni.model.network.apply_gain` does, before the NRM; with the network
    option ``denoise_sigma``, a third input ``strength`` (float32 ``batch x 1 x 1 x 1``,
    :func:`ruas_nni.model.network.exposure_and_strength`) scales the NRM's correction."""
    if gain_input and model.exposure is None:
        raise ValueError("folded_onnx_bytes: gain_input needs a network with exposure normalisation")
    graph = _GraphWriter()
    walk_program(model, _OnnxProgram(graph, model), "image", gain_input=gain_input)
    body = (b"".join(_field_bytes(1, n) for n in graph.nodes) + _field_str(2, "ruas_folded")
            + b"".join(_field_bytes(5, t) for t in graph.initializers)
            + _field_bytes(11, _value_info("image"))
            + (_field_bytes(11, _value_info("gain", ("batch", 1, 1, 1))) if gain_input else b"")
            + (_field_bytes(11, _value_info("strength", ("batch", 1, 1, 1))) if strength_input(model, gain_input)
               else b"")
            + _field_bytes(12, _value_info("enhanced")))
    opset_import = _field_str(1, "") + _field_int(2, opset)
    return _field_int(1, 8) + _field_str(2, "ruas-nni") + _field_bytes(7, body) + _field_bytes(8, opset_import)
