#!/usr/bin/env python
"""A small mutation run: apply one-line bugs, one at a time, to a copy of the repository and run
the relevant fast tests; a mutation is *killed* when they fail.

    OMP_NUM_THREADS=1 python scripts/mutation_check.py [--only SUBSTRING] [--timeout 400]

For each mutation it runs the new bug-catching tests first and, when they pass, the older
relevant test files, so the report says which of the two caught it. The copy lives in a temporary
folder without ``../shared`` next to it (the tests that need the authors' material skip, as on a
machine without it). The checkout itself is never modified.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

LOSSES = ["tests/test_pinned_losses.py"]
HYPER = ["tests/test_unrolled_step.py"]
STRATEGY = ["tests/test_search_batches.py", "tests/test_unrolled_step.py"]
TILING = ["tests/test_tiled_enhancer.py"]
NETWORK = ["tests/test_golden.py", "tests/test_tiled_enhancer.py"]
FOLD = ["tests/test_golden.py", "tests/test_tiled_enhancer.py"]
OLD = {
    "losses": ["tests/test_space.py"],
    "hyper": ["tests/test_hypergradient.py"],
    "strategy": ["tests/test_strategy.py", "tests/test_hypergradient.py"],
    "tiling": ["tests/test_tiling.py", "-k", "not 4k"],
    "network": ["tests/test_network.py", "tests/test_tiling.py", "-k", "not 4k"],
    "fold": ["tests/test_fold.py"],
}

# (name, file, old text, new text, new tests, old tests key)
MUTATIONS = [
    ("tv horizontal term dropped", "ruas_nni/training/losses.py", "return 2.0 * (vertical + horizontal) / batch",
     "return 2.0 * (vertical) / batch", LOSSES, "losses"),
    ("tv factor 2 -> 1", "ruas_nni/training/losses.py", "return 2.0 * (vertical + horizontal) / batch",
     "return 1.0 * (vertical + horizontal) / batch", LOSSES, "losses"),
    ("smoothness constant -0.005 -> -0.006", "ruas_nni/training/losses.py", "REFERENCE_SMOOTH_COEFFICIENT = -0.5 * 0.1 * 0.1",
     "REFERENCE_SMOOTH_COEFFICIENT = -0.6 * 0.1 * 0.1", LOSSES, "losses"),
    ("smoothness offsets |dy| <= 1", "ruas_nni/training/losses.py", "for dy in range(0, 3) for dx in range(-2, 3)",
     "for dy in range(0, 2) for dx in range(-2, 3)", LOSSES, "losses"),
    ("smoothness pair factor 2 -> 1", "ruas_nni/training/losses.py", "total = total + 2.0 * weight.mean()",
     "total = total + 1.0 * weight.mean()", LOSSES, "losses"),
    ("smoothness |dt| -> dt^2", "ruas_nni/training/losses.py", "(t_p - t_q).abs().mean()", "(t_p - t_q).pow(2).mean()",
     LOSSES, "losses"),
    ("smoothness weight without channel sum", "ruas_nni/training/losses.py", ".pow(2).sum(dim=1, keepdim=True)",
     ".pow(2).mean(dim=1, keepdim=True)", LOSSES, "losses"),
    ("sigma coefficient -1/(2s^2) -> -1/s^2", "ruas_nni/training/losses.py", "return -1.0 / (2.0 * sigma * sigma)",
     "return -1.0 / (sigma * sigma)", LOSSES, "losses"),
    ("ycbcr coefficient 0.504 -> 0.505", "ruas_nni/training/losses.py", "[0.257, 0.504, 0.098]", "[0.257, 0.505, 0.098]",
     LOSSES, "losses"),
    ("illumination fidelity 0.5 -> 1", "ruas_nni/training/losses.py", "fidelity_weight: float = 0.5,",
     "fidelity_weight: float = 1.0,", LOSSES, "losses"),
    ("noise fidelity 1e-7 -> 1e-6", "ruas_nni/training/losses.py", "fidelity_weight: float = 1e-7",
     "fidelity_weight: float = 1e-6", LOSSES, "losses"),
    ("ycbcr guide ignored", "ruas_nni/training/losses.py", 'g = rgb_to_ycbcr(y) if guide == "ycbcr" else y', "g = y",
     LOSSES, "losses"),
    ("evaluator: first illumination instead of last", "search_spaces/evaluator.py",
     "illumination_loss(y, out.illuminations[-1]", "illumination_loss(y, out.illuminations[0]", LOSSES, "losses"),
    ("evaluator: NRM fidelity to the input", "search_spaces/evaluator.py", "noise_loss(out.final, out.iem)",
     "noise_loss(out.final, y)", LOSSES, "losses"),
    ("evaluator: momentum 0.9 -> 0.8", "search_spaces/evaluator.py", "momentum: float = 0.9,",
     "momentum: float = 0.8,", LOSSES, "losses"),
    ("unrolled momentum term zeroed", "strategies/hypergradient.py",
     "direction = direction + self.momentums[index] * buffer", "direction = direction + 0.0 * buffer", HYPER, "hyper"),
    ("unrolled weight decay dropped", "strategies/hypergradient.py",
     "direction = direction + self.weight_decays[index] * weight", "direction = direction", HYPER, "hyper"),
    ("unrolled lr halved", "strategies/hypergradient.py", "return self.lrs[index] * direction",
     "return 0.5 * self.lrs[index] * direction", HYPER, "hyper"),
    ("from_optimizer drops buffers", "strategies/hypergradient.py",
     'buffers.append(state.get("momentum_buffer") if momentum else None)', "buffers.append(None)", HYPER, "hyper"),
    ("finite difference sign", "strategies/hypergradient.py", "[g - (gp - gm) / (2.0 * eps)",
     "[g + (gp - gm) / (2.0 * eps)", HYPER, "hyper"),
    ("w- computed as w+", "strategies/hypergradient.py", "w.copy_(w0).sub_(d, alpha=eps)",
     "w.copy_(w0).add_(d, alpha=eps)", HYPER, "hyper"),
    ("train / val batches swapped", "strategies/cooperative.py",
     'train_batch, val_batch = batch["train"], batch["val"]', 'train_batch, val_batch = batch["val"], batch["train"]',
     STRATEGY, "strategy"),
    ("upper level on the training batch", "strategies/cooperative.py",
     "upper = self._loss_fn(val_batch, 2 * batch_idx,", "upper = self._loss_fn(train_batch, 2 * batch_idx,",
     STRATEGY, "strategy"),
    ("unrolled lower level on the validation batch", "strategies/cooperative.py",
     "lower = self._loss_fn(train_batch, 2 * batch_idx + 1,", "lower = self._loss_fn(val_batch, 2 * batch_idx + 1,",
     STRATEGY, "strategy"),
    ("strategy unrolls plain SGD (no momentum)", "strategies/cooperative.py",
     "LowerStep.from_optimizer(raw, group.weights)", "LowerStep.sgd(group.weights, 0.005, weight_decay=3e-4)",
     STRATEGY, "strategy"),
    ("strategy ignores finite_difference_r", "strategies/cooperative.py", "r=self.finite_difference_r)", "r=0.01)",
     STRATEGY, "strategy"),
    ("NRM period off by one", "strategies/cooperative.py", "if batch_idx % g.period == 0]",
     "if batch_idx % g.period == 1]", STRATEGY, "strategy"),
    ("tile halo 2 px short at the bottom", "ruas_nni/inference/tiling.py", "min(height, core_bottom + halo)",
     "min(height, core_bottom + halo - 2)", TILING, "tiling"),
    ("tile halo 2 px short at the left", "ruas_nni/inference/tiling.py", "max(0, core_left - halo)",
     "max(0, core_left - halo + 2)", TILING, "tiling"),
    ("enhancer halo 2 px short", "ruas_nni/inference/enhance.py", "self.halo = int(model.receptive_radius())",
     "self.halo = int(model.receptive_radius()) - 2", TILING, "tiling"),
    ("unfolded IEM-stage radius 1 short", "ruas_nni/inference/enhance.py", "return self.network.iem.receptive_radius()",
     "return self.network.iem.receptive_radius() - 1", TILING, "tiling"),
    ("LeakyReLU slope 0.05 -> 0.06", "ruas_nni/model/network.py", "LEAKY_SLOPE = 0.05", "LEAKY_SLOPE = 0.06",
     NETWORK, "network"),
    ("T_MIN 0.001 -> 0.01", "ruas_nni/model/network.py", "T_MIN = 0.001", "T_MIN = 0.01", NETWORK, "network"),
    ("rectification sign", "ruas_nni/model/network.py", "t_hat = warm_start(u) - self.gamma * (u - y)",
     "t_hat = warm_start(u) + self.gamma * (u - y)", NETWORK, "network"),
    ("warm start padded top-left", "ruas_nni/model/network.py", "F.pad(x, (0, 1, 0, 1))", "F.pad(x, (1, 0, 1, 0))",
     NETWORK, "network"),
    ("IEM radius without S", "ruas_nni/model/network.py", "radius = radius + 1 + cell.receptive_radius()",
     "radius = radius + cell.receptive_radius()", NETWORK, "network"),
    ("cell radius misses e7", "ruas_nni/model/network.py", "r[1] + r[3] + r[5] + r[6])", "r[1] + r[3] + r[5])",
     NETWORK, "network"),
    ("NRM radius 1 short", "ruas_nni/model/network.py", "return 2 + sum(cell.receptive_radius()",
     "return 1 + sum(cell.receptive_radius()", NETWORK, "network"),
    ("cell: r1 without residual", "ruas_nni/model/network.py", "r1 = act(self.e2(h) + h)", "r1 = act(self.e2(h))",
     NETWORK, "network"),
    ("op radius ignores dilation", "ruas_nni/model/ops.py",
     "return self.op.dilation[0] * (self.op.kernel_size[0] - 1) // 2", "return (self.op.kernel_size[0] - 1) // 2",
     NETWORK, "network"),
    ("residual convolution without residual", "ruas_nni/model/ops.py", "return self.op(x) + x", "return self.op(x)",
     NETWORK, "network"),
    ("fold: r1 without residual", "ruas_nni/inference/fold.py", '("r1", edges["e2"].plus_identity(1.0))',
     '("r1", edges["e2"])', FOLD, "fold"),
    ("fold: T_MIN 0.01", "ruas_nni/inference/fold.py", "t = torch.sigmoid_(z).clamp_(T_MIN, 1.0)",
     "t = torch.sigmoid_(z).clamp_(0.01, 1.0)", FOLD, "fold"),
    ("fold: rectification sign", "ruas_nni/inference/fold.py", "t_hat = warm(u).sub_(torch.sub(u, y).mul_(self.gamma))",
     "t_hat = warm(u).add_(torch.sub(u, y).mul_(self.gamma))", FOLD, "fold"),
    ("fold: identity off centre", "ruas_nni/inference/fold.py",
     "centre = self.kernel_size // 2\n        weight[:, :, centre, centre] +=",
     "centre = 0\n        weight[:, :, centre, centre] +=", FOLD, "fold"),
    ("fold: embed 1x1 off centre", "ruas_nni/inference/fold.py",
     "weight[:, :, kernel_size // 2, kernel_size // 2] = self.weight[:, :, 0, 0]",
     "weight[:, :, 0, 0] = self.weight[:, :, 0, 0]", FOLD, "fold"),
    ("fold: radius 2 short", "ruas_nni/inference/fold.py",
     "self.receptive_radius_value = network.receptive_radius() if",
     "self.receptive_radius_value = network.receptive_radius() - 2 if", FOLD, "fold"),
]


def _pytest(copy: Path, args: list[str], timeout: int) -> tuple[int, float]:
    env = dict(os.environ, PYTHONPATH=str(copy), OMP_NUM_THREADS="1", PYTHONDONTWRITEBYTECODE="1")
    start = time.monotonic()
    try:
        done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *args], cwd=copy,
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=timeout)
        code = done.returncode
    except subprocess.TimeoutExpired:
        code = -1
    return code, time.monotonic() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help="run the mutations whose name contains this")
    parser.add_argument("--timeout", type=int, default=400)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "repo"
        shutil.copytree(ROOT, copy, ignore=shutil.ignore_patterns(".git", ".venv", "__pycache__", ".pytest_cache",
                                                                  ".ruff_cache", "*.egg-info", "runs", "demo-run"))
        killed = total = 0
        for name, file, old, new, new_tests, old_key in MUTATIONS:
            if args.only not in name:
                continue
            path = copy / file
            original = path.read_text()
            if original.count(old) != 1:
                print(f"SKIP   {name}: the text to mutate occurs {original.count(old)} times in {file}", flush=True)
                continue
            total += 1
            path.write_text(original.replace(old, new))
            try:
                code, seconds = _pytest(copy, new_tests, args.timeout)
                by = "new tests" if code != 0 else None
                if code == 0:
                    code, more = _pytest(copy, OLD[old_key], args.timeout)
                    seconds += more
                    by = "older tests" if code != 0 else None
            finally:
                path.write_text(original)
            killed += by is not None
            verdict = f"KILLED by {by}" if by else "SURVIVED"
            print(f"{verdict:24s} {name} ({file}, {seconds:.0f} s{', timeout' if code == -1 else ''})", flush=True)
        print(f"score: {killed}/{total} killed", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
