"""Why the NRM removed little noise, and what makes it denoise: retrain only the NRM of a model
(its IEM frozen) with one denoising variant, and score the result on every second `lol_val` pair.

Usage (the runs of docs/objectives.md, "Denoising"; MODEL = the model whose IEM is kept)::

    python scripts/nrm_diagnostics.py --model MODEL --oracle                    # u', its NRM, Gaussian blurs
    python scripts/nrm_diagnostics.py --model MODEL --evidence                  # N2N loss of identity vs low-pass
    python scripts/nrm_diagnostics.py --model MODEL --start denoise --optimizer adam --lr 0.001
    python scripts/nrm_diagnostics.py --model MODEL --start lowpass --lr 0.002 --gamma 0 --tv 0.1

Training crops: random 256-pixel crops of ../shared/data/unpaired/lol_low (seeded); nothing is trained
on `lol_val`. One torch thread. Prints PSNR / SSIM (as `ruas-nni evaluate`) every 100 steps.
"""

from __future__ import annotations

import argparse
import copy
import random
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ruas_nni.base.images import read_image  # noqa: E402
from ruas_nni.inference.metrics import psnr, ssim  # noqa: E402
from ruas_nni.model.checkpoint import load_checkpoint, load_nrm_init  # noqa: E402
from ruas_nni.model.nrm_start import lowpass_start  # noqa: E402
from ruas_nni.training.losses import neighbor2neighbor_loss, total_variation  # noqa: E402

SHARED = ROOT.parent / "shared"


def gaussian_blur(u: torch.Tensor, sigma: float) -> torch.Tensor:
    radius = int(3 * sigma + 0.5)
    taps = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-taps ** 2 / (2 * sigma * sigma))
    kernel = kernel / kernel.sum()
    u = F.pad(u, (radius,) * 4, mode="reflect")
    u = F.conv2d(u, kernel.view(1, 1, 1, -1).repeat(3, 1, 1, 1), groups=3)
    return F.conv2d(u, kernel.view(1, 1, -1, 1).repeat(3, 1, 1, 1), groups=3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="checkpoint whose IEM (and exposure options) are kept")
    parser.add_argument("--val", default=str(SHARED / "data" / "lol_val"))
    parser.add_argument("--train", default=str(SHARED / "data" / "unpaired" / "lol_low"))
    parser.add_argument("--oracle", action="store_true", help="score u', the model's NRM and blurs of u'; no training")
    parser.add_argument("--evidence", action="store_true", help="N2N loss of the identity and of the low-pass on 30 crops")
    parser.add_argument("--start", choices=("model", "denoise", "lowpass"), default="model",
                        help="NRM start: the model's own, the authors' denoise.pt, or the binomial low-pass")
    parser.add_argument("--loss", choices=("n2n", "fidelity", "distill"), default="n2n",
                        help="Neighbor2Neighbor, MSE(x, u) (+ --tv: Tikhonov), or MSE to a sigma-1 blur of u")
    parser.add_argument("--gamma", type=float, default=2.0, help="Neighbor2Neighbor's regulariser weight")
    parser.add_argument("--tv", type=float, default=0.1, help="weight of TV(x)")
    parser.add_argument("--pd", type=int, default=1, help="pixel-shuffle stride before Neighbor2Neighbor (1 = off)")
    parser.add_argument("--optimizer", choices=("sgd", "adam"), default="sgd")
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--steps", type=int, default=400)
    args = parser.parse_args()
    torch.set_num_threads(1)

    net = load_checkpoint(args.model).build()
    for parameter in net.iem.parameters():
        parameter.requires_grad_(False)
    nrm = net.nrm
    if args.start == "denoise":
        nrm.load_state_dict(load_nrm_init(SHARED / "reference" / "ruas_official" / "denoise.pt"))
    elif args.start == "lowpass":
        lowpass_start(nrm)

    def iem_output(y: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return net.enhance_iem(y)

    rng = random.Random(0)
    train_files = sorted(Path(args.train).glob("*.png"))

    def crop() -> torch.Tensor:
        image = read_image(train_files[rng.randrange(len(train_files))]).rgb
        _, h, w = image.shape
        i, j = rng.randrange(h - 255), rng.randrange(w - 255)
        return iem_output(image[:, i:i + 256, j:j + 256].unsqueeze(0))

    if args.evidence:
        low_pass = copy.deepcopy(nrm)
        lowpass_start(low_pass)
        totals = {"identity": [0.0, 0.0], "low-pass B5": [0.0, 0.0]}
        with torch.no_grad():
            for index in range(30):
                u = crop()
                for name, f in (("identity", lambda x: x), ("low-pass B5", low_pass)):
                    for k, gamma in enumerate((0.0, 2.0)):
                        generator = torch.Generator().manual_seed(index)
                        totals[name][k] += float(neighbor2neighbor_loss(f, u, gamma=gamma, generator=generator)) / 30
        for name, (plain, regularised) in totals.items():
            print(f"{name}: N2N loss gamma 0 = {plain:.6f}, gamma 2 = {regularised:.6f}")
        return

    pairs = []
    for low in sorted((Path(args.val) / "low").glob("*.png"))[::2]:
        pairs.append((iem_output(read_image(low).rgb.unsqueeze(0)), read_image(Path(args.val) / "high" / low.name).rgb))

    def score(f) -> str:
        with torch.no_grad():
            outputs = [(f(u), ref) for u, ref in pairs]
        p = sum(psnr(x, ref) for x, ref in outputs) / len(outputs)
        s = sum(ssim(x, ref) for x, ref in outputs) / len(outputs)
        return f"{p:.3f} dB / {s:.4f}"

    if args.oracle:
        print("u' (IEM output)", score(lambda u: u))
        print("model's NRM", score(nrm))
        for sigma in (0.6, 0.8, 1.0, 1.2, 1.6):
            print(f"Gaussian blur sigma {sigma} of u'", score(lambda u, s=sigma: gaussian_blur(u, s)))
        return

    print("start", score(nrm), flush=True)
    if args.optimizer == "adam":
        optimizer = torch.optim.Adam(nrm.parameters(), lr=args.lr)
    else:
        optimizer = torch.optim.SGD(nrm.parameters(), lr=args.lr, momentum=0.9, weight_decay=3e-4)
    generator = torch.Generator().manual_seed(0)
    started = time.time()
    for step in range(args.steps):
        u = crop()
        if args.loss == "distill":
            loss = (nrm(u) - gaussian_blur(u, 1.0)).pow(2).mean()
        elif args.loss == "fidelity":
            loss = (nrm(u) - u).pow(2).mean()
        else:
            sub = u
            if args.pd > 1:  # the pixel-shuffled sub-images share no neighbours
                s = args.pd
                side = u.shape[-1] // s
                sub = F.pixel_unshuffle(u, s).view(1, 3, s * s, side, side).transpose(1, 2).reshape(s * s, 3, side, side)
            loss = neighbor2neighbor_loss(nrm, sub, gamma=args.gamma, generator=generator)
        if args.tv and args.loss != "distill":
            loss = loss + args.tv * total_variation(nrm(u))
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(nrm.parameters(), 5.0)
        optimizer.step()
        if (step + 1) % 100 == 0:
            print(f"step {step + 1}: {score(nrm)} ({time.time() - started:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
