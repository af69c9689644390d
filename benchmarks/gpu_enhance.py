"""Images per second of the enhance engine on one CUDA GPU (called by ``benchmarks/gpu.sh``).

For each size (default 600x400 and 3840x2160) and each mode -- float32, float32 with CUDA graphs,
float16, float16 with CUDA graphs -- it times :class:`ruas_nni.inference.enhance.Enhancer` as
``ruas-nni enhance --device cuda [--half] [--no-cuda-graphs]`` runs it (input from the host,
clipped output back to the host, one image at a time), and the folded network alone on an image
already on the GPU (batch 1 and batch 8: the engine's ceiling). Medians of ``--repeats`` timed
blocks, each ``synchronize``d; the first calls (cuDNN autotuning, graph capture) are warm-up.
One JSON line per measurement on stdout, then a table on stderr.

Usage: ``python benchmarks/gpu_enhance.py --checkpoint lol.pt [--size 600x400 ...] [--seconds 6]``
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

MODES = {"fp32": (False, False), "fp32+graphs": (False, True), "fp16": (True, False), "fp16+graphs": (True, True)}


def _rate(function, count: int, repeats: int, synchronize) -> float:
    """Calls per second: median over ``repeats`` blocks of ``count`` calls."""
    rates = []
    for _ in range(repeats):
        synchronize()
        start = time.perf_counter()
        for _ in range(count):
            function()
        synchronize()
        rates.append(count / (time.perf_counter() - start))
    return statistics.median(rates)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=None, help="model (default: the shipped one, else random weights)")
    parser.add_argument("--size", action="append", help="WxH, repeatable (default 600x400 and 3840x2160)")
    parser.add_argument("--seconds", type=float, default=4.0, help="rough time per size and mode (default 4)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    import torch

    from ruas_nni.inference.benchmark import parse_size, resolve_model
    from ruas_nni.inference.enhance import Enhancer

    if not torch.cuda.is_available():
        print("gpu_enhance.py: no CUDA GPU visible to PyTorch; nothing measured", file=sys.stderr)
        return 3
    sizes = [parse_size(s) for s in args.size] if args.size else [(600, 400), (3840, 2160)]
    checkpoint = resolve_model(args.checkpoint).load()
    device = torch.device("cuda")
    torch.backends.cudnn.benchmark = True
    rows = []
    for width, height in sizes:
        host = torch.rand(3, height, width) * 0.3
        for mode, (half, graphs) in MODES.items():
            with Enhancer(checkpoint, device=device, half=half, cuda_graphs=graphs) as enhancer:
                def enhance(enhancer=enhancer, host=host) -> None:
                    enhancer(host)

                start = time.perf_counter()
                for _ in range(3):
                    enhance()
                torch.cuda.synchronize()
                per_call = max((time.perf_counter() - start) / 3, 1e-4)
                count = max(1, int(args.seconds / args.repeats / per_call))
                enhancer_rate = _rate(enhance, count, args.repeats, torch.cuda.synchronize)
                network = enhancer._forward
                for batch in (1, 8):
                    if batch > 1 and height * width * batch > 40_000_000:
                        continue
                    on_gpu = torch.rand(batch, 3, height, width, device=device, dtype=enhancer.dtype) * 0.3
                    with torch.inference_mode():
                        def run_network(network=network, on_gpu=on_gpu) -> None:
                            network(on_gpu)

                        for _ in range(3):
                            run_network()
                        rate = _rate(run_network, max(1, count // batch), args.repeats, torch.cuda.synchronize) * batch
                    row = {"size": f"{width}x{height}", "mode": mode, "batch": batch,
                           "enhancer_images_per_s": round(enhancer_rate, 1) if batch == 1 else None,
                           "network_images_per_s": round(rate, 1),
                           "peak_gpu_mb": round(torch.cuda.max_memory_allocated() / 2**20)}
                    rows.append(row)
                    print(json.dumps(row), flush=True)
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
    print(f"\nenhance on {torch.cuda.get_device_name(0)}: images/s (median of {args.repeats} blocks)", file=sys.stderr)
    print(f"{'size':>10} {'mode':>12} {'batch':>5} {'Enhancer':>9} {'network':>9} {'peak MB':>8}", file=sys.stderr)
    for row in rows:
        enhancer_rate = row["enhancer_images_per_s"]
        print(f"{row['size']:>10} {row['mode']:>12} {row['batch']:>5} "
              f"{enhancer_rate if enhancer_rate is not None else '-':>9} {row['network_images_per_s']:>9} "
              f"{row['peak_gpu_mb']:>8}", file=sys.stderr)
    print("Enhancer = host image in, clipped float32 image back on the host, as `ruas-nni enhance --device cuda`; "
          "network = the folded network on an image already on the GPU", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
