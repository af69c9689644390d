"""Package a trained model as the project's default model (ruas_nni/pretrained/default.pt + default.json).

Usage (the last step of scripts/reproduce_default_model.sh)::

    python scripts/make_default_model.py --model runs/default/train/model.pt \
        --val ../shared/data/lol_val --report ../shared/data/lol_eval15 \
        [--search runs/default/search/arch.json] [--compare NAME=PATH ...] --note "why this model"

It scores the model on the validation folder (``--val``, where every choice is made) and on the
test folder (``--report``, only reported) exactly as ``ruas-nni evaluate`` does, counts
its parameters and FLOPs (PyTorch's FLOP counter, via :mod:`ruas_nni.inference.benchmark`), and writes the
checkpoint with metadata saying how it was made: genotype and where it came from, the training
recipe and data folders, the scores, and the exact commands (read from
scripts/reproduce_default_model.sh). ``--compare`` records the scores of other candidates (e.g. the
searched genotype when the paper genotype is shipped) so the choice is visible in the file.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ruas_nni.base.atomic import write_json_atomic  # noqa: E402
from ruas_nni.inference.benchmark import count_flops, count_parameters  # noqa: E402
from ruas_nni.inference.evaluation import evaluate, find_pairs  # noqa: E402
from ruas_nni.inference.no_reference import evaluate_no_reference, find_low_light  # noqa: E402
from ruas_nni.model.checkpoint import Checkpoint, load_checkpoint, save_checkpoint  # noqa: E402
from ruas_nni.model.genotype import PAPER_GENOTYPE  # noqa: E402
from ruas_nni.model.tone import ToneOptions  # noqa: E402

TARGET = ROOT / "ruas_nni" / "pretrained" / "default.pt"
COMMANDS = ROOT / "scripts" / "reproduce_default_model.sh"


def _commands() -> list[str]:
    """The command lines of the reproduction script (comments and blank lines dropped, continuations joined)."""
    lines, current = [], ""
    for raw in COMMANDS.read_text().splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#") or line.startswith("set ")):
            continue
        current += line[:-1].strip() + " " if line.endswith("\\") else line
        if not line.endswith("\\"):
            lines.append(current)
            current = ""
    return lines


DEFINITION = "ruas-nni evaluate: 8-bit rounded output, PSNR on RGB, SSIM gaussian 11 / 1.5"


def _scores(path: Path, pairs) -> dict[str, float]:
    result = evaluate(load_checkpoint(path), pairs)
    return {"psnr": round(result.mean.psnr, 4), "ssim": round(result.mean.ssim, 4)}


def _record(result) -> dict:
    record = {"psnr": round(result.mean.psnr, 4), "ssim": round(result.mean.ssim, 4)}
    matched = result.matched_mean
    if matched is not None:
        record["exposure_matched"] = {"psnr": round(matched.psnr, 4), "ssim": round(matched.ssim, 4)}
    return record | {"per_image": {k: v.to_dict() for k, v in result.per_image.items()}, "definition": DEFINITION}


def _real(checkpoint: Checkpoint, folder: str) -> dict:
    result = evaluate_no_reference(find_low_light(folder), checkpoint)
    return {"photos": len(result.per_image), "mean": result.mean, "worst": result.worst,
            "definition": "ruas-nni evaluate --no-reference (docs/no_reference.md)"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="the trained model.pt to ship")
    parser.add_argument("--val", required=True, help="paired validation folder the model was chosen on (lol_val)")
    parser.add_argument("--report", required=True, help="paired test folder, only reported (LOL eval15)")
    parser.add_argument("--search", default=None, help="arch.json of the search whose winner was trained, if any")
    parser.add_argument("--compare", action="append", default=[], metavar="NAME=PATH",
                        help="other candidates' model.pt to score and record (repeatable)")
    parser.add_argument("--tone", choices=("shoulder", "keep"), default="keep",
                        help="ship the model with the shoulder exposure policy (ruas_nni.model.tone, default options) "
                             "instead of the one it was trained with (keep, default)")
    parser.add_argument("--denoise-sigma", type=float, default=None, metavar="S",
                        help="ship the model with the NRM's strength measured per photo (ruas_nni.model.strength): "
                             "full at an estimated noise of S at the NRM's input, scaled down below it (default: "
                             "the model's own, none for a trained model: always full)")
    parser.add_argument("--exposure-side", type=int, default=None, metavar="N",
                        help="ship the model measuring its exposure gain on a small copy whose longest side is at "
                             "most N pixels (ruas_nni.model.network.exposure_gain; default: the model's own, 256 "
                             "for a trained model). Smaller is faster: the gain's IEM and solve run before the "
                             "full-size pass")
    parser.add_argument("--real", action="append", default=[], metavar="DIR",
                        help="a folder of real low-light photos to measure without references and record (repeatable)")
    parser.add_argument("--note", default="", help="a sentence on how and why this model was chosen")
    parser.add_argument("--out", default=str(TARGET), help=f"where to write (default {TARGET.relative_to(ROOT)})")
    args = parser.parse_args(argv)

    source = load_checkpoint(args.model)
    if "training" in source.metadata:  # an already packaged model: its training record, not its package's
        source = replace(source, metadata=source.metadata["training"])
    if args.tone == "shoulder":
        if source.options.exposure is None:
            parser.error("--tone shoulder: the model has no exposure normalisation")
        source = replace(source, options=replace(source.options, tone=ToneOptions()))
    # options that act on the exposure gain's small copy and so need exposure normalisation
    for flag, option, why in (("--denoise-sigma", "denoise_sigma", " (the strength needs its lift)"),
                              ("--exposure-side", "exposure_side", "")):
        value = getattr(args, option)
        if value is None:
            continue
        if source.options.exposure is None:
            parser.error(f"{flag}: the model has no exposure normalisation{why}")
        try:
            source = replace(source, options=replace(source.options, **{option: value}))
        except ValueError as exc:
            parser.error(f"{flag}: {exc}")
    pairs = find_pairs(args.val)
    result = evaluate(source, pairs)
    test_pairs = find_pairs(args.report)
    test_result = evaluate(source, test_pairs)
    network = source.build()
    flops = count_flops(network, 600, 400)
    genotype = source.genotype
    if genotype == PAPER_GENOTYPE:
        genotype_source = {"kind": "paper", "text": "the genotype searched in the paper (Liu et al., CVPR 2021, Sec. 4)"}
    else:
        genotype_source = {"kind": "search", "text": f"the winner of the search in {args.search or source.metadata.get('arch')}"}
    if args.search:
        search = json.loads(Path(args.search).read_text())
        genotype_source["search"] = {k: search.get(k) for k in
                                     ("strategy", "seed", "epochs", "steps", "crop", "data", "seconds", "iem", "nrm")}
    compared = {}
    for item in args.compare:
        name, _, path = item.partition("=")
        compared[name] = _scores(Path(path), pairs) | {"genotype": load_checkpoint(path).genotype.to_dict()}
    metadata = {
        "name": "ruas-nni default model",
        "genotype_source": genotype_source,
        "training": source.metadata,
        "lol_val": _record(result),
        "lol_eval15": _record(test_result),
        "compared_candidates": compared,
        "parameters": count_parameters(network)["whole"],
        "flops_600x400": {"whole": flops["whole"]["flops"], "iem": flops["iem"]["flops"],
                          "counted_by": "torch.utils.flop_counter.FlopCounterMode (1 multiply-add = 2 FLOPs)"},
        "real_photos": {Path(folder).name: _real(source, folder) for folder in args.real},
        "commands": _commands(),
        "note": args.note,
        "evaluation_set_use": "recipe, objective, exposure, training length and checkpoint were chosen on lol_val "
                              "(50 pairs); lol_eval15 is only reported; neither was used to search or train "
                              "(docs/objectives.md)",
    }
    checkpoint = Checkpoint(source.genotype, source.options, source.state_dict, metadata)
    out = Path(args.out)
    save_checkpoint(checkpoint, out)
    sidecar = {k: v for k, v in metadata.items() if k != "training"} | {
        "genotype": source.genotype.to_dict(), "options": source.options.to_dict(),
        "training": {k: source.metadata.get(k) for k in ("arch", "data", "images_used", "init_nrm", "recipe", "seed",
                                                         "steps", "seconds", "torch", "made_by")},
    }
    write_json_atomic(out.with_suffix(".json"), sidecar)  # the same bytes as json.dumps(indent=2) + newline
    print(f"{out}: lol_val {result.mean.psnr:.3f} dB / {result.mean.ssim:.4f} on {len(pairs)} pairs, "
          f"lol_eval15 {test_result.mean.psnr:.3f} dB / {test_result.mean.ssim:.4f} on {len(test_pairs)} pairs, "
          f"{metadata['parameters']} parameters, {flops['whole']['flops'] / 1e9:.3f} GFLOPs at 600x400")
    return 0


if __name__ == "__main__":
    sys.exit(main())
