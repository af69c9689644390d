"""Where a trained model's IEM loses quality on paired photos: clipping, exposure and colour.

For each checkpoint, over the pairs of ``--data`` (default ``../shared/data/lol_val``), prints the mean of

* ``psnr``: RGB PSNR of the 8-bit output, as ``ruas-nni evaluate``;
* ``matched``: the same after scaling the output to its reference's mean (exposure removed), as
  ``ruas-nni evaluate``'s exposure-matched PSNR (:func:`ruas_nni.inference.metrics.exposure_matched`);
* ``channel-matched``: after scaling each colour channel to the reference's (exposure and colour cast removed);
* ``clipped``: the share of pixel values where the last illumination ``t_K`` lies below ``y``, i.e.
  where ``u_K = clamp(y / t_K, 0, 1)`` clips (the Retinex bound ``t >= y`` broken, docs/objectives.md);
* ``t colour``: the mean over pixels of the standard deviation of ``t_K`` across R, G, B (0 = a grey illumination);
* ``t / y``: the median ratio of illumination to input (how far the IEM brightens before the gain).

Usage::

    python scripts/iem_diagnostics.py MODEL.pt [MODEL.pt ...] [--data DIR] [--limit N]

One torch thread. Nothing is written.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ruas_nni.base.images import read_image  # noqa: E402
from ruas_nni.inference.evaluation import find_pairs  # noqa: E402
from ruas_nni.inference.metrics import exposure_matched, psnr  # noqa: E402
from ruas_nni.model.checkpoint import load_checkpoint  # noqa: E402

SHARED = ROOT.parent / "shared"
COLUMNS = ("psnr", "matched", "channel-matched", "clipped", "t colour", "t / y")


def diagnose(checkpoint: Path, pairs: list) -> dict[str, float]:
    net = load_checkpoint(checkpoint).build().eval()
    totals = dict.fromkeys(COLUMNS, 0.0)
    with torch.no_grad():
        for pair in pairs:
            y = read_image(pair.low).rgb.unsqueeze(0)
            reference = read_image(pair.high).rgb.unsqueeze(0)
            result = net.enhance(y)
            x = result.final.clamp(0, 1)  # psnr() rounds to 8 bits itself
            t = result.illuminations[-1]
            matched, _ = exposure_matched(x, reference)
            channel = x * reference.mean((2, 3), keepdim=True) / x.mean((2, 3), keepdim=True).clamp_min(1e-6)
            totals["psnr"] += psnr(x, reference)
            totals["matched"] += psnr(matched, reference)
            totals["channel-matched"] += psnr(channel, reference)
            totals["clipped"] += float((y >= t).float().mean())
            totals["t colour"] += float(t.std(dim=1).mean())
            totals["t / y"] += float((t / y.clamp_min(1e-3)).median())
    return {key: value / len(pairs) for key, value in totals.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoints", nargs="+", type=Path, help="trained models (model.pt)")
    parser.add_argument("--data", type=Path, default=SHARED / "data" / "lol_val", help="paired folder (low/, high/)")
    parser.add_argument("--limit", type=int, default=None, help="only the first N pairs")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    pairs = find_pairs(args.data)[: args.limit]
    print(f"{'checkpoint':<40} " + " ".join(f"{c:>15}" for c in COLUMNS))
    for checkpoint in args.checkpoints:
        scores = diagnose(checkpoint, pairs)
        print(f"{str(checkpoint)[-40:]:<40} " + " ".join(f"{scores[c]:>15.4f}" for c in COLUMNS), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
