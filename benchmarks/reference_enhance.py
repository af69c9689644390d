"""A stand-in for the RUAS authors' test script, to time ``ruas-nni enhance`` against.

We do not ship or copy the authors' code; this script does what their inference script does, the
way it does it, on the CPU:

* the network as trained (:class:`ruas_nni.model.network.RUASNet`, unfolded modules, the authors'
  checkpoint loaded by key; the whole network runs whichever output is kept, as in their script);
* images read one at a time with PIL, converted to RGB, turned into a float tensor with
  ``torchvision.transforms.ToTensor`` (their data loader's transform), batch of one;
* ``torch.no_grad()``, PyTorch's default threads;
* the output is written with PIL as an 8-bit PNG at Pillow's default compression, after
  ``clip(x * 255, 0, 255).astype(uint8)`` (truncation, as their ``save_images`` does; ``ruas-nni``
  rounds instead, so the two differ by at most one 8-bit level).

With ``--channels-last`` the same network, weights and input are put in PyTorch's channels-last memory
format (nothing else changes): the layout-tuned baseline, about twice as fast on CPU.

Usage: ``python benchmarks/reference_enhance.py [--channels-last] --checkpoint lol.pt --stage final INPUT_DIR OUTPUT_DIR``
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
import torchvision.transforms as transforms
from PIL import Image

from ruas_nni.model.checkpoint import load_checkpoint

SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("input_dir")
    parser.add_argument("output_dir")
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--stage", choices=("final", "iem"), default="final")
    parser.add_argument("--channels-last", action="store_true", help="network and input in channels-last memory format")
    args = parser.parse_args(argv)

    layout = torch.channels_last if args.channels_last else torch.contiguous_format
    model = load_checkpoint(args.checkpoint).build().to(memory_format=layout)
    for parameter in model.parameters():
        parameter.requires_grad = False
    to_tensor = transforms.ToTensor()
    out_dir = Path(args.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    names = sorted(p for p in Path(args.input_dir).iterdir() if p.suffix.lower() in SUFFIXES)
    with torch.no_grad():
        for path in names:
            low = to_tensor(Image.open(path).convert("RGB")).unsqueeze(0).contiguous(memory_format=layout)
            result = model.enhance(low)
            output = result.final if args.stage == "final" else result.iem
            array = np.transpose(output[0].cpu().float().numpy(), (1, 2, 0))
            Image.fromarray(np.clip(array * 255.0, 0, 255.0).astype("uint8")).save(out_dir / f"{path.stem}.png", "png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
