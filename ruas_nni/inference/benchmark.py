"""Parameters, FLOPs and latency of a RUAS network: the engine behind ``ruas-nni benchmark``.

**FLOPs** are counted by PyTorch's own counter (:class:`torch.utils.flop_counter.FlopCounterMode`),
which counts the convolutions only and a multiply-add as **2** FLOPs. The paper's Table 2 (0.832 G
for IEM+NRM and 0.281 G for the IEM at 600x400) counts multiply-adds (MACs, = counter / 2) and, it
appears, one addition per output value for each convolution's bias, as common profilers (``thop``)
did: for the paper genotype MACs alone come out 5.8 % below the paper, MACs plus bias additions
within 1 %. Both are printed, each labelled.

**Latency** is measured in child processes, alternated, so that each path has its own memory
accounting and allocator state: the *eager* baseline is the network as trained, run the way the
authors' script runs it (``torch.no_grad``, PyTorch's default threads, glibc's default allocator);
*eager-channels-last* is the same network, weights and input in PyTorch's channels-last memory
format (otherwise as *eager*): the layout alone roughly halves the eager time on CPU, so the
optimised engine's speed-up over it is the honest one; the *optimised* path is
the enhancer of :func:`ruas_nni.inference.opener.open_enhancer` with ``engine`` ``auto``, as
``ruas-nni enhance`` uses it (folded network, one worker per core on exact tiles, tuned allocator).
Peak memory is the child's peak resident set size while it enhances images of that size (Linux
``VmHWM``, reset before each size), which includes PyTorch itself; on CUDA,
``torch.cuda.max_memory_allocated``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ..model.checkpoint import Checkpoint, load_checkpoint
from ..model.export import NetworkOptions, export
from ..model.genotype import PAPER_GENOTYPE
from .files import default_checkpoint_path, tune_allocator
from .opener import open_enhancer

__all__ = [
    "PAPER_TABLE2",
    "parse_size",
    "count_parameters",
    "count_flops",
    "resolve_model",
    "run_benchmark",
    "format_report",
]

PAPER_TABLE2 = {"whole": {"params": 0.003e6, "gflops": 0.832}, "iem": {"params": 0.001e6, "gflops": 0.281},
                "size": (600, 400)}
"""Paper Table 2 (RUAS_i+n and RUAS_i at 600x400): parameters and "GFLOPs"."""


LATENCY_KINDS = ("eager", "eager-channels-last", "optimised")
"""The paths whose latency is measured: the network as trained (NCHW, as the authors' script runs
it), the same network fed channels-last (the layout-tuned baseline), and ``ruas-nni enhance``'s
engine."""


def parse_size(text: str) -> tuple[int, int]:
    """``"600x400"`` -> ``(600, 400)`` = (width, height)."""
    try:
        width, height = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"expected WIDTHxHEIGHT such as 600x400, got {text!r}") from None
    if width < 1 or height < 1:
        raise ValueError(f"size must be positive, got {text!r}")
    return width, height


@dataclass
class ModelSource:
    """Which network is measured, and how to rebuild it in a child process."""

    description: str
    checkpoint_path: Path | None  # None: the paper genotype with random weights (seed 0)

    def load(self):
        if self.checkpoint_path is not None:
            return load_checkpoint(self.checkpoint_path)
        torch.manual_seed(0)
        network = export(PAPER_GENOTYPE)
        return Checkpoint.from_network(network, PAPER_GENOTYPE, NetworkOptions(), {"source": "random"})


def resolve_model(checkpoint: str | os.PathLike[str] | None) -> ModelSource:
    """``checkpoint``, else the shipped default model, else the paper genotype with random weights."""
    if checkpoint is not None:
        return ModelSource(f"checkpoint {checkpoint}", Path(checkpoint))
    default = default_checkpoint_path()
    if default is not None:
        return ModelSource(f"the shipped default model ({default.name})", default)
    return ModelSource("the paper genotype with random weights (no --checkpoint given and no default model "
                       "is shipped; parameters and FLOPs do not depend on the weights)", None)


def count_parameters(network: nn.Module) -> dict[str, int]:
    """Parameters of the whole network, its IEM and its NRM."""
    count = {"whole": sum(p.numel() for p in network.parameters()),
             "iem": sum(p.numel() for p in network.iem.parameters())}
    count["nrm"] = count["whole"] - count["iem"]
    return count


def _bias_additions(module: nn.Module, run) -> int:
    """Output values of every biased convolution during ``run()`` (one bias addition each)."""
    total = 0

    def hook(conv: nn.Module, _inputs: Any, output: torch.Tensor) -> None:
        nonlocal total
        if getattr(conv, "bias", None) is not None:
            total += output.numel()

    handles = [m.register_forward_hook(hook) for m in module.modules() if isinstance(m, nn.Conv2d)]
    try:
        run()
    finally:
        for handle in handles:
            handle.remove()
    return total


def count_flops(network: nn.Module, width: int, height: int) -> dict[str, dict[str, float]]:
    """FLOPs of the whole network and of the IEM alone on one ``width x height`` image."""
    image = torch.rand(1, 3, height, width)
    result: dict[str, dict[str, float]] = {}
    parts = {"whole": lambda: network(image), "iem": lambda: network.iem(image)}
    with torch.no_grad():
        for name, run in parts.items():
            with FlopCounterMode(display=False) as counter:
                run()
            flops = float(counter.get_total_flops())
            bias = float(_bias_additions(network, run))
            result[name] = {"flops": flops, "macs": flops / 2, "macs_plus_bias": flops / 2 + bias}
    return result


# ---------------------------------------------------------------------------------------------
# Latency, in child processes.


def _rss_mb(field: str) -> float | None:
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def _child(kind: str, source: ModelSource, sizes: Sequence[tuple[int, int]], runs: int, stage: str) -> dict:
    """Time one path in this (child) process; returns per-size medians and peaks."""
    checkpoint = source.load()
    cuda = kind.endswith("cuda")
    device = torch.device("cuda" if cuda else "cpu")
    if kind.startswith("eager"):
        network = checkpoint.build().to(device)
        layout = torch.channels_last if kind.startswith("eager-channels-last") else torch.contiguous_format
        network = network.to(memory_format=layout)

        def enhance(image: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                batch = image.unsqueeze(0).to(device).contiguous(memory_format=layout)
                result = network.enhance(batch)
                output = result.final if stage == "final" else result.iem
                return output[0].clamp(0, 1).cpu()
    else:
        if not cuda:
            tune_allocator()
        enhance = open_enhancer(checkpoint, "auto", stage=stage, device=device, half=cuda)
    baseline = _rss_mb("VmRSS")
    measured = {}
    generator = torch.Generator().manual_seed(0)
    for width, height in sizes:
        image = torch.rand(3, height, width, generator=generator) * 0.3
        enhance(image)  # warm-up: allocator growth, oneDNN kernel choice, CUDA graph capture
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        reset = _reset_peak_rss()
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            enhance(image)
            if cuda:
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
        entry: dict[str, Any] = {"ms": [t * 1000 for t in times]}
        if cuda:
            entry["peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
            entry["peak_kind"] = "CUDA allocated"
        else:
            entry["peak_mb"] = _rss_mb("VmHWM") if reset else None
            entry["peak_kind"] = "resident"
        measured[f"{width}x{height}"] = entry
    engine = getattr(enhance, "engine", "torch eager")
    return {"kind": kind, "engine": engine, "baseline_rss_mb": baseline, "threads": torch.get_num_threads(),
            "sizes": measured}


def _run_child(kind: str, source: ModelSource, sizes: Sequence[tuple[int, int]], runs: int, stage: str) -> dict:
    command = [sys.executable, "-m", "ruas_nni.inference.benchmark", "--child", kind, "--runs", str(runs), "--stage", stage,
               *[f"--size={w}x{h}" for w, h in sizes]]
    if source.checkpoint_path is not None:
        command += ["--checkpoint", str(source.checkpoint_path)]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        tail = result.stderr.strip().splitlines()[-1:] or ["no output"]
        raise RuntimeError(f"latency measurement ({kind}) failed: {tail[0]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def run_benchmark(checkpoint: str | os.PathLike[str] | None = None, sizes: Sequence[tuple[int, int]] = ((600, 400),),
                  latency_sizes: Sequence[tuple[int, int]] | None = None, rounds: int = 2, runs: int = 3,
                  stage: str = "final", latency: bool = True) -> dict[str, Any]:
    """Everything ``ruas-nni benchmark`` reports, as a JSON-compatible dict."""
    source = resolve_model(checkpoint)
    network = source.load().build()
    report: dict[str, Any] = {
        "model": source.description,
        "parameters": count_parameters(network),
        "flops": {f"{w}x{h}": count_flops(network, w, h) for w, h in sizes},
        "paper_table2": PAPER_TABLE2,
        "flop_convention": "torch.utils.flop_counter counts convolutions only, a multiply-add as 2 FLOPs; "
                           "MACs = FLOPs / 2; 'MACs + bias' adds one addition per biased convolution output",
        "stage": stage,
    }
    if latency:
        latency_sizes = list(latency_sizes or [(600, 400), (1920, 1080)])
        kinds = list(LATENCY_KINDS)
        if torch.cuda.is_available():
            kinds += [f"{kind}-cuda" for kind in LATENCY_KINDS]
        samples: dict[str, dict[str, Any]] = {}
        for _ in range(rounds):
            for kind in kinds:  # alternated, so that a busy machine hurts every path alike
                child = _run_child(kind, source, latency_sizes, runs, stage)
                entry = samples.setdefault(kind, {"threads": child["threads"], "baseline_rss_mb": child["baseline_rss_mb"],
                                                  "engine": child["engine"], "sizes": {}})
                for size, values in child["sizes"].items():
                    merged = entry["sizes"].setdefault(size, {"ms": [], "peak_mb": [], "peak_kind": values["peak_kind"]})
                    merged["ms"].extend(values["ms"])
                    if values["peak_mb"] is not None:
                        merged["peak_mb"].append(values["peak_mb"])
        for entry in samples.values():
            for values in entry["sizes"].values():
                values["median_ms"] = statistics.median(values["ms"])
                values["peak_mb"] = max(values["peak_mb"]) if values["peak_mb"] else None
        report["latency"] = samples
        report["cpu_cores"] = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        report["device"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    return report


def format_report(report: dict[str, Any]) -> str:
    """Plain-text tables."""
    lines = [f"model: {report['model']}", ""]
    params = report["parameters"]
    lines.append(f"parameters: whole {params['whole']:,} ({params['whole'] / 1e6:.3f} M), "
                 f"IEM {params['iem']:,} ({params['iem'] / 1e6:.3f} M), NRM {params['nrm']:,}")
    lines.append("")
    lines.append("FLOPs (torch.utils.flop_counter: convolutions only, 1 multiply-add = 2 FLOPs)")
    header = f"{'size':>10} {'part':>6} {'GFLOPs':>8} {'GMACs':>8} {'GMACs+bias':>11} {'paper':>7}"
    lines.append(header)
    paper_size = "{}x{}".format(*PAPER_TABLE2["size"])
    for size, parts in report["flops"].items():
        for part, values in parts.items():
            paper = f"{PAPER_TABLE2[part]['gflops']:.3f}" if size == paper_size else "-"
            lines.append(f"{size:>10} {part:>6} {values['flops'] / 1e9:8.3f} {values['macs'] / 1e9:8.3f} "
                         f"{values['macs_plus_bias'] / 1e9:11.3f} {paper:>7}")
    lines.append("The paper's 'GFLOPs' (Table 2) are multiply-adds: compare them with GMACs (bias additions")
    lines.append("included, as the paper's profiler appears to count them: GMACs+bias), not with GFLOPs.")
    if "latency" in report:
        lines.append("")
        lines.append(f"latency on {report['device']} ({report['cpu_cores']} CPU cores), median ms per image; "
                     "peak = the process's peak memory")
        lines.append(f"{'path':>24} {'size':>10} {'ms/image':>9} {'images/s':>9} {'peak MB':>8} {'vs eager':>9} "
                     f"{'vs eager-cl':>12}")
        latency = report["latency"]

        def ratio(base_kind: str, size: str, ms: float) -> str:
            base = latency.get(base_kind, {}).get("sizes", {}).get(size, {}).get("median_ms")
            return f"{base / ms:.2f}x" if base else "-"

        for kind, entry in latency.items():
            suffix = "-cuda" if kind.endswith("cuda") else ""
            for size, values in entry["sizes"].items():
                ms = values["median_ms"]
                peak = f"{values['peak_mb']:.0f}" if values.get("peak_mb") is not None else "-"
                lines.append(f"{kind:>24} {size:>10} {ms:9.1f} {1000 / ms:9.2f} {peak:>8} "
                             f"{ratio('eager' + suffix, size, ms):>9} "
                             f"{ratio('eager-channels-last' + suffix, size, ms):>12}")
        lines.append("eager = the network as trained, torch.no_grad, PyTorch's default threads and allocator "
                     "(as the authors' script);")
        lines.append("eager-channels-last (eager-cl) = the same network, weights and input in channels-last "
                     "memory format: the layout-tuned baseline;")
        engines = sorted({entry.get("engine", "?") for kind, entry in latency.items() if kind.startswith("optimised")})
        lines.append(f"optimised = ruas-nni enhance's engine ({', '.join(engines)}: folded network, one worker per "
                     "core on exact tiles, tuned allocator; half precision and CUDA graphs on GPU).")
    return "\n".join(lines)


def _child_main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--child", required=True)
    parser.add_argument("--checkpoint")
    parser.add_argument("--size", action="append", type=parse_size, required=True)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--stage", default="final")
    args = parser.parse_args(argv)
    source = ModelSource("child", Path(args.checkpoint) if args.checkpoint else None)
    print(json.dumps(_child(args.child, source, args.size, args.runs, args.stage)))
    return 0


if __name__ == "__main__":
    sys.exit(_child_main(sys.argv[1:]))
