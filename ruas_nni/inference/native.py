"""The folded network as generated C: one compiled function per checkpoint, the ``native`` CPU engine.

ONNX Runtime spends about 70 % of its time on this network in convolutions of 3 to 24 channels,
which its general kernels run at 10-14 GMAC/s on this project's CPU, and the rest in passes that
only move memory (``Split``, ``Concat``, ``LeakyRelu``). The generated code does neither:

* every convolution is a loop over rows with all of its output channels in vector registers, the
  weights as constants of the code, the bias, the LeakyReLU and the split into named outputs in
  the same loop (no ``Split``, no separate activation pass);
* the fuse convolution reads its four inputs where the stage convolutions wrote them (no
  ``Concat``); every tensor is a list of planes;
* the IEM's ``sigmoid / clamp / divide / clamp`` and the warm start are one loop each, the NRM's
  ``u - noise`` writes the output.

The network streams through the image: the steps run in bands of :data:`BAND` rows, each step as far
as its inputs allow (a convolution of radius ``r`` lags ``r`` rows behind its input), and every plane
is a ring of a few rows (a power of two, long enough for the oldest row a reader still needs), so
the rows a band touches are still in the caches when the next step reads them, and the working
memory depends on the width only (about 9 MB at 600 pixels for the paper genotype). Rings carry a
zero border as wide as the largest convolution radius (at least the warm start's one pixel), and
zero rows below the image, so every convolution reads its "same" zero padding from memory and all
pixels run the same instructions: a tile gives what the whole image gives (``tests/test_native.py``).

The C is plain C99 with GCC/Clang vector extensions (8 float lanes; no intrinsics, so it builds for
any CPU these compilers target). It is compiled once with the system's C compiler (``$CC``, else
``cc``, ``gcc`` or ``clang``) with ``-O3 -march=native`` and kept in the cache folder by the hash of
its source, the compiler and this CPU (``native/<key>.so``); later runs load it without compiling
and without PyTorch. No compiler: :func:`compiler` is ``None`` and ``enhance`` uses ONNX Runtime.

Only :func:`native_source` needs the folded model (PyTorch); the rest needs NumPy and ``ctypes``.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..base.atomic import atomic_write
from ..model.tone import BLUR_TAPS
from .cache_folder import cache_dir, cache_disabled
from .tiling import tile_pixels_for_budget

if TYPE_CHECKING:
    from .fold import FoldedRUAS, _Act, _Conv

__all__ = ["NativeSession", "NativeUnavailable", "compiler", "library_folder", "library_for", "native_source"]

log = logging.getLogger(__name__)

LANES = 8
"""Float lanes of one vector (256 bits)."""
MAX_ACCUMULATORS = 12
"""Output vectors kept in registers at once (16 vector registers on AVX2, 32 on AVX-512)."""
CFLAGS = ("-O3", "-march=native", "-ffp-contract=fast", "-fno-math-errno", "-shared", "-fPIC")


class NativeUnavailable(RuntimeError):
    """No C compiler, or the generated code did not compile or load here."""


# ---------------------------------------------------------------------------------------------
# The program: the folded network as a list of steps over planes.


@dataclass
class _Step:
    kind: str  # conv, leaky, warm, rectify, iem_out, iem_ratio, gain, tone, final
    reads: list[str]
    writes: list[str]
    data: dict = field(default_factory=dict)


def _c_float(value: float) -> str:
    """A float32 value as an exact C literal."""
    value = float(np.float32(value))
    if value == 0.0:
        return "0.0f"
    return f"{value.hex()}f"


class _Writer:
    """Turns the folded program into steps, then into C."""

    def __init__(self) -> None:
        self.params: list[np.ndarray] = []
        self.steps: list[_Step] = []
        self.channels: dict[str, int] = {}
        self.radius = 1
        self.aliases: dict[str, list[str]] = {}

    def tensor(self, name: str, channels: int) -> str:
        self.channels[name] = channels
        return name

    def add(self, kind: str, reads: list[str], writes: list[str], **data) -> None:
        self.steps.append(_Step(kind, reads, writes, data))

    def add_params(self, *arrays: np.ndarray) -> int:
        """Append values to the code's parameters; returns the offset of the first one."""
        offset = sum(a.size for a in self.params)
        self.params += [np.asarray(a, np.float64).reshape(-1) for a in arrays]
        return offset

    def allocate(self) -> tuple[dict[str, list[int]], int]:
        """One plane per channel of every tensor, in the order they are written: the network streams
        through the image, so every tensor is live in every band (its ring is what stays small)."""
        planes: dict[str, list[int]] = {"image": [], "enhanced": []}
        count = 0
        for step in self.steps:
            for name in step.writes:
                if name not in planes:
                    planes[name] = list(range(count, count + self.channels[name]))
                    count += self.channels[name]
        return planes, count


class _CProgram:
    """The folded program as steps over planes (a :class:`~ruas_nni.inference.fold.ProgramWriter`)."""

    def __init__(self, writer: _Writer, model: FoldedRUAS, t_min: float) -> None:
        self.writer = writer
        self.model = model
        self.t_min = t_min
        self.count = 0

    def _new(self, hint: str, channels: int) -> str:
        self.count += 1
        return self.writer.tensor(f"{hint}#{self.count}", channels)

    def warm(self, x: str) -> str:
        out = self._new("warm", 3)
        self.writer.add("warm", [x], [out])
        return out

    def rectify(self, u: str, y: str, gamma: float | None) -> str:
        out = self._new("t_hat", 3)
        self.writer.add("rectify", [u, y], [out], gamma=0.0 if gamma is None else gamma)
        return out

    def iem_output(self, z: str, y: str, clamp: bool = True) -> str:
        out = self._new("u", 3)
        self.writer.add("iem_out" if clamp else "iem_ratio", [z, y], [out], t_min=self.t_min)
        return out

    def gain(self, u: str, blurred: str | None = None) -> str:
        out = self._new("u_gain", 3)
        tone = self.model.tone
        if tone is not None:  # the shoulder policy: its options are parameters, as the exponent is
            gamma = float(self.model.exposure_gamma)
            at = self.writer.add_params(np.array([gamma, tone.toe, tone.toe ** gamma if tone.toe else 0.0, tone.knee,
                                                  1.0 / (1.0 - tone.knee), tone.hue,
                                                  -1.0 / tone.dequantise if blurred is not None else 0.0]))
            self.writer.add("tone", [u] if blurred is None else [u, blurred], [out], at=at)
            return out
        # the tone curve's exponent is a parameter: an override needs no new code
        at = self.writer.add_params(np.array([self.model.exposure_gamma]))
        self.writer.add("gain", [u], [out], at=at)
        return out

    def conv(self, step: _Conv, env: dict[str, str]) -> None:
        writer = self.writer
        weight = getattr(self.model, step.weight).detach().double().cpu().numpy()
        bias = getattr(self.model, step.bias).detach().double().cpu().numpy()
        writer.radius = max(writer.radius, int(step.padding))
        outputs = []
        for start, end, destination in step.outputs:
            env[destination] = self._new(destination, end - start)
            outputs.append(env[destination])
        offset = writer.add_params(weight, bias)
        writer.add("conv", [env[step.source]], outputs, weight=weight, offset=offset, padding=int(step.padding),
                   dilation=int(step.dilation), activate=bool(step.activate))

    def act(self, step: _Act, env: dict[str, str]) -> None:
        out = self._new(step.destination, self.writer.channels[env[step.source]])
        self.writer.add("leaky", [env[step.source]], [out])
        env[step.destination] = out

    def concat(self, slots: list[str], prefix: str) -> str:
        buffer = self._new(f"{prefix}.buffer", sum(self.writer.channels[s] for s in slots))
        self.writer.add("concat", slots, [buffer])  # no code: the fuse reads the slots' planes
        return buffer

    def output(self, u: str, noise: str | None, scaled: bool = False) -> None:
        self.writer.add("final", [u] if noise is None else [u, noise], ["enhanced"], scaled=scaled)


def native_source(model: FoldedRUAS, *, gain_input: bool = False) -> tuple[str, np.ndarray]:
    """``(source, params)``: the C source of ``model`` (a :class:`~ruas_nni.inference.fold.FoldedRUAS` in
    float32) and its weights and biases, float32, in the order the code reads them. The source
    defines ``ruas_run(params, image, out, work, height, width, gain, strength)``, computing what
    :func:`ruas_nni.inference.onnx_export.folded_onnx_bytes` writes as ONNX, and ``ruas_planes()``,
    the number of planes of ``work``. It depends on the architecture only (and on which weights are
    structurally zero, such as a 1x1 map merged into a 3x3 one), not on the weights' values: every
    checkpoint of one genotype shares one compiled library. ``gain_input``: as for the ONNX graph
    (exposure normalisation with the gain given, and with ``denoise_sigma`` the NRM's strength)."""
    from ..model.network import LEAKY_SLOPE, T_MIN
    from .fold import walk_program

    if gain_input and model.exposure is None:
        raise ValueError("native_source: gain_input needs a network with exposure normalisation")
    writer = _Writer()
    writer.tensor("image", 3)
    y = writer.tensor("y", 3)
    writer.add("load", ["image"], [y])
    walk_program(model, _CProgram(writer, model, T_MIN), y, gain_input=gain_input)
    writer.steps = _fuse_activations(writer.steps)
    # The concat steps only name plane lists: the buffer is the slots' planes.
    planes, count = _allocate_with_concat(writer)
    params = np.concatenate(writer.params).astype(np.float32) if writer.params else np.zeros(1, np.float32)
    return _emit(writer, planes, count, LEAKY_SLOPE), params


def _allocate_with_concat(writer: _Writer) -> tuple[dict[str, list[int]], int]:
    """Planes for every tensor, where a ``concat`` output (the fuse convolution's input) is its
    inputs' planes: the concat steps are dropped, their outputs become aliases."""
    writer.aliases = {step.writes[0]: step.reads for step in writer.steps if step.kind == "concat"}
    writer.steps = [step for step in writer.steps if step.kind != "concat"]
    planes, count = writer.allocate()
    for buffer, slots in writer.aliases.items():
        planes[buffer] = [p for s in slots for p in planes[s]]
    return planes, count


# ---------------------------------------------------------------------------------------------
# C emission.

_PRELUDE = r"""
#include <math.h>
#include <string.h>
typedef float vf __attribute__((vector_size(32)));
typedef int vi __attribute__((vector_size(32)));
static inline vf ld(const float *p) { vf v; memcpy(&v, p, sizeof v); return v; }
static inline void st(float *p, vf v) { memcpy(p, &v, sizeof v); }
static inline vf splat(float x) { return (vf){x, x, x, x, x, x, x, x}; }
static inline vf vsel(vi m, vf a, vf b) { return (vf)(((vi)a & m) | ((vi)b & ~m)); }
static inline vf vmax(vf a, vf b) { return vsel(a > b, a, b); }
static inline vf vmin(vf a, vf b) { return vsel(a < b, a, b); }
static inline vf leaky(vf a) { return vsel(a > 0.0f, a, a * SLOPE); }
/* exp on 8 lanes (Cephes' expf polynomial, about 1 ulp) */
static inline vf vexp(vf x) {
    x = vmin(vmax(x, splat(-87.0f)), splat(88.0f));
    vf t = x * 1.44269504088896341f;
    vf n = (t + 12582912.0f) - 12582912.0f;
    vf r = x - n * 0.693359375f;
    r = r - n * -2.12194440e-4f;
    vf p = splat(1.9875691500e-4f);
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    vi e = (__builtin_convertvector(n, vi) + 127) << 23;
    return p * (vf)e;
}
static inline vf vsqrt(vf x) { vf y; for (int i = 0; i < 8; ++i) y[i] = sqrtf(x[i]); return y; }
static inline vf vpow(vf x, float p) { vf y; for (int i = 0; i < 8; ++i) y[i] = powf(x[i], p); return y; }
/* apply_gain's tone curve: u for p = 1, else max(u, 0) ** p */
static inline vf vpower(vf u, float p) {
    if (p == 1.0f) return u;
    vf m = vmax(u, splat(0.0f));
    return p == 0.5f ? vsqrt(m) : vpow(m, p);
}
/* the shoulder policy's curve S(gain * g(v)) (ruas_nni.model.tone); q: p, toe, toe ** p, knee, 1 / (1 - knee) */
static inline vf vshoulder(vf v, float gain, const float *q) {
    vf g = (q[0] == 1.0f && q[1] == 0.0f) ? v : vpower(v + q[1], q[0]) - q[2];
    vf z = g * gain;
    vf soft = q[3] + (1.0f - q[3]) * (1.0f - vexp((q[3] - z) * q[4]));
    return q[3] <= 0.0f ? soft : vsel(z <= q[3], z, soft);
}
/* the weight of the dequantisation blur's taps inside 0 .. n - 1 around i (ruas_nni.model.tone.blur_norm) */
static float blur_norm(long i, long n) {
    static const float taps[BLUR_TAPS] = {BLUR_WEIGHTS};
    float s = 0.0f;
    for (long k = 0; k < BLUR_TAPS; ++k) { long j = i + k - BLUR_TAPS / 2; if (j >= 0 && j < n) s += taps[k]; }
    return s;
}
"""


BAND = 8
"""Rows every step advances by in one pass of the band loop (the network streams through the image)."""

_REACH = {"warm": 1, "rectify": 1}
"""Rows below the output row that a step reads, besides convolutions (their radius); others: 0."""


def _schedule(writer: _Writer) -> tuple[list[int], dict[str, int]]:
    """``(lags, rings)``. Per step, how many rows its output lags behind the input rows loaded: a step
    can compute row ``r`` once every input has row ``r + reach`` (its producer lagging itself). Per
    tensor, the rows its ring must hold (a power of two): from the oldest row a reader may still need
    (a band behind, minus the reader's reach) to the newest row written, zero rows below included."""
    producer_lag: dict[str, int] = {}
    lags = []
    span: dict[str, int] = {}
    for step in writer.steps:
        reach = step.data["padding"] if step.kind == "conv" else _REACH.get(step.kind, 0)
        sources = [t for name in step.reads for t in writer.aliases.get(name, [name])]
        lag = max((producer_lag.get(t, 0) + reach for t in sources), default=0)
        for t in sources:
            span[t] = max(span.get(t, 0), BAND + lag + reach - producer_lag.get(t, 0))
        for name in step.writes:
            producer_lag[name] = lag
        lags.append(lag)
    rings = {name: 1 << (max(span.get(name, 0), BAND) + writer.radius + 1 - 1).bit_length() for name in producer_lag}
    return lags, rings


def _emit(writer: _Writer, planes: dict[str, list[int]], count: int, slope: float) -> str:
    radius = writer.radius
    lags, rings = _schedule(writer)
    ring_of = [0] * count
    for name, plane_list in planes.items():
        if name in rings:
            for plane in plane_list:
                ring_of[plane] = rings[name]
    first_row = np.concatenate([[0], np.cumsum(ring_of)]).astype(int).tolist()
    lines = [f"#define SLOPE {_c_float(slope)}", f"#define BLUR_TAPS {len(BLUR_TAPS)}",
             f"#define BLUR_WEIGHTS {', '.join(_c_float(w) for w in BLUR_TAPS)}", _PRELUDE, f"#define R {radius}",
             f"static const int RING_FIRST[{count + 1}] = {{{', '.join(map(str, first_row))}}};",
             f"static const int RING_MASK[{count}] = {{{', '.join(str(r - 1) for r in ring_of)}}};",
             "#define ROW(i, r) (work + ((long)RING_FIRST[i] + (((long)(r) + R) & RING_MASK[i])) * S + R)",
             f"int ruas_planes(void) {{ return {count}; }}",
             f"int ruas_radius(void) {{ return {radius}; }}",
             f"int ruas_rows(void) {{ return {first_row[-1]}; }}",
             "static void zero_rows(float *work, const int *planes, int n, long H, long S) {",
             "    for (int i = 0; i < n; ++i) for (long r = H; r < H + R; ++r) memset(ROW(planes[i], r) - R, 0, "
             "sizeof(float) * S);", "}"]
    calls: list[str] = []
    functions: list[str] = []
    kernels: dict[str, str] = {}
    for index, step in enumerate(writer.steps):
        if step.kind == "conv":
            code, arguments = _conv_kernel(step, planes)
            name = kernels.get(code)
            if name is None:
                name = kernels[code] = f"conv{len(kernels)}"
                functions.append(f"static void {name}(float *restrict work, const float *restrict w, const int *src, "
                                 f"const int *dst, long r0, long r1, long H, long W, long S, long Wv) "
                                 f"{{\n{code}\n}}")
            call = f"{name}(work, {arguments}, done[{index}], limit, H, W, S, Wv);"
        else:
            name = f"step{index}"
            functions.append(_emit_step(name, step, planes))
            call = f"{name}(work, params, image, out, done[{index}], limit, H, W, S, Wv, gain, strength);"
        outputs = [p for written in step.writes for p in planes[written]]
        finish = (f" if (limit == H) zero_rows(work, (const int[]){{{', '.join(map(str, outputs))}}}, {len(outputs)}, "
                  "H, S);" if outputs else "")
        calls.append(f"        limit = top - {lags[index]} < H ? top - {lags[index]} : H;\n"
                     f"        if (limit > done[{index}]) {{ {call}{finish} done[{index}] = limit; }}")
    lines.extend(functions)
    lines.append(f"""
/* work: ruas_rows() rows of S floats (S = Wv + 2R, Wv = W rounded up to {LANES * 4}): one ring of rows
   per plane, RING_MASK + 1 rows long; row r of plane i is ring row (r + R) mod its length. The steps
   run in bands of {BAND} input rows, each as far as its inputs allow, so the rows a band touches are
   still in the caches when the next step reads them. */
void ruas_run(const float *params, const float *image, float *out, float *work, long H, long W, float gain,
              float strength) {{
    long Wv = (W + {LANES * 4 - 1}) / {LANES * 4} * {LANES * 4};
    long S = Wv + 2 * R, limit;
    long done[{len(writer.steps)}] = {{0}};
    memset(work, 0, sizeof(float) * {first_row[-1]} * S);  /* the zero border: top rows, left and right columns */
    for (long top = {BAND}; ; top += {BAND}) {{
{chr(10).join(calls)}
        if (top - {max(lags)} >= H) break;  /* every step has reached the bottom */
    }}
}}""")
    return "\n".join(lines) + "\n"


_SIGNATURE = ("static void {name}(float *restrict work, const float *restrict params, const float *restrict image, "
              "float *restrict out, long r0, long r1, long H, long W, long S, long Wv, float gain, float strength)")


_ELEMENTWISE = {
    # kind: (C of one 8-lane vector at x; a, b: the step's read planes' rows r, a1: row r + 1; d: the output row)
    "warm": "vmax(vmax(ld(a + x), ld(a + x + 1)), vmax(ld(a1 + x), ld(a1 + x + 1)))",
    "rectify": "vmax(vmax(ld(a + x), ld(a + x + 1)), vmax(ld(a1 + x), ld(a1 + x + 1))) - (ld(a + x) - ld(b + x)) * {gamma}",
    "iem_out": "vmin(vmax(ld(b + x) / vmin(vmax(1.0f / (1.0f + vexp(-ld(a + x))), splat({t_min})), splat(1.0f)), "
               "splat(0.0f)), splat(1.0f))",
    "iem_ratio": "ld(b + x) / vmin(vmax(1.0f / (1.0f + vexp(-ld(a + x))), splat({t_min})), splat(1.0f))",
    "gain": "vmin(vmax(vpower(ld(a + x), params[{at}]) * gain, splat(0.0f)), splat(1.0f))",
    "leaky": "leaky(ld(a + x))",
}


def _emit_step(name: str, step: _Step, planes: dict[str, list[int]]) -> str:
    head = _SIGNATURE.format(name=name) + " {"
    reads = [planes[n] for n in step.reads]
    lines = [head, "    (void)image; (void)out; (void)gain; (void)strength; (void)params;",
             "    for (long r = r0; r < r1; ++r) {"]
    if step.kind == "load":  # the dense input into the padded planes
        for c, plane in enumerate(planes[step.writes[0]]):
            lines += [f"        {{ float *d = ROW({plane}, r);",
                      f"          memcpy(d, image + ({c} * H + r) * W, sizeof(float) * W);",
                      "          memset(d + W, 0, sizeof(float) * (S - R - W)); }"]
    elif step.kind == "tone":  # the shoulder policy: every channel's curve, mixed with the largest channel's
        src, dst, at = reads[0], planes[step.writes[0]], step.data["at"]
        lines += [f"        const float *q = params + {at}, hue = q[5];",
                  "        const float *a0 = ROW({}, r), *a1 = ROW({}, r), *a2 = ROW({}, r);".format(*src),
                  "        float *d0 = ROW({}, r), *d1 = ROW({}, r), *d2 = ROW({}, r);".format(*dst),
                  f"        for (long x = 0; x < Wv; x += {LANES}) {{",
                  "            vf v0 = ld(a0 + x), v1 = ld(a1 + x), v2 = ld(a2 + x);"]
        if len(reads) > 1:  # dequantise: the blur normalised inside the window, weighted by its darkness
            lines += ["            {{ const float *b0 = ROW({}, r), *b1 = ROW({}, r), *b2 = ROW({}, r);".format(*reads[1]),
                      "              vf norm = splat(blur_norm(r, H));",
                      f"              if (x < BLUR_TAPS / 2 || x + {LANES} > W - BLUR_TAPS / 2)",
                      f"                  for (int l = 0; l < {LANES}; ++l) norm[l] *= blur_norm(x + l, W);",
                      "              vf c0 = ld(b0 + x) / norm, c1 = ld(b1 + x) / norm, c2 = ld(b2 + x) / norm;",
                      "              vf w = vexp(vmax(vmax(c0, c1), c2) * q[6]);",
                      "              v0 = v0 + w * (c0 - v0); v1 = v1 + w * (c1 - v1); v2 = v2 + w * (c2 - v2); }"]
        lines += ["            v0 = vmax(v0, splat(0.0f)); v1 = vmax(v1, splat(0.0f)); v2 = vmax(v2, splat(0.0f));",
                  "            vf f0 = vshoulder(v0, gain, q), f1 = vshoulder(v1, gain, q), f2 = vshoulder(v2, gain, q);",
                  "            if (hue > 0.0f) {",
                  "                vf m = vmax(vmax(v0, v1), v2);",
                  "                vf ratio = vshoulder(m, gain, q) / vmax(m, splat(1e-6f)) * hue;",
                  "                f0 = f0 * (1.0f - hue) + v0 * ratio; f1 = f1 * (1.0f - hue) + v1 * ratio;",
                  "                f2 = f2 * (1.0f - hue) + v2 * ratio;",
                  "            }",
                  "            st(d0 + x, f0); st(d1 + x, f1); st(d2 + x, f2);",
                  "        }"]
        lines += [f"        memset(ROW({plane}, r) + W, 0, sizeof(float) * (S - R - W));" for plane in dst]
    elif step.kind == "final":  # u - noise (or u, or u - strength * noise) into the dense output
        for c, plane in enumerate(reads[0]):
            scale = "strength * " if step.data.get("scaled") else ""
            noise = f" - {scale}ROW({reads[1][c]}, r)[x]" if len(reads) > 1 else ""
            lines += [f"        {{ const float *a = ROW({plane}, r); float *d = out + ({c} * H + r) * W;",
                      f"          for (long x = 0; x < W; ++x) d[x] = a[x]{noise}; }}"]
    else:
        expression = _ELEMENTWISE[step.kind].format(
            gamma=_c_float(step.data.get("gamma", 0.0)), t_min=_c_float(step.data.get("t_min", 0.0)),
            at=step.data.get("at", 0))
        for c, plane in enumerate(planes[step.writes[0]]):
            second = f", *b = ROW({reads[1][c]}, r)" if len(reads) > 1 else ""
            lines += [f"        {{ const float *a = ROW({reads[0][c]}, r), *a1 = ROW({reads[0][c]}, r + 1){second};",
                      f"          float *d = ROW({plane}, r); (void)a1;",
                      f"          for (long x = 0; x < Wv; x += {LANES}) st(d + x, {expression});",
                      "          memset(d + W, 0, sizeof(float) * (S - R - W)); }"]
    return "\n".join([*lines, "    }", "}"])


def _conv_kernel(step: _Step, planes: dict[str, list[int]]) -> tuple[str, str]:
    """``(body, call arguments)`` of one convolution step. The body depends on the convolution's shape,
    zero pattern and extra outputs only (planes and weights are arguments), so the steps of the IEM's
    stages and of the NRM's cells share one compiled kernel each."""
    weight = step.data["weight"]
    out_channels, in_channels, kernel, _ = weight.shape
    dilation, padding = step.data["dilation"], step.data["padding"]
    own = step.writes[:step.data["outputs"]]
    sources = planes[step.reads[0]]
    destinations = [p for name in own for p in planes[name]]
    assert len(sources) == in_channels and len(destinations) == out_channels, (step.reads, step.writes)
    # An activation of an output, fused (``also``: (output, activated copy)): channel -> extra plane slot.
    starts, at = {}, 0
    for name in own:
        starts[name] = at
        at += len(planes[name])
    extra: dict[int, int] = {}
    for source, copy in step.data.get("also", []):
        for k, plane in enumerate(planes[copy]):
            extra[starts[source] + k] = len(destinations)
            destinations.append(plane)
    offsets = [k * dilation - padding for k in range(kernel)]
    lines = ["    for (long r = r0; r < r1; ++r) {"]
    for ci in range(in_channels):
        for ky, dy in enumerate(offsets):
            lines.append(f"        const float *s{ci}_{ky} = ROW(src[{ci}], r + ({dy}));")
    for index in range(len(destinations)):
        lines.append(f"        float *d{index} = ROW(dst[{index}], r);")
    bias = weight.size
    for first in range(0, out_channels, MAX_ACCUMULATORS):
        block = list(range(first, min(out_channels, first + MAX_ACCUMULATORS)))
        unroll = max(1, min(4, MAX_ACCUMULATORS // len(block)))
        lines.append(f"        for (long x = 0; x < Wv; x += {LANES * unroll}) {{")
        for co in block:
            for j in range(unroll):
                lines.append(f"            vf a{co}_{j} = splat(w[{bias + co}]);")
        for ci in range(in_channels):
            for ky in range(kernel):
                for kx, dx in enumerate(offsets):
                    for j in range(unroll):
                        lines.append(f"            {{ vf v = ld(s{ci}_{ky} + x + {dx + LANES * j});")
                        for co in block:
                            if weight[co, ci, ky, kx] != 0.0:  # structural zeros: a 1x1 map inside a 3x3 one
                                index = ((co * in_channels + ci) * kernel + ky) * kernel + kx
                                lines.append(f"              a{co}_{j} += w[{index}] * v;")
                        lines.append("            }")
        for co in block:
            for j in range(unroll):
                value = f"leaky(a{co}_{j})" if step.data["activate"] else f"a{co}_{j}"
                if co in extra:
                    lines.append(f"            {{ vf o = {value}; st(d{co} + x + {LANES * j}, o); "
                                 f"st(d{extra[co]} + x + {LANES * j}, leaky(o)); }}")
                else:
                    lines.append(f"            st(d{co} + x + {LANES * j}, {value});")
        lines.append("        }")
    # The columns right of the image are the next reader's zero padding.
    lines += [f"        memset(d{index} + W, 0, sizeof(float) * (S - R - W));" for index in range(len(destinations))]
    lines.append("    }")
    arguments = (f"params + {step.data['offset']}, (const int[]){{{', '.join(map(str, sources))}}}, "
                 f"(const int[]){{{', '.join(map(str, destinations))}}}")
    return "\n".join(lines), arguments


def _fuse_activations(steps: list[_Step]) -> list[_Step]:
    """A ``leaky`` step of a convolution's output becomes a second store in that convolution's loop
    (the identity edges' ``act(s x) = s act(x)``: the plane is read once instead of twice)."""
    producer: dict[str, _Step] = {}
    kept = []
    for step in steps:
        if step.kind == "leaky" and step.reads[0] in producer:
            conv = producer[step.reads[0]]
            conv.data.setdefault("also", []).append((step.reads[0], step.writes[0]))
            conv.writes.append(step.writes[0])
            continue
        if step.kind == "conv":
            step.data.setdefault("outputs", len(step.writes))
            for name in step.writes:
                producer[name] = step
        kept.append(step)
    return kept


# ---------------------------------------------------------------------------------------------
# Compiling, caching and running.


def compiler() -> str | None:
    """The C compiler to use: ``$CC``, else ``cc``, ``gcc`` or ``clang`` on the ``PATH``; ``None`` when
    there is none or ``RUAS_NNI_NATIVE=0``."""
    if os.environ.get("RUAS_NNI_NATIVE", "1") == "0":
        return None
    explicit = os.environ.get("CC")
    if explicit:
        return shutil.which(explicit.split()[0])
    for candidate in ("cc", "gcc", "clang"):
        found = shutil.which(candidate)
        if found:
            return found
    return None


def _cpu_fingerprint() -> str:
    """What ``-march=native`` depends on: the machine and its CPU's model and feature flags."""
    text = platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if line.startswith(("model name", "flags", "Features", "CPU part")):
                    text += line
                if line.strip() == "":
                    break
    except OSError:
        text += platform.processor()
    return text


def library_folder() -> Path | None:
    """Where compiled libraries are kept: the cache folder, or ``None`` when the cache is off (then
    every session compiles into a temporary folder)."""
    return None if cache_disabled() else cache_dir()


def library_for(source: str, folder: Path | None) -> Path:
    """The compiled library of ``source``: from ``folder`` (``native/<key>.so``) when there and intact
    (a damaged entry is said and compiled again), else compiled (into ``folder`` when given and
    writable, else a temporary folder ``ruas-native-*`` that the caller removes once the library is
    loaded). Raises :class:`NativeUnavailable` when there is no compiler or the code does not compile."""
    cc = compiler()
    # Keyed by what the code computes and where it may run (not by which compiler built it).
    digest = hashlib.sha256("\0".join([source, " ".join(CFLAGS), _cpu_fingerprint()]).encode())
    key = digest.hexdigest()[:40]
    if folder is not None:
        cached = folder / "native" / f"{key}.so"
        if _intact(cached):
            return cached
        if cached.exists():
            log.warning("the cached native library %s is damaged; compiling it again", cached)
    if cc is None:
        raise NativeUnavailable("no C compiler found (set CC, or install gcc or clang)")
    scratch = Path(tempfile.mkdtemp(prefix="ruas-native-"))
    source_file, built = scratch / "ruas.c", scratch / "ruas.so"
    source_file.write_text(source)
    try:
        result = subprocess.run([cc, *CFLAGS, "-o", str(built), str(source_file), "-lm"], capture_output=True,
                                text=True, timeout=600)
    except (OSError, subprocess.TimeoutExpired) as exc:
        shutil.rmtree(scratch, ignore_errors=True)
        raise NativeUnavailable(f"{cc} failed to run ({exc})") from None
    if result.returncode != 0:
        shutil.rmtree(scratch, ignore_errors=True)
        raise NativeUnavailable(f"{cc} could not compile the generated code: {result.stderr.strip()[-500:]}")
    if folder is None:
        return built
    target = folder / "native" / f"{key}.so"
    data = built.read_bytes()
    try:
        with atomic_write(target) as handle:
            handle.write(data)
        with atomic_write(target.with_suffix(".sha256")) as handle:
            handle.write(hashlib.sha256(data).hexdigest().encode())
    except OSError as exc:
        log.warning("cannot write the native code cache %s (%s); continuing without it", target, exc.strerror or exc)
        return built
    shutil.rmtree(scratch, ignore_errors=True)
    return target


def _intact(path: Path) -> bool:
    """Whether a cached library is whole: its SHA-256 is the one written beside it. (A library cut
    short can pass the loader and then crash the process with SIGBUS, so it is checked first.)"""
    try:
        expected = path.with_suffix(".sha256").read_text().strip()
        return hashlib.sha256(path.read_bytes()).hexdigest() == expected
    except (OSError, UnicodeDecodeError):
        return False


def _load(path: Path) -> ctypes.CDLL:
    """Load a compiled network, checking that it is one."""
    try:
        library = ctypes.CDLL(str(path))
        for symbol in ("ruas_run", "ruas_planes", "ruas_radius", "ruas_rows"):
            getattr(library, symbol)
    except (OSError, AttributeError) as exc:
        raise NativeUnavailable(f"cannot load the native library {path} ({exc})") from None
    return library


class NativeSession:
    """The ``native`` engine (:class:`~ruas_nni.inference.engine.Engine`): the compiled network, run by
    :meth:`run_batch`, or as ONNX Runtime's ``InferenceSession`` is, ``run(["enhanced"], {"image": 1x3xHxW
    float32[, "gain": 1x1x1x1[, "strength": 1x1x1x1]]})``. Safe to call from several threads at once (each has its own working
    memory; ``ctypes`` releases the GIL)."""

    name = "native"

    def __init__(self, source: str, params: np.ndarray, folder: Path | None = None) -> None:
        path = library_for(source, folder)  # a damaged cache entry is caught (checksum) and rebuilt there
        self.params = np.ascontiguousarray(params, dtype=np.float32)
        library = _load(path)
        if path.parent.name.startswith("ruas-native-"):  # compiled outside the cache: loaded, not needed
            shutil.rmtree(path.parent, ignore_errors=True)
        self.path = path
        self.planes = int(library.ruas_planes())
        self.radius = int(library.ruas_radius())
        self.rows = int(library.ruas_rows())
        self._run = library.ruas_run
        self._run.restype = None
        self._run.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_long,
                              ctypes.c_long, ctypes.c_float, ctypes.c_float]
        self._library = library
        self._local = threading.local()

    def run_batch(self, image: np.ndarray, gain: np.ndarray | None = None,
                  strength: np.ndarray | None = None) -> np.ndarray:
        feeds = {"image": image}
        feeds.update({} if gain is None else {"gain": gain})
        feeds.update({} if strength is None else {"strength": strength})
        return self.run(None, feeds)[0]

    def tile_pixels(self, budget_mb: float, workers: int, max_channels: int) -> int:
        """The working rings depend on the width only, not on the channels: only the input and the
        output count per pixel."""
        return tile_pixels_for_budget(budget_mb, workers, 1, self.bytes_per_pixel())

    def close(self) -> None:
        self._local = threading.local()  # the threads' working memory goes with their last reference

    def bytes_per_pixel(self) -> int:
        """Memory of one call per image pixel, for sizing tiles: the input and output (the working
        rings depend on the width only: :meth:`work_floats`)."""
        return 4 * 3 * 3

    def work_floats(self, width: int) -> int:
        """Floats of working memory for one call on images ``width`` wide: ``ruas_rows()`` padded rows
        (the planes' rings), whatever the height."""
        padded_width = -(-width // (LANES * 4)) * LANES * 4
        return self.rows * (padded_width + 2 * self.radius) + LANES * 4

    def _work(self, floats: int) -> np.ndarray:
        work = getattr(self._local, "work", None)
        if work is None or work.size < floats:
            work = self._local.work = np.empty(floats, np.float32)
        return work

    def run(self, names: list[str] | None, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        image = np.ascontiguousarray(feeds["image"], dtype=np.float32)
        if image.ndim != 4 or image.shape[1] != 3:
            raise ValueError(f"expected a batch x 3 x H x W image, got {tuple(image.shape)}")
        batch, _, height, width = image.shape
        gains, strengths = (np.ones(batch, np.float32) if feeds.get(name) is None
                            else np.asarray(feeds[name], np.float32).reshape(-1) for name in ("gain", "strength"))
        output = np.empty_like(image)
        work = self._work(self.work_floats(width))
        for index in range(batch):
            self._run(self.params.ctypes.data, image[index].ctypes.data, output[index].ctypes.data, work.ctypes.data,
                      height, width, float(gains[index if gains.size > 1 else 0]),
                      float(strengths[index if strengths.size > 1 else 0]))
        return [output]
