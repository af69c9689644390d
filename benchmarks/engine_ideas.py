"""Measure engine ideas for ``docs/speed.md``: one process, single thread, one 600x400 image.

Each variant runs the whole network on the image (no tiling unless said) and is timed alternated
with the others, ``--rounds`` rounds of ``--runs`` calls; the median ms is printed with the load
average. Variants: the folded network in PyTorch (nchw, nhwc), onnxruntime on the folded graph
(default and with its NHWC/extended optimisations), the native engine (generated C, compiled here),
OpenVINO's CPU plugin on the same graph (when
``openvino`` is importable: it is not a dependency), and the folded network on cache-sized tiles.

Usage: ``OMP_NUM_THREADS=1 python benchmarks/engine_ideas.py [--checkpoint lol.pt] [--only NAME ...]``
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("RUAS_SHARED", ROOT.parent / "shared"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=str(SHARED / "reference" / "ruas_official" / "lol.pt"))
    parser.add_argument("--size", default="600x400")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--only", nargs="*", help="variant names to run")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    from ruas_nni.inference.enhance import Enhancer, load_model, tune_allocator
    from ruas_nni.inference.fold import FoldedRUAS

    tune_allocator()
    checkpoint, _ = load_model(args.checkpoint)
    width, height = (int(v) for v in args.size.split("x"))
    image = torch.rand(1, 3, height, width, generator=torch.Generator().manual_seed(0)) * 0.3
    variants = {}
    reference = None
    for layout in ("nchw", "nhwc", "iem-nhwc"):
        model = FoldedRUAS(checkpoint.build(), "final", layout=layout).eval()
        variants[f"torch folded {layout}"] = (lambda m: lambda x: m(x))(model)
    network = checkpoint.build().eval()
    variants["torch as trained, channels-last"] = lambda x: network(x.contiguous(memory_format=torch.channels_last))
    for tile in (96, 160):
        enhancer = Enhancer(checkpoint, workers=1, max_tile_pixels=(tile + 34) ** 2)
        variants[f"torch folded nchw, tiles {tile}+halo (clipped)"] = (lambda e: lambda x: e(x[0]).unsqueeze(0))(enhancer)
    try:
        import onnxruntime as ort

        from ruas_nni.inference.onnx_export import export_onnx

        path = Path(tempfile.mkdtemp()) / "folded.onnx"
        export_onnx(checkpoint, path)
        for name, level in (("onnxruntime folded, all opt", ort.GraphOptimizationLevel.ORT_ENABLE_ALL),
                            ("onnxruntime folded, extended opt", ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED),
                            ("onnxruntime folded, basic opt", ort.GraphOptimizationLevel.ORT_ENABLE_BASIC)):
            options = ort.SessionOptions()
            options.intra_op_num_threads = 1
            options.inter_op_num_threads = 1
            options.graph_optimization_level = level
            session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            variants[name] = (lambda s: lambda x: torch.from_numpy(s.run(None, {"image": x.numpy()})[0]))(session)
    except ImportError:
        print("onnxruntime not installed", file=sys.stderr)
    from ruas_nni.inference.native import NativeSession, NativeUnavailable, native_source

    try:
        folded = FoldedRUAS(checkpoint.build(), "final").eval()
        session = NativeSession(*native_source(folded), Path(tempfile.mkdtemp()))
        variants["native (generated C)"] = (lambda s: lambda x: torch.from_numpy(s.run(None, {"image": x.numpy()})[0]))(session)
    except NativeUnavailable as exc:
        print(f"native engine not available: {exc}", file=sys.stderr)
    try:
        import openvino

        from ruas_nni.inference.onnx_export import export_onnx

        path = Path(tempfile.mkdtemp()) / "folded_ov.onnx"
        export_onnx(checkpoint, path)
        compiled = openvino.Core().compile_model(str(path), "CPU", {
            "INFERENCE_NUM_THREADS": 1, "NUM_STREAMS": 1, "PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"})
        request = compiled.create_infer_request()
        variants[f"openvino {openvino.__version__.split('-')[0]} folded, f32"] = (
            lambda r, o: lambda x: torch.from_numpy(r.infer({0: x.numpy()})[o].copy()))(request, compiled.output(0))
    except ImportError:
        print("openvino not installed (pip install openvino to measure it)", file=sys.stderr)
    if args.only:
        variants = {k: v for k, v in variants.items() if any(o in k for o in args.only)}
    times: dict[str, list[float]] = {name: [] for name in variants}
    cpu: dict[str, list[float]] = {name: [] for name in variants}
    with torch.no_grad():  # not inference_mode: the tiled variants write into their output from worker threads
        for name, run in variants.items():
            out = run(image)
            if reference is None:
                reference = out
            print(f"{name:<40} max |diff| vs first {float((out - reference).abs().max()):.2e}", flush=True)
        for _ in range(args.rounds):
            for name, run in variants.items():
                start, start_cpu = time.perf_counter(), time.process_time()
                for _ in range(args.runs):
                    run(image)
                times[name].append((time.perf_counter() - start) / args.runs * 1000)
                cpu[name].append((time.process_time() - start_cpu) / args.runs * 1000)
    print(f"\n{args.size}, one thread, median of {args.rounds} rounds x {args.runs} runs, alternated; "
          "CPU = process CPU time per call (less disturbed by other jobs than wall time)")
    for name, values in times.items():
        print(f"{name:<44} wall {statistics.median(values):7.1f} ms  CPU {statistics.median(cpu[name]):7.1f} ms"
              f"   (wall {', '.join(f'{v:.0f}' for v in values)})")
    print("load average: " + ", ".join(f"{x:.2f}" for x in os.getloadavg()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
