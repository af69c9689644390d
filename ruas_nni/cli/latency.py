"""``ruas-nni latency``: build (or show) this machine's latency table and check its predictions."""

from __future__ import annotations

import argparse

from ruas_nni.cli._arguments import whole_number

ORDER = 62
HELP = "this machine's milliseconds per operation and edge (the search's latency cost), and how well they predict"

DESCRIPTION = """\
Measure the lookup table that predicts a genotype's latency (ms per image on `ruas-nni enhance`'s
optimised engine, as `ruas-nni benchmark` reports it): the network with every edge a skip connection,
plus the extra time of each operation on each edge alone (about 85 networks: 8 minutes on 2 cores). The
table depends on the network's shape (--iem-stages, --nrm-cells, --nrm-channels, the exposure
policy of --exposure) and on this machine; it is cached (folder `latency/` of the cache: see
`ruas-nni enhance --help`) and measured again only with --refresh. `ruas-nni search` with a
latency_budget reads the same table.

--check N measures N random whole networks and prints the rank correlation of predicted and
measured milliseconds (Kendall's tau-b and Spearman's rho); 30 networks took 3.5 minutes.
Every time is the fastest of --runs images: on a shared machine other work only adds time.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("latency", help=HELP, description=DESCRIPTION,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="600x400", metavar="WxH", help="image size (default 600x400)")
    parser.add_argument("--iem-stages", type=whole_number(1), default=3, help="IEM stages (default 3)")
    parser.add_argument("--nrm-cells", type=whole_number(1), default=3, help="NRM cells (default 3)")
    parser.add_argument("--nrm-channels", type=whole_number(1), default=6, help="NRM width (default 6)")
    parser.add_argument("--exposure", type=float, default=0.45,
                        help="exposure normalisation E with the search's exposure policy (shoulder), as the default "
                             "search (0: off)")
    parser.add_argument("--runs", type=whole_number(1), default=5,
                        help="timed images per network; the fastest counts (default 5)")
    parser.add_argument("--refresh", action="store_true", help="measure again even when the table is cached")
    parser.add_argument("--check", type=whole_number(0), default=0, metavar="N",
                        help="also measure N random whole networks against the prediction (0: no check)")
    parser.add_argument("--json", metavar="OUT", help="also write the table (and the check) as JSON")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from tqdm import tqdm

    from ruas_nni.base.atomic import atomic_write
    from ruas_nni.base.errors import UsageError
    from ruas_nni.base.quiet import show_progress
    from ruas_nni.inference.benchmark import parse_size
    from ruas_nni.inference.latency import check_table, table_for
    from ruas_nni.model.export import NetworkOptions
    from ruas_nni.search.config import SearchConfig

    try:
        size = parse_size(args.size)
    except ValueError as exc:
        raise UsageError(f"--size: {exc}") from None
    if not 0 <= args.exposure <= 1:
        raise UsageError(f"--exposure must be in [0, 1] (0: off), got {args.exposure}")
    exposure = args.exposure or None
    # the shape and exposure policy of a search with these settings: the table `ruas-nni search` reads
    search = SearchConfig(iem_stages=args.iem_stages, nrm_cells=args.nrm_cells, nrm_channels=args.nrm_channels,
                          exposure=exposure)
    options = NetworkOptions.from_dict(search.network_options())
    bar = tqdm(desc="latency table", unit="net", disable=not show_progress(args.quiet))

    def progress(done: int, total: int) -> None:
        bar.total = total
        bar.n = done
        bar.refresh()

    table, path = table_for(options, size, refresh=args.refresh, runs=args.runs, progress=progress)
    bar.close()
    print(f"latency table, ms per {size[0]}x{size[1]} image on {table.machine['cpu']} "
          f"({table.machine['cores']} cores): all-skip network {table.base:.2f} ms")
    for module, edges in table.edges.items():
        ops = [op for op in next(iter(edges.values()))]
        print(f"  {module:4s} " + " ".join(f"{op:>14s}" for op in ops))
        for edge, costs in edges.items():
            print(f"  {edge:4s} " + " ".join(f"{costs[op]:14.2f}" for op in ops))
    report = {"table": table.to_dict(), "file": str(path) if path else None}
    if args.check:
        bar = tqdm(desc="check", unit="net", disable=not show_progress(args.quiet))
        result = check_table(table, options, args.check, runs=args.runs, progress=progress)
        bar.close()
        report["check"] = result
        print(f"check over {result['count']} random networks: Kendall tau {result['kendall_tau']:.3f}, "
              f"Spearman rho {result['spearman_rho']:.3f}, mean |error| {100 * result['mean_abs_relative_error']:.1f} %")
    if args.json:
        with atomic_write(Path(args.json)) as handle:
            handle.write((json.dumps(report, indent=2) + "\n").encode())
        print(f"wrote {args.json}")
    elif path is not None:
        print(f"table in {path}")
    return 0
