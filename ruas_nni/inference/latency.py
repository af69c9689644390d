"""Latency as a cost: a lookup table of the optimised engine's milliseconds per operation and edge.

As ProxylessNAS and FBNet do, the latency of a genotype is predicted as a sum: the measured time of
the network with every edge a ``skip_connect`` (``base``: stems, fuses, warm starts, the exposure
policy, tiling and threads), plus, for each edge, the measured extra time of its operation on that
edge alone (``edges[module][edge][op]``; 0 for ``skip_connect``). Every number is the fastest of a
few timed images on :func:`ruas_nni.inference.opener.open_enhancer`'s engine (``auto``: the native engine where it
compiles, as ``ruas-nni enhance`` and ``ruas-nni benchmark``'s *optimised* path run it) on one
image of ``size``, with random weights: the time does not depend on them.

The table belongs to a machine and a network shape (:class:`~ruas_nni.model.export.NetworkOptions`:
stages, cells, widths, exposure policy): :func:`table_for` keeps it in the cache folder
(``latency/``, keyed by both) and measures it on a miss (``ruas-nni latency``; about 85 networks).
:func:`check_table` measures whole networks and reports the rank correlation of prediction and
measurement. The search uses the table as a differentiable cost (the expected milliseconds under the
architecture's probabilities: ``strategies.cooperative.TableProfiler`` over :meth:`LatencyTable.by_label`,
in :func:`ruas_nni.search.strategies.budget_penalty`).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import random
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from ..base.atomic import atomic_write
from ..base.rank_correlation import kendall_tau, spearman_rho
from ..model.export import NetworkOptions, export
from ..model.genotype import MODULES, Genotype
from ..model.network import EDGE_NAMES
from ..model.ops import OPERATION_NAMES
from .cache_folder import cache_dir, cache_disabled

__all__ = ["LatencyTable", "time_alternately", "measure_ms", "build_table", "latency_table_path", "table_for",
           "compare_with_measurement", "check_table"]

FORMAT = 1
SKIP = "skip_connect"


@dataclass
class LatencyTable:
    """Milliseconds per image of ``size`` (width, height): ``base`` plus one entry per module, edge and
    operation (the extra time of that operation on that edge alone)."""

    size: tuple[int, int]
    base: float
    edges: dict[str, dict[str, dict[str, float]]]
    options: dict[str, Any]
    machine: dict[str, Any]

    def predict(self, genotype: Genotype | Mapping[str, Any]) -> float:
        """Predicted ms of ``genotype`` (an IEM-only genotype pays no NRM entries)."""
        genotype = Genotype.from_any(genotype)
        total = self.base
        for module in MODULES:
            ops = getattr(genotype, module)
            if ops is None or module not in self.edges:
                continue
            for edge, op in zip(EDGE_NAMES, ops):
                total += self.edges[module][edge].get(op, 0.0)
        return total

    def by_label(self) -> dict[str, dict[str, float]]:
        """The edge costs keyed by the search space's choice labels (``iem/e1`` .. ``nrm/e7``, as in
        :meth:`~ruas_nni.model.genotype.Genotype.to_sample`)."""
        return {f"{module}/{edge}": costs for module, edges in self.edges.items() for edge, costs in edges.items()}

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["size"] = list(self.size)
        data["format"] = FORMAT
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LatencyTable:
        if data.get("format") != FORMAT:
            raise ValueError(f"latency table format {data.get('format')!r}, expected {FORMAT}")
        return cls(tuple(data["size"]), float(data["base"]), data["edges"], dict(data["options"]), dict(data["machine"]))


def machine_description() -> dict[str, Any]:
    """What the milliseconds depend on besides the network: the CPU, its cores, the libraries."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {"cpu": cpu, "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
            "torch": torch.__version__, "python": platform.python_version()}


def _checkpoint(genotype: Genotype, options: NetworkOptions):
    from ..model.checkpoint import Checkpoint

    return Checkpoint.from_network(export(genotype, options), genotype, options)


def time_alternately(checkpoints: Sequence[Any], size: tuple[int, int] = (600, 400), runs: int = 5) -> list[list[float]]:
    """Ms per image of ``size`` of each checkpoint (a file or a loaded checkpoint) on the optimised
    engine (:func:`~ruas_nni.inference.opener.open_enhancer`, ``auto``), ``runs`` timed images each.

    The enhancers are opened together and timed alternately on one random image, so that a busy
    machine slows them alike; each one is warmed up first (the native engine compiles on its first
    image)."""
    import torch

    from .files import tune_allocator
    from .opener import open_enhancer

    tune_allocator()
    width, height = size
    image = torch.rand(3, height, width, generator=torch.Generator().manual_seed(0)) * 0.3
    times: list[list[float]] = [[] for _ in checkpoints]
    enhancers = []
    try:
        for checkpoint in checkpoints:
            enhancer = open_enhancer(checkpoint, "auto")
            enhancers.append(enhancer)
            enhancer(image)
        for _ in range(runs):
            for index, enhancer in enumerate(enhancers):
                start = time.perf_counter()
                enhancer(image)
                times[index].append((time.perf_counter() - start) * 1000.0)
    finally:
        for enhancer in enhancers:
            enhancer.close()
    return times


def measure_ms(genotypes: Sequence[Genotype], options: NetworkOptions, size: tuple[int, int] = (600, 400),
               runs: int = 5) -> list[float]:
    """Ms per image of ``size`` of each genotype (with ``options``, random weights) on the optimised
    engine: the fastest of ``runs`` images timed alternately (:func:`time_alternately`). The fastest
    run, not the median: on a shared machine other work only ever adds time, and a median of a few
    runs moved by 10-20 ms between neighbouring measurements of the same network (a table measured
    with medians beside another job had negative costs for convolutions)."""
    return [min(t) for t in time_alternately([_checkpoint(g, options) for g in genotypes], size, runs)]


def _single_edge(module: str, edge: str, op: str, with_nrm: bool) -> Genotype:
    iem = [SKIP] * len(EDGE_NAMES)
    nrm = [SKIP] * len(EDGE_NAMES) if with_nrm else None
    target = iem if module == "iem" else nrm
    target[EDGE_NAMES.index(edge)] = op
    return Genotype(tuple(iem), tuple(nrm) if nrm is not None else None)


def build_table(options: NetworkOptions, size: tuple[int, int] = (600, 400), *, with_nrm: bool = True,
                operations: Sequence[str] = OPERATION_NAMES, runs: int = 5,
                progress: Callable[[int, int], None] | None = None) -> LatencyTable:
    """Measure the table of ``options`` at ``size``: the all-skip network, then each operation on each
    edge alone, each timed beside the all-skip network (its extra time is the difference of the two
    times, so that a machine getting busier shifts both)."""
    modules = ("iem", "nrm") if with_nrm else ("iem",)
    base_genotype = _single_edge("iem", EDGE_NAMES[0], SKIP, with_nrm)
    cases = [(m, e, op) for m in modules for e in EDGE_NAMES for op in operations if op != SKIP]
    bases: list[float] = []
    edges: dict[str, dict[str, dict[str, float]]] = {m: {e: {SKIP: 0.0} for e in EDGE_NAMES} for m in modules}
    for index, (module, edge, op) in enumerate(cases):
        base_ms, op_ms = measure_ms([base_genotype, _single_edge(module, edge, op, with_nrm)], options, size, runs)
        bases.append(base_ms)
        edges[module][edge][op] = op_ms - base_ms
        if progress is not None:
            progress(index + 1, len(cases))
    base = statistics.median(bases)
    return LatencyTable(tuple(size), base, edges, _options_key(options, with_nrm), machine_description())


def _options_key(options: NetworkOptions, with_nrm: bool) -> dict[str, Any]:
    data = options.to_dict()
    data["with_nrm"] = with_nrm
    return data


def _cache_path(options: NetworkOptions, size: tuple[int, int], with_nrm: bool) -> Path:
    key = json.dumps({"format": FORMAT, "options": _options_key(options, with_nrm), "size": list(size),
                      "machine": machine_description()}, sort_keys=True)
    return cache_dir() / "latency" / f"{hashlib.sha256(key.encode()).hexdigest()[:20]}.json"


def latency_table_path(options: NetworkOptions, size: tuple[int, int] = (600, 400), with_nrm: bool = True) -> Path | None:
    """Where :func:`table_for` keeps the table of ``options`` at ``size`` on this machine (``None``
    with the cache turned off)."""
    return None if cache_disabled() else _cache_path(options, size, with_nrm)


def table_for(options: NetworkOptions, size: tuple[int, int] = (600, 400), *, with_nrm: bool = True,
              refresh: bool = False, runs: int = 5,
              progress: Callable[[int, int], None] | None = None) -> tuple[LatencyTable, Path | None]:
    """The cached table of ``options`` at ``size`` on this machine (measured and written on a miss, or
    with ``refresh``); returns it and its file (``None`` with the cache turned off)."""
    path = latency_table_path(options, size, with_nrm)
    if path is not None and path.is_file() and not refresh:
        try:
            return LatencyTable.from_dict(json.loads(path.read_text())), path
        except (ValueError, KeyError, TypeError, json.JSONDecodeError):
            pass  # a damaged entry: measure again
    table = build_table(options, size, with_nrm=with_nrm, runs=runs, progress=progress)
    if path is not None:
        with atomic_write(path) as handle:
            handle.write(json.dumps(table.to_dict(), indent=1).encode())
    return table, path


def random_genotypes(count: int, seed: int = 0, with_nrm: bool = True) -> list[Genotype]:
    """``count`` distinct genotypes drawn uniformly (a fixed ``seed``)."""
    rng = random.Random(seed)
    seen: dict[tuple, Genotype] = {}
    while len(seen) < count:
        iem = tuple(rng.choice(OPERATION_NAMES) for _ in EDGE_NAMES)
        nrm = tuple(rng.choice(OPERATION_NAMES) for _ in EDGE_NAMES) if with_nrm else None
        seen.setdefault((iem, nrm), Genotype(iem, nrm))
    return list(seen.values())


def compare_with_measurement(table: LatencyTable, genotypes: Sequence[Genotype], options: NetworkOptions,
                             runs: int = 5, progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Predicted against measured ms of ``genotypes`` (measured two at a time, alternated): both
    lists, the rank correlations (Kendall's tau-b and Spearman's rho) and the mean absolute relative
    error."""
    measured: list[float] = []
    for index in range(0, len(genotypes), 2):
        measured += measure_ms(genotypes[index:index + 2], options, table.size, runs)
        if progress is not None:
            progress(len(measured), len(genotypes))
    predicted = [table.predict(g) for g in genotypes]
    return {"measured": measured, "predicted": predicted,
            "kendall_tau": kendall_tau(predicted, measured), "spearman_rho": spearman_rho(predicted, measured),
            "mean_abs_relative_error": statistics.fmean(abs(p - m) / m for p, m in zip(predicted, measured))}


def check_table(table: LatencyTable, options: NetworkOptions, count: int = 30, seed: int = 0, runs: int = 5,
                progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """:func:`compare_with_measurement` over ``count`` random whole networks, with the genotypes."""
    genotypes = random_genotypes(count, seed, with_nrm=bool(table.options.get("with_nrm", True)))
    result = compare_with_measurement(table, genotypes, options, runs, progress)
    measured, predicted = result.pop("measured"), result.pop("predicted")
    return {
        "count": len(genotypes), "seed": seed, "size": list(table.size), **result,
        "genotypes": [{"iem": list(g.iem), "nrm": list(g.nrm) if g.nrm else None, "predicted_ms": p, "measured_ms": m}
                      for g, p, m in zip(genotypes, predicted, measured)],
    }
