"""Fold a trained :class:`~ruas_nni.model.network.RUASNet` into a faster network with the same outputs.

The exported network (:mod:`ruas_nni.model.network`) is written for search and training: every edge is a
module, skip edges and residual additions are separate operations, the cell concatenates four
tensors before its fuse convolution, and the warm start is a max-pool. For inference all of that
can be rearranged once, when the model is loaded, without changing what is computed:

* every edge is an affine map of its input: ``skip_connect`` is ``I``, ``resconv`` is ``W + I`` (one
  convolution instead of a convolution and an addition), and the cell's own ``+ h`` residuals add
  another ``I`` (``r1 = act(e2(h) + h)`` becomes ``act((W2 + 2I) h + b2)``);
* the two edges that read the same tensor (``e1``/``e2`` on ``h``, ``e3``/``e4`` on ``r1``,
  ``e5``/``e6`` on ``r2``) become one convolution with twice the output channels when their
  geometries agree (a 1x1 kernel sits at the centre of a 3x3 one); the tiny channel counts (3 and 6)
  leave most of a CPU's vector lanes idle, so the wider convolution costs about as much as one;
* an edge that is a positive multiple of the identity (a skip edge, or a skip plus the residual)
  needs no convolution: ``act(s * x) = s * act(x)`` for ``s > 0`` because LeakyReLU is positively
  homogeneous, so the factor ``s`` is carried along and multiplied into the weights of whatever
  reads the tensor next;
* the fuse convolution reads its four inputs from one preallocated buffer that the activations
  write into (no concatenation);
* a 1x1 convolution that directly follows another convolution (the NRM stem, or the previous
  cell's fuse, followed by 1x1 edges) can be composed into it (optional: it pays off only where it
  saves more memory traffic than the wider convolution costs; see ``docs/speed.md``);
* the warm start ``S(.)`` is two element-wise maxima of shifted views instead of a max-pool with
  indices (bit-identical, about 40 times faster on CPU).

Folding happens in float64 and the results are rounded to float32 once, so the folded network
differs from the unfolded one only by float32 rounding (about 1e-6; ``tests/test_fold.py`` checks it
against the authors' reference outputs). The unfolded network is left untouched.
"""

from __future__ import annotations

import copy
import threading
from dataclasses import dataclass, field
from typing import Iterable, Protocol, TypeVar

import torch
import torch.nn.functional as F
from torch import nn

from ..model.network import (
    EDGE_NAMES,
    LEAKY_SLOPE,
    T_MIN,
    DistillationCell,
    RUASNet,
    apply_tone,
    exposure_and_strength,
    tone_radius,
)
from ..model.ops import Convolution, ResidualConvolution
from ..model.tone import BLUR_RADIUS, BLUR_TAPS

__all__ = ["Affine", "FoldedRUAS", "ProgramWriter", "fold", "fast_warm_start", "strength_input", "walk_program"]

Value = TypeVar("Value")

LAYOUTS = ("nchw", "nhwc", "iem-nhwc")
"""Memory layouts of the folded network on CPU: all channels-first, all channels-last, or the IEM
channels-last and the NRM channels-first."""

# Where the four inputs of the fuse convolution live in a cell's buffer.
_FUSE_SLOTS = {"d1": 0, "d2": 1, "d3": 2, "r4": 3}


def fast_warm_start(x: torch.Tensor) -> torch.Tensor:
    """``S(x)``, the 2x2 max filter zero-padded at the bottom and right, as two maxima of shifted
    views; equal bit for bit to :func:`ruas_nni.model.network.warm_start`, and keeps ``x``'s memory
    format (the last row and column are ``max(x, 0)``: their neighbour is the zero padding)."""
    rows = torch.empty_like(x)
    torch.maximum(x[..., :-1, :], x[..., 1:, :], out=rows[..., :-1, :])
    torch.clamp(x[..., -1:, :], min=0.0, out=rows[..., -1:, :])
    out = torch.empty_like(x)
    torch.maximum(rows[..., :, :-1], rows[..., :, 1:], out=out[..., :, :-1])
    torch.clamp(rows[..., :, -1:], min=0.0, out=out[..., :, -1:])
    return out


def _traceable_warm_start(x: torch.Tensor) -> torch.Tensor:
    """:func:`fast_warm_start` without ``out=`` (for ONNX export and ``torch.compile``)."""
    padded = F.pad(x, (0, 1, 0, 1))
    rows = torch.maximum(padded[:, :, :-1, :], padded[:, :, 1:, :])
    return torch.maximum(rows[:, :, :, :-1], rows[:, :, :, 1:])


def _mkldnn_convolution():
    """oneDNN's convolution with a fused activation, if this PyTorch build has it (a private op that
    ``torch.compile`` uses on CPU; everything falls back to ``F.conv2d`` without it)."""
    try:
        return torch.ops.mkldnn._convolution_pointwise.default
    except (AttributeError, RuntimeError):  # pragma: no cover - builds without oneDNN
        return None


_FUSED_CONV = _mkldnn_convolution() if torch.backends.mkldnn.is_available() else None


@dataclass
class Affine:
    """An affine map ``x -> conv(x, weight, dilation) + bias`` with "same" zero padding, in float64.

    ``weight`` is ``(out, in, k, k)`` with ``k`` odd; a 1x1 map is pointwise.
    """

    weight: torch.Tensor
    bias: torch.Tensor
    dilation: int = 1

    @property
    def kernel_size(self) -> int:
        return int(self.weight.shape[-1])

    @property
    def radius(self) -> int:
        return self.dilation * (self.kernel_size - 1) // 2

    @property
    def geometry(self) -> tuple[int, int]:
        """``(kernel_size, dilation)``; 1x1 maps are ``(1, 1)`` whatever their dilation."""
        return (1, 1) if self.kernel_size == 1 else (self.kernel_size, self.dilation)

    @property
    def out_channels(self) -> int:
        return int(self.weight.shape[0])

    @property
    def in_channels(self) -> int:
        return int(self.weight.shape[1])

    @classmethod
    def identity(cls, channels: int, scale: float = 1.0) -> Affine:
        weight = torch.eye(channels, dtype=torch.float64).mul(scale).reshape(channels, channels, 1, 1)
        return cls(weight, torch.zeros(channels, dtype=torch.float64))

    @classmethod
    def from_conv(cls, conv: nn.Conv2d) -> Affine:
        if conv.groups != 1 or conv.stride != (1, 1) or conv.kernel_size[0] != conv.kernel_size[1]:
            raise ValueError(f"cannot fold {conv}: only square, stride-1, ungrouped convolutions")
        if conv.dilation[0] != conv.dilation[1] or conv.padding != (conv.dilation[0] * (conv.kernel_size[0] - 1) // 2,) * 2:
            raise ValueError(f"cannot fold {conv}: expected 'same' padding")
        bias = conv.bias.detach() if conv.bias is not None else torch.zeros(conv.out_channels)
        return cls(conv.weight.detach().to("cpu", torch.float64).clone(), bias.to("cpu", torch.float64).clone(),
                   int(conv.dilation[0]))

    @classmethod
    def from_edge(cls, edge: nn.Module, channels: int) -> Affine:
        """The map of one cell edge: ``I``, ``W`` or ``W + I``."""
        if isinstance(edge, nn.Identity):
            return cls.identity(channels)
        if isinstance(edge, ResidualConvolution):
            return cls.from_conv(edge.op).plus_identity(1.0)
        if isinstance(edge, Convolution):
            return cls.from_conv(edge.op)
        raise TypeError(f"cannot fold edge {type(edge).__name__}: expected a fixed operation (export the network first)")

    def embed(self, kernel_size: int, dilation: int) -> Affine:
        """The same map written with a larger kernel (only a 1x1 map can change its geometry)."""
        if self.geometry == ((1, 1) if kernel_size == 1 else (kernel_size, dilation)):
            return Affine(self.weight, self.bias, dilation if kernel_size > 1 else 1)
        if self.kernel_size != 1:
            raise ValueError(f"cannot write a {self.geometry} kernel as {(kernel_size, dilation)}")
        weight = self.weight.new_zeros(self.out_channels, self.in_channels, kernel_size, kernel_size)
        weight[:, :, kernel_size // 2, kernel_size // 2] = self.weight[:, :, 0, 0]
        return Affine(weight, self.bias, dilation)

    def plus_identity(self, scale: float) -> Affine:
        """``x -> self(x) + scale * x`` (the residual connections)."""
        if self.in_channels != self.out_channels:
            raise ValueError("a residual needs as many input as output channels")
        weight = self.weight.clone()
        centre = self.kernel_size // 2
        weight[:, :, centre, centre] += scale * torch.eye(self.in_channels, dtype=weight.dtype)
        return Affine(weight, self.bias.clone(), self.dilation)

    def scale_input(self, scale: float) -> Affine:
        """The map applied to ``x / scale``: what to use when a tensor is stored divided by ``scale``."""
        return self if scale == 1.0 else Affine(self.weight * scale, self.bias, self.dilation)

    def after(self, first: Affine) -> Affine:
        """``self(first(x))`` as one map; ``self`` must be 1x1 (then it is exact at the borders too,
        since a pointwise map does not see the zero padding of ``first``)."""
        if self.kernel_size != 1:
            raise ValueError("only a 1x1 map can be composed after another convolution")
        outer = self.weight[:, :, 0, 0]
        weight = torch.einsum("om,mikl->oikl", outer, first.weight)
        return Affine(weight, outer @ first.bias + self.bias, first.dilation)

    def scaled_identity_factor(self) -> float | None:
        """``s`` when the map is exactly ``x -> s * x`` with ``s > 0``, else ``None``."""
        if self.kernel_size != 1 or self.in_channels != self.out_channels or bool(self.bias.ne(0).any()):
            return None
        matrix = self.weight[:, :, 0, 0]
        scale = float(matrix[0, 0])
        if scale <= 0 or not torch.equal(matrix, scale * torch.eye(self.in_channels, dtype=matrix.dtype)):
            return None
        return scale

    @staticmethod
    def stack(maps: Iterable[Affine]) -> Affine:
        """Maps of the same input, one after the other in the output channels, in a common geometry."""
        maps = list(maps)
        geometry = max((m.geometry for m in maps), key=lambda g: g[0] * g[1])
        embedded = [m.embed(*geometry) for m in maps]
        return Affine(torch.cat([m.weight for m in embedded]), torch.cat([m.bias for m in embedded]),
                      geometry[1] if geometry[0] > 1 else 1)


def _compatible(a: Affine, b: Affine) -> bool:
    """Whether two maps of one input can share one convolution without growing a kernel."""
    return a.geometry == b.geometry or a.kernel_size == 1 or b.kernel_size == 1


# ---------------------------------------------------------------------------------------------
# The folded program of one cell: convolutions and activations over named tensors.


@dataclass
class _Conv:
    """``act(conv(source))`` split into named outputs; ``None`` as activation slope means none."""

    source: str
    weight: str  # buffer names in the module
    bias: str
    padding: int
    dilation: int
    outputs: list[tuple[int, int, str]]  # (first channel, end channel, destination name)
    activate: bool = True


@dataclass
class _Act:
    """``destination = act(source)``: an identity edge, its factor carried by the readers."""

    source: str
    destination: str


@dataclass
class _CellProgram:
    steps: list[_Conv | _Act] = field(default_factory=list)
    fuse: _Conv | None = None  # None when the next cell composes the fuse into its first convolution
    channels: int = 0


_WORKSPACES = threading.local()


def _workspace(reference: torch.Tensor, shape: tuple[int, int, int, int], parity: int) -> torch.Tensor:
    """A cell's fuse buffer. On CPU it is reused from call to call (one per thread, dtype and cell
    parity, grown when needed): a fresh multi-megabyte tensor per cell would be mapped and zeroed by
    the kernel every time. On other devices a new tensor (CUDA graphs keep raw pointers)."""
    if reference.device.type != "cpu":
        return reference.new_empty(shape)
    store = _WORKSPACES.__dict__
    key = (reference.dtype, parity)
    numel = shape[0] * shape[1] * shape[2] * shape[3]
    flat = store.get(key)
    if flat is None or flat.numel() < numel:
        flat = store[key] = torch.empty(numel, dtype=reference.dtype)
    return flat[:numel].view(shape)


class _Builder:
    """Collects folded weights as module buffers while programs are built."""

    def __init__(self, module: nn.Module, dtype: torch.dtype = torch.float32) -> None:
        self.module = module
        self.dtype = dtype
        self.count = 0

    def add(self, affine: Affine, source: str, outputs: list[tuple[int, int, str]], activate: bool = True) -> _Conv:
        name = f"w{self.count}"
        self.count += 1
        self.module.register_buffer(name, affine.weight.to(self.dtype).contiguous())
        self.module.register_buffer(f"{name}_bias", affine.bias.to(self.dtype).contiguous())
        return _Conv(source, name, f"{name}_bias", affine.radius, affine.dilation if affine.kernel_size > 1 else 1,
                     outputs, activate)


def _fold_cell(builder: _Builder, cell: DistillationCell, prefix: str, source: str, source_scale: float,
               before: Affine | None, compose_next: bool,
               next_cell: DistillationCell | None, merge: bool = True) -> tuple[_CellProgram, Affine | None]:
    """Fold one cell reading ``source`` (stored divided by ``source_scale``).

    ``before``: a convolution whose output is the cell input and that may be composed into the
    cell's first stage (then ``source`` is that convolution's input). Returns the program and, when
    the fuse is left for the next cell to compose, the fuse map. ``merge``: two maps of one input
    share a convolution (channels-first; channels-last slices are not dense, so there each output
    gets its own convolution).
    """
    channels = cell.channels
    edges = {name: Affine.from_edge(getattr(cell, name), channels) for name in EDGE_NAMES}
    stages = [
        ("h", [("d1", edges["e1"]), ("r1", edges["e2"].plus_identity(1.0))]),
        ("r1", [("d2", edges["e3"]), ("r2", edges["e4"].plus_identity(1.0))]),
        ("r2", [("d3", edges["e5"]), ("r3", edges["e6"].plus_identity(1.0))]),
        ("r3", [("r4", edges["e7"])]),
    ]
    program = _CellProgram(channels=channels)
    stored: dict[str, str] = {"h": source}  # logical tensor -> runtime name
    scales: dict[str, float] = {"h": source_scale}
    for src, outs in stages:
        convs: list[tuple[str, Affine]] = []
        identity_outputs: list[tuple[str, float]] = []
        for name, affine in outs:
            affine = affine.scale_input(scales[src])
            if src == "h" and before is not None:
                convs.append((name, affine.after(before)))
                continue
            factor = affine.scaled_identity_factor()
            if factor is not None:
                identity_outputs.append((name, factor))
            else:
                convs.append((name, affine))
        if identity_outputs:
            # act(s * x) = s * act(x): one activation serves every identity output of this stage.
            slot_names = [n for n, _ in identity_outputs if n in _FUSE_SLOTS]
            destination = f"{prefix}.slot.{slot_names[0]}" if slot_names else f"{prefix}.{identity_outputs[0][0]}"
            program.steps.append(_Act(stored[src], destination))
            for name, factor in identity_outputs:
                stored[name] = destination
                scales[name] = factor
        groups: list[list[tuple[str, Affine]]] = []
        for item in convs:
            for group in groups:
                if merge and len(group) == 1 and _compatible(group[0][1], item[1]):
                    group.append(item)
                    break
            else:
                groups.append([item])
        for group in groups:
            affine = Affine.stack(a for _, a in group)
            outputs, start = [], 0
            for name, part in group:
                destination = f"{prefix}.slot.{name}" if name in _FUSE_SLOTS else f"{prefix}.{name}"
                outputs.append((start, start + part.out_channels, destination))
                stored[name] = destination
                scales[name] = 1.0
                start += part.out_channels
            src_name = stored[src] if not (src == "h" and before is not None) else source
            program.steps.append(builder.add(affine, src_name, outputs))
    # The fuse reads the four slots; carried factors go into its columns.
    fuse = Affine.from_conv(cell.fuse)
    column_scales = torch.cat([torch.full((channels,), scales[name], dtype=torch.float64) for name in _FUSE_SLOTS])
    fuse = Affine(fuse.weight * column_scales.view(1, -1, 1, 1), fuse.bias, 1)
    # Every fuse input was written into its slot (a stage has at most one slot output, and an
    # identity output that is a slot picks the slot as its storage).
    assert all(stored[name] == f"{prefix}.slot.{name}" for name in _FUSE_SLOTS), stored
    if compose_next and next_cell is not None and _first_stage_pointwise(next_cell):
        return program, fuse
    program.fuse = builder.add(fuse, f"{prefix}.buffer", [(0, channels, f"{prefix}.out")], activate=False)
    return program, None


def _first_stage_pointwise(cell: DistillationCell) -> bool:
    """Whether the cell's first two edges are 1x1 (or identities): then a convolution before the
    cell can be composed with them exactly."""
    return all(Affine.from_edge(getattr(cell, name), cell.channels).kernel_size == 1 for name in ("e1", "e2"))


# ---------------------------------------------------------------------------------------------


class FoldedRUAS(nn.Module):
    """The inference network folded from a :class:`RUASNet`; ``forward(y)`` returns the output of
    ``stage`` (``"final"``: IEM + NRM, ``"iem"``: IEM only), not clipped, like the original.

    Works on any device and dtype (``.to("cuda").half()``). ``functional=True`` replaces the in-place
    buffer writes by a concatenation, for tracing (ONNX) and ``torch.compile``.
    """

    def __init__(self, network: RUASNet, stage: str = "final", *, compose_pointwise: bool = False,
                 functional: bool = False, layout: str = "nchw") -> None:
        super().__init__()
        if layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
        self.layout = layout
        if stage not in ("final", "iem"):
            raise ValueError(f"stage must be 'final' or 'iem', got {stage!r}")
        self.stage = stage
        self.functional = functional
        iem = network.iem
        self.gamma = float(iem.gamma)
        self.warm_start = iem.warm_start
        self.iem_channels_last = layout in ("nhwc", "iem-nhwc") and not functional
        self.nrm_channels_last = layout == "nhwc" and not functional
        builder = _Builder(self)
        self.iem_cells: list[_CellProgram] = []
        for k, cell in enumerate(iem.stages):
            program, _ = _fold_cell(builder, cell, f"iem{k}", "t_hat", 1.0, None, False, None,
                                    merge=not self.iem_channels_last)
            self.iem_cells.append(program)
        self.nrm_cells: list[_CellProgram] = []
        self.nrm_stem: _Conv | None = None
        self.nrm_head: _Conv | None = None
        nrm = network.nrm
        self.has_nrm = nrm is not None and stage == "final"
        if self.has_nrm:
            assert nrm is not None
            stem = Affine.from_conv(nrm.stem)
            cells = list(nrm.cells)
            before: Affine | None = None
            if compose_pointwise and _first_stage_pointwise(cells[0]):
                before, source = stem, "u"
            else:
                self.nrm_stem = builder.add(stem, "u", [(0, stem.out_channels, "stem")], activate=False)
                source = "stem"
            for index, cell in enumerate(cells):
                following = cells[index + 1] if index + 1 < len(cells) else None
                program, pending = _fold_cell(builder, cell, f"nrm{index}", source, 1.0, before,
                                              compose_pointwise, following, merge=not self.nrm_channels_last)
                self.nrm_cells.append(program)
                before, source = (pending, f"nrm{index}.buffer") if pending is not None else (None, f"nrm{index}.out")
            self.nrm_head = builder.add(Affine.from_conv(nrm.head), source, [(0, 3, "noise")], activate=False)
        self.receptive_radius_value = network.receptive_radius("final" if self.has_nrm else "iem")
        self.exposure_iem = copy.deepcopy(network.iem) if network.exposure is not None else None  # the gain's IEM
        self.exposure, self.exposure_gamma = network.exposure, network.exposure_gamma
        self.tone = network.tone if network.exposure is not None else None
        self.denoise_sigma = network.denoise_sigma if network.exposure is not None and self.has_nrm else None
        self.exposure_side = network.exposure_side
        # the dequantisation blur for the graph writers (ONNX, C): a vertical, then a horizontal pass
        self.tone_blur_passes: list[_Conv] = []
        if tone_radius(self.tone):
            taps = torch.tensor(BLUR_TAPS, dtype=torch.float32)
            size, middle = len(BLUR_TAPS), len(BLUR_TAPS) // 2
            kernel = torch.zeros(3, 3, size, size)
            vertical = torch.zeros(3, 3, size, size)
            horizontal = torch.zeros(3, 3, size, size)
            for channel in range(3):
                kernel[channel, channel] = taps[:, None] * taps[None, :]
                vertical[channel, channel, :, middle] = taps
                horizontal[channel, channel, middle, :] = taps
            self.register_buffer("tone_blur_weight", kernel)  # the whole 7x7 blur: ONNX's normalisation of it
            self.register_buffer("tone_blur_bias", torch.zeros(3))
            # the separable form: the native engine skips structurally zero taps, so the two passes cost
            # 2 x 7 multiply-adds per channel and pixel instead of 49
            self.register_buffer("tone_blur_v_weight", vertical)
            self.register_buffer("tone_blur_h_weight", horizontal)
            self.tone_blur_passes = [
                _Conv("u", "tone_blur_v_weight", "tone_blur_bias", BLUR_RADIUS, 1, [(0, 3, "tone.blur_v")], activate=False),
                _Conv("tone.blur_v", "tone_blur_h_weight", "tone_blur_bias", BLUR_RADIUS, 1, [(0, 3, "tone.blur")],
                      activate=False)]

    def receptive_radius(self) -> int:
        """Pixels one output pixel can see in each direction (the halo for exact tiling)."""
        return self.receptive_radius_value

    def _gain_input(self, small: torch.Tensor) -> torch.Tensor:
        """What the exposure gain is measured on: the IEM output, or the unclamped ratio with ``tone``."""
        u, illuminations = self.exposure_iem(small)
        return small / illuminations[-1] if self.tone is not None else u

    # -- running the programs ---------------------------------------------------------------

    def _conv(self, step: _Conv, env: dict[str, torch.Tensor]) -> None:
        source = env[step.source]
        weight = getattr(self, step.weight)
        bias = getattr(self, step.bias)
        fused = (_FUSED_CONV is not None and not self.functional and source.device.type == "cpu"
                 and source.dtype == torch.float32 and source.is_contiguous(memory_format=torch.channels_last))
        # Activation inside the convolution when every output is a fresh tensor (not a buffer slot).
        fuse_act = fused and step.activate and all(env.get(d) is None for _, _, d in step.outputs)
        if fused:
            padding, dilation = [step.padding] * 2, [step.dilation] * 2
            if fuse_act:
                out = _FUSED_CONV(source, weight, bias, padding, [1, 1], dilation, 1, "leaky_relu", [LEAKY_SLOPE], "")
            else:
                out = _FUSED_CONV(source, weight, bias, padding, [1, 1], dilation, 1, "none", [], "")
        else:
            out = F.conv2d(source, weight, bias, padding=step.padding, dilation=step.dilation)
        if not step.activate or fuse_act:
            for start, end, destination in step.outputs:
                env[destination] = out if (start == 0 and end == out.shape[1]) else out[:, start:end]
            return
        for start, end, destination in step.outputs:
            part = out if (start == 0 and end == out.shape[1]) else out[:, start:end]
            target = env.get(destination)
            if self.functional:
                env[destination] = F.leaky_relu(part, LEAKY_SLOPE)
            elif target is not None:
                torch._C._nn.leaky_relu(part, LEAKY_SLOPE, out=target)
            else:
                env[destination] = F.leaky_relu_(part, LEAKY_SLOPE)  # ``out`` is a temporary

    def _act(self, step: _Act, env: dict[str, torch.Tensor]) -> None:
        target = env.get(step.destination)
        if target is not None and not self.functional:
            torch._C._nn.leaky_relu(env[step.source], LEAKY_SLOPE, out=target)
        else:
            env[step.destination] = F.leaky_relu(env[step.source], LEAKY_SLOPE)

    def _run_cell(self, program: _CellProgram, prefix: str, env: dict[str, torch.Tensor],
                  reference: torch.Tensor, channels_last: bool, parity: int) -> None:
        """Run one cell. Channels-first, the activations write straight into the fuse convolution's
        input buffer; channels-last (or functional), the four inputs are concatenated."""
        channels = program.channels
        use_buffer = not self.functional and not channels_last
        if use_buffer:
            batch, _, height, width = reference.shape
            buffer = _workspace(reference, (batch, 4 * channels, height, width), parity)
            env[f"{prefix}.buffer"] = buffer
            for index, name in enumerate(_FUSE_SLOTS):
                env[f"{prefix}.slot.{name}"] = buffer[:, index * channels:(index + 1) * channels]
        for step in program.steps:
            if isinstance(step, _Conv):
                self._conv(step, env)
            else:
                self._act(step, env)
        if not use_buffer:
            parts = [env[f"{prefix}.slot.{name}"] for name in _FUSE_SLOTS]
            buffer = torch.cat(parts, dim=1)
            env[f"{prefix}.buffer"] = buffer.contiguous(memory_format=torch.channels_last) if channels_last else buffer
        if program.fuse is not None:
            self._conv(program.fuse, env)

    def forward(self, y: torch.Tensor, gain: torch.Tensor | None = None,
                strength: torch.Tensor | None = None) -> torch.Tensor:
        """``gain``: the exposure gain (:func:`ruas_nni.model.network.exposure_gain`) of the image that
        ``y`` is a tile of; by default that of ``y`` when the network normalises exposure.
        ``strength``: with ``denoise_sigma``, the NRM's strength of that image
        (:func:`ruas_nni.model.network.exposure_and_strength`); by default that of ``y``."""
        if self.exposure_iem is not None and (gain is None or (strength is None and self.denoise_sigma is not None)):
            measured_gain, measured = exposure_and_strength(self._gain_input, y, self.exposure, self.exposure_gamma,
                                                            self.tone, self.denoise_sigma, side=self.exposure_side)
            gain = measured_gain if gain is None else gain
            strength = measured if strength is None else strength
        warm = _traceable_warm_start if self.functional else fast_warm_start
        if self.iem_channels_last:
            y = y.contiguous(memory_format=torch.channels_last)
        t_hat_0 = warm(y)
        u = y
        for k, program in enumerate(self.iem_cells):
            if k == 0 or self.warm_start == "fixed":
                t_hat = t_hat_0
            elif self.warm_start == "plain":
                t_hat = warm(u)
            elif self.functional:
                t_hat = warm(u) - self.gamma * (u - y)
            else:
                t_hat = warm(u).sub_(torch.sub(u, y).mul_(self.gamma))
            env: dict[str, torch.Tensor] = {"t_hat": t_hat}
            self._run_cell(program, f"iem{k}", env, y, self.iem_channels_last, k % 2)
            z = env[f"iem{k}.out"]
            ratio = self.tone is not None and k == len(self.iem_cells) - 1  # the shoulder policy maps y / t_K
            if self.functional:
                u = y / torch.clamp(torch.sigmoid(z), T_MIN, 1.0)
                u = u if ratio else torch.clamp(u, 0.0, 1.0)
            else:
                t = torch.sigmoid_(z).clamp_(T_MIN, 1.0)
                u = torch.div(y, t, out=t)
                u = u if ratio else u.clamp_(0.0, 1.0)
        if gain is not None:
            u = apply_tone(u, gain, self.exposure_gamma, self.tone)
        if not self.has_nrm:
            return u
        if self.iem_channels_last and not self.nrm_channels_last:
            u = u.contiguous()
        env = {"u": u}
        if self.nrm_stem is not None:
            self._conv(self.nrm_stem, env)
        for index, program in enumerate(self.nrm_cells):
            self._run_cell(program, f"nrm{index}", env, u, self.nrm_channels_last, index % 2)
        assert self.nrm_head is not None
        self._conv(self.nrm_head, env)
        if strength is not None and self.denoise_sigma is not None:
            return u - env["noise"] * strength.to(u.dtype).view(-1, 1, 1, 1)
        return u - env["noise"]


class ProgramWriter(Protocol[Value]):
    """What :func:`walk_program` asks of a writer of the folded program (the ONNX graph writer, the C
    writer): each method records one operation on the writer's values (tensor names) and returns the
    value it produced; ``conv`` and ``act`` store their outputs in ``env`` by the program's names."""

    def warm(self, x: Value) -> Value: ...  # S(x)

    def rectify(self, u: Value, y: Value, gamma: float | None) -> Value: ...  # S(u) - gamma (u - y); None: S(u)

    # clamp(y / clamp(sigmoid(z), T_MIN, 1), 0, 1); with clamp False the ratio y / clamp(sigmoid(z), T_MIN, 1)
    def iem_output(self, z: Value, y: Value, clamp: bool = True) -> Value: ...

    # apply_tone with the graph's second input (``blurred``: the dequantisation blur of u, tone_blur_passes)
    def gain(self, u: Value, blurred: Value | None = None) -> Value: ...

    def conv(self, step: _Conv, env: dict[str, Value]) -> None: ...

    def act(self, step: _Act, env: dict[str, Value]) -> None: ...

    def concat(self, slots: list[Value], prefix: str) -> Value: ...  # the fuse convolution's input

    # u - noise (or u; with scaled, u - strength * noise, strength the graph's third input) is the output
    def output(self, u: Value, noise: Value | None, scaled: bool = False) -> None: ...


def strength_input(model: FoldedRUAS, gain_input: bool) -> bool:
    """Whether the graph of ``model`` takes the NRM's strength as an input (beside the gain: the
    network option ``denoise_sigma``, :mod:`ruas_nni.model.strength`)."""
    return gain_input and model.has_nrm and model.denoise_sigma is not None


def walk_program(model: FoldedRUAS, writer: ProgramWriter[Value], image: Value, *, gain_input: bool = False) -> None:
    """Hand the folded program of ``model`` to ``writer`` operation by operation, in the order
    :meth:`FoldedRUAS.forward` computes them (``image``: the writer's value for the input;
    ``gain_input``: scale the IEM output by a gain given as a second input). A fuse composed into the
    next cell is not supported."""
    t_hat_0 = writer.warm(image)
    u = image
    for k, program in enumerate(model.iem_cells):
        if k == 0 or model.warm_start == "fixed":
            t_hat = t_hat_0
        else:
            t_hat = writer.rectify(u, image, None if model.warm_start == "plain" else float(model.gamma))
        env = {"t_hat": t_hat}
        _walk_cell(program, f"iem{k}", env, writer)
        ratio = model.tone is not None and k == len(model.iem_cells) - 1  # the shoulder policy maps y / t_K
        u = writer.iem_output(env[f"iem{k}.out"], image, clamp=not ratio)
    if gain_input:
        blurred = None
        if model.tone_blur_passes:
            env = {"u": u}
            for blur_pass in model.tone_blur_passes:
                writer.conv(blur_pass, env)
            blurred = env["tone.blur"]
        u = writer.gain(u, blurred)
    if not model.has_nrm:
        writer.output(u, None)
        return
    env = {"u": u}
    if model.nrm_stem is not None:
        writer.conv(model.nrm_stem, env)
    for index, program in enumerate(model.nrm_cells):
        _walk_cell(program, f"nrm{index}", env, writer)
    assert model.nrm_head is not None
    writer.conv(model.nrm_head, env)
    writer.output(u, env["noise"], scaled=strength_input(model, gain_input))


def _walk_cell(program: _CellProgram, prefix: str, env: dict, writer: ProgramWriter) -> None:
    for step in program.steps:
        if isinstance(step, _Conv):
            writer.conv(step, env)
        else:
            writer.act(step, env)
    if program.fuse is None:
        raise ValueError("a fuse composed into the next cell cannot be written as a graph")
    env[f"{prefix}.buffer"] = writer.concat([env[f"{prefix}.slot.{n}"] for n in _FUSE_SLOTS], prefix)
    writer.conv(program.fuse, env)


def fold(network: RUASNet, stage: str = "final", **options: bool) -> FoldedRUAS:
    """Fold ``network`` for inference (see :class:`FoldedRUAS`); the network is not modified."""
    return FoldedRUAS(network, stage, **options).eval()
