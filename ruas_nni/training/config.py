"""The recipe of a training run: :class:`TrainConfig` (the reference recipe as defaults), loading it
from YAML and flags, and the architecture it trains."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping

from ..base.config import load_config
from ..base.errors import UsageError
from ..model.export import SHAPE_OPTIONS, NetworkOptions
from ..model.genotype import PAPER_GENOTYPE, Genotype
from ..model.network import WARM_STARTS
from ..model.nrm_start import NRM_STARTS
from ..model.tone import ToneOptions
from .losses import DENOISERS, EXPOSURE_MODES, SMOOTH_GUIDES

__all__ = ["TrainConfig", "OBJECTIVES", "REFERENCE_RECIPE", "load_train_config", "resolve_arch", "with_arch_shape"]

OBJECTIVES = ("reference", "exposure_denoise")
"""Training objectives: ``reference`` = the authors' ``L_t`` and ``L_n`` (spec Sec. 2);
``exposure_denoise`` = ``L_t`` plus exposure control (and optionally colour constancy) on the IEM
output, and a self-supervised denoising loss for the NRM instead of ``L_n`` (docs/objectives.md)."""
TONES = ("shoulder", "clip")
"""Exposure policies (network option ``tone``): :mod:`ruas_nni.model.tone`, or ``clamp(k u ** p, 0, 1)``."""


def tone_options(tone: str, exposure: float | None) -> ToneOptions | None:
    """The network option ``tone`` of the key ``tone`` (one of :data:`TONES`): the shoulder policy's
    options when exposure is on and ``tone`` is ``shoulder``, else ``None``."""
    return ToneOptions() if tone == "shoulder" and exposure is not None else None


@dataclass
class TrainConfig:
    """Everything that decides what ``ruas-nni train`` learns. Defaults: the project's recommended
    recipe, chosen on ``lol_val`` (docs/objectives.md); :data:`REFERENCE_RECIPE` (also
    ``examples/paper_train.yaml``) restores the authors' recipe (spec Sec. 4) and losses (spec Sec. 2)."""

    arch: str = field(default="paper", metadata={"help": "arch.json of a search, or 'paper' for the paper's genotype"})
    data: list[str] = field(default_factory=list, metadata={"help": "folders of unpaired low-light images"})
    init_nrm: str | None = field(default=None, metadata={"help": "NRM initial weights (the authors' denoise.pt)"})
    steps: int = field(default=400, metadata={"min": 1, "help": "training steps"})
    crop: int = field(default=256, metadata={"min": 8, "help": "side of the random square crops"})
    batch_size: int = field(default=1, metadata={"min": 1, "help": "crops per step (per device)"})
    seed: int = field(default=0, metadata={"min": 0, "help": "seed of the weights' initialisation and the crops"})
    flip: bool = field(default=False, metadata={"help": "random horizontal / vertical flips (not in the reference)"})
    # optimisation
    iem_lr: float = field(default=0.015, metadata={"min": 0.0})
    nrm_lr: float = field(default=0.005, metadata={"min": 0.0})
    momentum: float = field(default=0.9, metadata={"min": 0.0, "max": 1.0})
    weight_decay: float = field(default=3e-4, metadata={"min": 0.0})
    grad_clip: float = field(default=5.0, metadata={"min": 0.0, "help": "max gradient norm per module; 0 = off"})
    nrm_period: int = field(default=1, metadata={"min": 1, "help": "the NRM steps every nrm_period-th step"})
    nrm_start: str = field(default="lowpass", metadata={"choices": NRM_STARTS, "help": (
        "without init_nrm, the NRM starts as x = u (identity: its head at zero), as a 5x5 binomial low-pass "
        "x = B * u (lowpass; 3x3 below 6 NRM channels), or from its layers' random initialisation (random)")})
    # network (paper Sec. 3.1 and the ablations of Fig. 6)
    gamma: float = 0.5
    warm_start: str = field(default="rectified", metadata={"choices": WARM_STARTS})
    exposure: float | None = field(default=0.45, metadata={"min": 0.01, "max": 1.0, "help": (
        "exposure normalisation E: the IEM output is scaled to mean E before the NRM (network option, "
        "saved in the checkpoint; null = off, the paper's network)")})
    exposure_gamma: float = field(default=0.5, metadata={"min": 0.05, "max": 2.0, "help": (
        "with exposure on: the tone curve u ** exposure_gamma before the gain (1 = plain scaling)")})
    tone: str = field(default="shoulder", metadata={"choices": TONES, "help": (
        "with exposure on: the exposure policy. shoulder: the unclamped IEM ratio, dequantised in the "
        "dark, through a curve that rolls off below white, with the gain bounded by the photo's own white "
        "point and mean (docs/tone.md); clip: clamp(k * u ** exposure_gamma, 0, 1), the policy before")})
    iem_stages: int = field(default=3, metadata={"min": 1})
    nrm_cells: int = field(default=3, metadata={"min": 1})
    nrm_channels: int = field(default=6, metadata={"min": 1})
    # losses (spec Sec. 2)
    fidelity_weight: float = field(default=0.5, metadata={"min": 0.0, "help": "weight of MSE(t_K, y) in L_t"})
    smooth_weight: float = field(default=1.0, metadata={"min": 0.0, "help": "weight of the smoothness R in L_t"})
    smooth_sigma: float | None = field(default=None, metadata={
        "min": 1e-6, "help": "intended sigma of R's weights exp(-|dg|^2 / 2 sigma^2); null = the reference's -0.005"})
    smooth_guide: str = field(default="ycbcr", metadata={"choices": SMOOTH_GUIDES})
    fidelity_gamma: float = field(default=1.0, metadata={"min": 0.05, "max": 1.0, "help": (
        "L_t's fidelity pulls t_K to y ** fidelity_gamma (1 = the reference, MSE(t_K, y)); below 1, u = y / t "
        "lifts the shadows like a gamma curve")})
    noise_fidelity_weight: float = field(default=1e-7, metadata={"min": 0.0, "help": "weight of MSE(x, u_K) in L_n"})
    tv_weight: float = field(default=1.0, metadata={"min": 0.0, "help": "weight of TV(x) in L_n"})
    # the objective (reference = the two losses above; exposure_denoise adds the keys below)
    objective: str = field(default="exposure_denoise", metadata={"choices": OBJECTIVES, "help": (
        "reference: L_t and L_n as the authors; exposure_denoise: L_t + exposure (+ colour) terms on u_K for the "
        "IEM, a self-supervised denoising loss (+ TV) for the NRM instead of L_n")})
    exposure_level: float = field(default=0.5, metadata={
        "min": 0.0, "max": 1.0, "help": "exposure_denoise: grey level E that u_K's patch means are pulled to (Zero-DCE)"})
    exposure_weight: float = field(default=0.0, metadata={"min": 0.0, "help": "exposure_denoise: weight of the exposure term"})
    exposure_patch: int = field(default=16, metadata={"min": 1, "help": "exposure_denoise: side of the exposure term's patches"})
    exposure_mode: str = field(default="illumination", metadata={"choices": EXPOSURE_MODES, "help": (
        "exposure_denoise: pull the block means of y over those of t_K (illumination) or of u_K (output, Zero-DCE) to E")})
    color_weight: float = field(default=0.0, metadata={
        "min": 0.0, "help": "exposure_denoise: weight of Zero-DCE's colour constancy term on u_K"})
    bound_weight: float = field(default=10.0, metadata={"min": 0.0, "help": (
        "exposure_denoise: weight of the Retinex bound t_K >= y, mean relu(log y - log t_K): the IEM output clips "
        "where t_K < y (0 = off)")})
    denoiser: str = field(default="neighbor2neighbor", metadata={
        "choices": DENOISERS, "help": "exposure_denoise: NRM loss, Neighbor2Neighbor or Zero-Shot Noise2Noise"})
    denoise_weight: float = field(default=1.0, metadata={"min": 0.0, "help": "exposure_denoise: weight of the denoising loss"})
    denoise_consistency: float = field(default=0.0, metadata={
        "min": 0.0, "help": "exposure_denoise: Neighbor2Neighbor's gamma / Zero-Shot N2N's consistency weight"})
    denoise_tv_weight: float = field(default=0.1, metadata={
        "min": 0.0, "help": "exposure_denoise: weight of TV(x) in the NRM loss"})
    # bookkeeping
    checkpoint_every: int = field(default=50, metadata={"min": 1, "help": "steps between resumable checkpoints"})
    log_every: int = field(default=10, metadata={"min": 1, "help": "steps between logged losses"})
    sample_every: int = field(default=200, metadata={"min": 1, "help": "steps between logged sample enhancements"})
    max_bad_steps: int = field(default=5, metadata={"min": 1, "help": "stop after this many non-finite steps in a row"})
    num_workers: int = field(default=0, metadata={"min": 0, "help": "data loading processes (0 = main process)"})

    def network_options(self) -> NetworkOptions:
        return NetworkOptions(iem_stages=self.iem_stages, nrm_cells=self.nrm_cells, nrm_channels=self.nrm_channels,
                              gamma=self.gamma, warm_start=self.warm_start, exposure=self.exposure,
                              exposure_gamma=self.exposure_gamma,
                              tone=tone_options(self.tone, self.exposure))


REFERENCE_RECIPE: dict[str, Any] = {
    "steps": 800, "crop": 320, "nrm_lr": 0.001, "nrm_period": 50, "nrm_start": "identity", "exposure": None,
    "exposure_gamma": 1.0, "tone": "clip", "objective": "reference", "exposure_weight": 1.0, "denoise_consistency": 2.0,
    "denoise_tv_weight": 0.0, "bound_weight": 0.0,
}
"""The keys whose defaults differ from the authors' recipe (spec Sec. 4, the losses of Sec. 2), with the
authors' values: ``TrainConfig(**REFERENCE_RECIPE)`` trains exactly as ``ruas-nni train`` did before the
recommended recipe became the default (and as ``examples/paper_train.yaml``; NRM from ``init_nrm`` =
the authors' ``denoise.pt`` when given)."""


def resolve_arch(arch: str) -> tuple[Genotype, str, dict[str, int]]:
    """``paper`` or the path of an ``arch.json`` (search output) -> genotype, a description, and the
    network shape the file fixes (its ``shape``: some of :data:`~ruas_nni.model.export.SHAPE_OPTIONS`; ``{}`` without one)."""
    if arch == "paper":
        return PAPER_GENOTYPE, "paper genotype (Liu et al., CVPR 2021, Sec. 4)", {}
    path = Path(arch)
    if not path.is_file():
        raise UsageError(f"`arch` {arch}: no such file (give a search's arch.json, or 'paper')", keys=("arch",))
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise UsageError(f"`arch` {arch}: not a readable JSON file ({exc})", keys=("arch",)) from None
    try:
        genotype = Genotype.from_any(data)
    except ValueError as exc:
        raise UsageError(f"`arch` {arch}: {exc}", keys=("arch",)) from None
    shape = data.get("shape") or {} if isinstance(data, dict) else {}
    if not isinstance(shape, dict) or set(shape) - set(SHAPE_OPTIONS) or not all(
            isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in shape.values()):
        raise UsageError(f"`arch` {arch}: 'shape' must map some of {', '.join(SHAPE_OPTIONS)} to positive integers, "
                         f"got {shape!r}", keys=("arch",))
    return genotype, f"{path}", dict(shape)


def with_arch_shape(config: TrainConfig, shape: Mapping[str, int]) -> TrainConfig:
    """``config`` in the shape its architecture was searched in: a shape key still at its default
    takes the architecture's value; one the recipe sets to another value is an error."""
    defaults = TrainConfig()
    for key, value in shape.items():
        current = getattr(config, key)
        if current != value and current != getattr(defaults, key):
            raise UsageError(f"`{key}` {current}: the architecture {config.arch} was searched with {key} {value}; "
                             f"set it to {value} or leave it out", keys=(key, "arch"))
    return replace(config, **shape)


def load_train_config(yaml_path: str | os.PathLike[str] | None, overrides: Mapping[str, Any]) -> TrainConfig:
    """The recipe: defaults, then the YAML file ``yaml_path``, then ``overrides`` (``None`` = not given)."""
    return load_config(TrainConfig, yaml_path, overrides)
