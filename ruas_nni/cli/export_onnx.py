"""``ruas-nni export-onnx``: write a checkpoint's network as an ONNX model."""

from __future__ import annotations

import argparse
import sys

ORDER = 55
HELP = "export a checkpoint's network to ONNX (dynamic height and width)"

DESCRIPTION = """\
Export the network of a checkpoint to ONNX, for onnxruntime and other runtimes. Input "image":
float32 N x 3 x H x W RGB in [0, 1] (N, H and W dynamic); output "enhanced": same shape, the output
of --stage, not clipped (clip to [0, 1] before saving). The graph is the folded inference network
(same outputs as the network as trained up to float32 rounding); --no-fold exports it as trained.

With --check (needs onnxruntime), the exported model is run on two random images of different
sizes and compared with PyTorch; the largest difference is printed.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("export-onnx", help=HELP, description=DESCRIPTION,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", metavar="PATH", default=None,
                        help="model to export (default: the model shipped with ruas-nni)")
    parser.add_argument("-o", "--out", required=True, metavar="MODEL.onnx", help="where to write the ONNX model")
    parser.add_argument("--stage", choices=("final", "iem"), default="final",
                        help="export the final output (IEM + NRM, default) or the IEM output only")
    parser.add_argument("--opset", type=int, default=None, help="ONNX opset (default 17)")
    parser.add_argument("--no-fold", action="store_true", help="export the network exactly as trained")
    parser.add_argument("--check", action="store_true", help="compare onnxruntime with PyTorch after exporting")
    parser.set_defaults(func=run)


def check_with_onnxruntime(path, checkpoint, stage: str, sizes=((37, 53), (128, 96))) -> float:
    """Largest absolute difference between onnxruntime and the PyTorch network (as trained)."""
    import numpy as np
    import onnxruntime
    import torch

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    network = checkpoint.build()
    worst = 0.0
    generator = torch.Generator().manual_seed(0)
    for height, width in sizes:
        image = torch.rand(1, 3, height, width, generator=generator) * 0.4
        with torch.inference_mode():
            result = network.enhance(image)
            expected = (result.final if stage == "final" else result.iem).numpy()
        (got,) = session.run(None, {"image": image.numpy()})
        worst = max(worst, float(np.abs(got - expected).max()))
    return worst


def run(args: argparse.Namespace) -> int:
    from ruas_nni.base.errors import UsageError
    from ruas_nni.inference.enhance import load_model
    from ruas_nni.inference.onnx_export import DEFAULT_OPSET, export_onnx

    checkpoint, source = load_model(args.checkpoint)
    try:
        path = export_onnx(checkpoint, args.out, stage=args.stage, fold=not args.no_fold,
                           opset=args.opset or DEFAULT_OPSET)
    except OSError as exc:
        raise UsageError(f"-o {args.out}: cannot write ({exc.strerror or exc})") from None
    print(f"wrote {path} ({args.stage} output of {source})")
    if args.check:
        try:
            worst = check_with_onnxruntime(path, checkpoint, args.stage)
        except ImportError:
            raise UsageError("--check needs onnxruntime (pip install onnxruntime)") from None
        print(f"onnxruntime vs PyTorch: largest difference {worst:.2e}", file=sys.stdout)
    return 0
