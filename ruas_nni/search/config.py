"""The configuration of a search: :class:`SearchConfig` (the reference settings as defaults), the
strategies by name, and loading it from YAML and flags."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Mapping

from ..base.config import load_config
from ..model.network import WARM_STARTS
from ..model.tone import ToneOptions
from ..training.config import OBJECTIVES, TONES, TrainConfig, tone_options
from ..training.losses import DENOISERS, EXPOSURE_MODES

__all__ = ["STRATEGIES", "OBJECTIVES", "RECIPE", "SEARCH_SCHEDULE", "SearchConfig", "load_search_config"]

STRATEGIES = ("cooperative", "separate", "joint", "darts", "gumbel-darts", "random")
"""Search strategies by name: the paper's, its two ablations, NNI's two DARTS baselines, and
``random`` (a uniform draw of a genotype within ``param_budget``, no training: the baseline)."""

RECIPE: dict[str, Any] = {key: getattr(TrainConfig(), key) for key in (
    "objective", "exposure", "exposure_gamma", "tone", "exposure_weight", "denoiser", "denoise_consistency",
    "denoise_tv_weight", "bound_weight")}
"""The recommended objective, the search's default: ``ruas-nni train``'s defaults (the recipe of the
default model, ``examples/default_model.yaml``, chosen on ``lol_val``, docs/objectives.md), read from
:class:`~ruas_nni.training.config.TrainConfig` so that search and training cannot drift apart."""

SEARCH_SCHEDULE: dict[str, Any] = {
    "epochs": 10,
    "steps": 12,
    "crop": 128,
    "nrm_period": 1,
    "warmup_epochs": None,  # a fifth of the epochs (SearchConfig.warmup)
    "arch_lr": 0.01,
    "budget_weight": 0.01,
}
"""The default length, pace and budget weight of a search (docs/search.md: sized to finish within
20 minutes on two CPU cores; chosen on ``lol_val``). ``examples/paper.yaml`` holds the authors' settings."""


@dataclass
class SearchConfig:
    """Everything a search depends on. Defaults: the recommended objective (:data:`RECIPE`), a
    parameter budget and the schedule :data:`SEARCH_SCHEDULE`; everything else the reference
    settings (spec Sec. 3). ``examples/paper.yaml`` restores the authors' search."""

    # data
    data: list[str] = field(default_factory=list, metadata={"help": "folders of unpaired low-light images"})
    crop: int = field(default=SEARCH_SCHEDULE["crop"], metadata={"min": 8, "help": "side of the random square crops"})
    val_fraction: float = field(default=0.5, metadata={"min": 0.0, "max": 0.95,
                                                      "help": "share of the images for the upper level"})
    batch_size: int = field(default=1, metadata={"min": 1})
    flip: bool = True
    # schedule
    strategy: str = field(default="cooperative", metadata={"choices": STRATEGIES})
    epochs: int = field(default=SEARCH_SCHEDULE["epochs"], metadata={"min": 1})
    steps: int | None = field(default=SEARCH_SCHEDULE["steps"], metadata={
        "min": 1, "help": "at most this many batches per epoch"})
    seed: int = 0
    warmup_epochs: int | None = field(default=SEARCH_SCHEDULE["warmup_epochs"], metadata={
        "min": 0, "help": ("epochs that train only the weights before the alphas start to move (NNI DARTS' warm-up); "
                           "null: a fifth of the epochs, rounded down")})
    # size
    param_budget: int | None = field(default=5000, metadata={
        "min": 1, "help": "expected parameters above this are penalised (NNI ExpectationProfilerPenalty); null = off"})
    budget_weight: float = field(default=SEARCH_SCHEDULE["budget_weight"], metadata={
        "min": 0.0, "help": "scale of the budget penalty: loss + w * max(E[params] / budget - 1, 0)"})
    # latency
    latency_budget: float | None = field(default=None, metadata={
        "min": 0.0, "help": ("expected ms per 600x400 image above this are penalised, predicted by this machine's "
                             "latency table (ruas-nni latency; measured once, a few minutes, then cached); null = off")})
    latency_weight: float = field(default=0.1, metadata={
        "min": 0.0, "help": "scale of the latency penalty: loss + w * max(E[ms] / latency_budget - 1, 0)"})
    # cooperative search (Algorithm 1)
    beta: float = field(default=1.0, metadata={"help": "weight of L_val^n in the IEM's architecture loss"})
    unrolled: bool = field(default=True, metadata={"help": "second-order (unrolled) hypergradient"})
    nrm_period: int = field(default=SEARCH_SCHEDULE["nrm_period"], metadata={
        "min": 1, "help": "step the NRM group every N-th batch"})
    iem_inner_steps: int = field(default=1, metadata={"min": 1})
    nrm_inner_steps: int = field(default=1, metadata={"min": 1})
    finite_difference_r: float = field(default=0.01, metadata={"min": 1e-12})
    # optimisers
    weight_lr: float = field(default=0.005, metadata={"min": 0.0})
    weight_lr_min: float = field(default=0.001, metadata={"min": 0.0})
    weight_momentum: float = field(default=0.9, metadata={"min": 0.0, "max": 1.0})
    weight_decay: float = field(default=3e-4, metadata={"min": 0.0})
    grad_clip: float | None = field(default=5.0, metadata={"min": 0.0})
    arch_lr: float = field(default=SEARCH_SCHEDULE["arch_lr"], metadata={
        "min": 0.0, "help": "Adam learning rate of the alphas (reference 3e-4: they barely move in a short search)"})
    arch_betas: list[float] = field(default_factory=lambda: [0.5, 0.999])
    arch_weight_decay: float = field(default=1e-3, metadata={"min": 0.0})
    gumbel_temperature: list[float] = field(default_factory=lambda: [1.0, 0.33],
                                            metadata={"help": "gumbel-darts: initial and final temperature"})
    # losses
    smooth_sigma: float | None = field(default=None, metadata={"help": "null: the authors' coefficient"})
    smooth_guide: str = field(default="rgb", metadata={"choices": ("rgb", "ycbcr")})
    # the objective (the keys of ``ruas-nni train`` of the same names; defaults: :data:`RECIPE`)
    objective: str = field(default=RECIPE["objective"], metadata={"choices": OBJECTIVES, "help": (
        "reference: the authors' L_t and L_n (the paper's search); exposure_denoise: L_t (+ exposure / colour terms) "
        "for the IEM, a self-supervised denoising loss (+ TV) for the NRM on the exposure-normalised u'")})
    exposure: float | None = field(default=RECIPE["exposure"], metadata={"min": 0.01, "max": 1.0, "help": (
        "exposure normalisation E of the supernet: the IEM output is brought to mean E before the NRM "
        "(as in training; null = off, the paper's network)")})
    exposure_gamma: float = field(default=RECIPE["exposure_gamma"], metadata={"min": 0.05, "max": 2.0, "help": (
        "with exposure on: the tone curve u ** exposure_gamma before the gain (1 = plain scaling)")})
    tone: str = field(default=RECIPE["tone"], metadata={"choices": TONES, "help": (
        "with exposure on: the supernet's exposure policy, as in training (shoulder: docs/tone.md; clip: "
        "clamp(k * u ** exposure_gamma, 0, 1))")})
    exposure_level: float = field(default=0.5, metadata={
        "min": 0.0, "max": 1.0, "help": "exposure_denoise: grey level of the exposure term"})
    exposure_weight: float = field(default=RECIPE["exposure_weight"], metadata={
        "min": 0.0, "help": "exposure_denoise: weight of the exposure term (0: none; the network normalises)"})
    exposure_patch: int = field(default=16, metadata={"min": 1, "help": "exposure_denoise: the exposure term's patches"})
    exposure_mode: str = field(default="illumination", metadata={"choices": EXPOSURE_MODES, "help": (
        "exposure_denoise: the exposure term on the block means of y over t_K (illumination) or of u_K (output)")})
    color_weight: float = field(default=0.0, metadata={"min": 0.0, "help": "exposure_denoise: colour constancy"})
    bound_weight: float = field(default=RECIPE["bound_weight"], metadata={"min": 0.0, "help": (
        "exposure_denoise: the Retinex bound t_K >= y (the IEM output clips below it)")})
    denoiser: str = field(default=RECIPE["denoiser"], metadata={"choices": DENOISERS, "help": (
        "exposure_denoise: the NRM's self-supervised loss")})
    denoise_weight: float = field(default=1.0, metadata={"min": 0.0})
    denoise_consistency: float = field(default=RECIPE["denoise_consistency"], metadata={
        "min": 0.0, "help": "exposure_denoise: Neighbor2Neighbor's gamma / Zero-Shot N2N's consistency weight"})
    denoise_tv_weight: float = field(default=RECIPE["denoise_tv_weight"], metadata={
        "min": 0.0, "help": "exposure_denoise: weight of TV(x) in the NRM loss"})
    # network
    iem_stages: int = field(default=3, metadata={"min": 1})
    nrm_cells: int = field(default=3, metadata={"min": 1})
    nrm_channels: int = field(default=6, metadata={"min": 1})
    gamma: float = 0.5
    warm_start: str = field(default="rectified", metadata={"choices": WARM_STARTS})
    # running
    checkpoint_every: int = field(default=10, metadata={"min": 1, "help": "write the checkpoint every N batches"})
    max_nonfinite_steps: int = field(default=5, metadata={"min": 1})
    device: str = field(default="auto", metadata={"choices": ("auto", "cpu", "cuda")})
    threads: int | None = field(default=1, metadata={"min": 1, "help": "CPU threads of torch (1: fastest on "
                                                                     "shared cores; null: PyTorch's default)"})
    progress: bool = True
    out: str | None = None

    def __post_init__(self) -> None:
        if len(self.arch_betas) != 2 or not all(0.0 <= b < 1.0 for b in self.arch_betas):
            raise ValueError(f"'arch_betas' must be two numbers in [0, 1), got {self.arch_betas}")
        if len(self.gumbel_temperature) != 2 or not self.gumbel_temperature[0] >= self.gumbel_temperature[1] >= 0:
            raise ValueError(f"'gumbel_temperature' must be [initial, final] with initial >= final >= 0, "
                             f"got {self.gumbel_temperature}")
        if self.warmup_epochs is not None and self.warmup_epochs >= self.epochs:
            raise ValueError(f"'warmup_epochs' ({self.warmup_epochs}) must be smaller than 'epochs' ({self.epochs}): "
                             "otherwise the architecture never moves")
        if self.weight_lr_min > self.weight_lr:
            raise ValueError(f"'weight_lr_min' ({self.weight_lr_min}) is larger than 'weight_lr' ({self.weight_lr})")

    @property
    def warmup(self) -> int:
        """The warm-up epochs in effect: ``warmup_epochs``, or a fifth of ``epochs`` (rounded down) when null."""
        return self.warmup_epochs if self.warmup_epochs is not None else self.epochs // 5

    def tone_options(self) -> ToneOptions | None:
        """The shoulder policy's options when exposure is on and ``tone`` is ``shoulder``, else ``None``."""
        return tone_options(self.tone, self.exposure)

    def network_options(self) -> dict[str, Any]:
        """The :class:`ruas_nni.model.export.NetworkOptions` of the searched network."""
        tone = self.tone_options()
        return {"iem_stages": self.iem_stages, "nrm_cells": self.nrm_cells, "iem_channels": 3,
                "nrm_channels": self.nrm_channels, "gamma": self.gamma, "warm_start": self.warm_start,
                **({"exposure": self.exposure, "exposure_gamma": self.exposure_gamma} if self.exposure is not None else {}),
                **({"tone": tone.to_dict()} if tone is not None else {})}

    def loss_options(self) -> dict[str, Any]:
        """The objective's keyword arguments of :class:`search_spaces.evaluator.ReferenceFreeLosses`."""
        return {"smooth_sigma": self.smooth_sigma, "smooth_guide": self.smooth_guide, "objective": self.objective,
                "exposure_level": self.exposure_level, "exposure_weight": self.exposure_weight,
                "exposure_patch": self.exposure_patch, "exposure_mode": self.exposure_mode,
                "color_weight": self.color_weight, "bound_weight": self.bound_weight, "denoiser": self.denoiser,
                "denoise_weight": self.denoise_weight,
                "denoise_consistency": self.denoise_consistency, "denoise_tv_weight": self.denoise_tv_weight,
                "seed": self.seed}


def load_search_config(yaml_path: str | os.PathLike[str] | None = None,
                       overrides: Mapping[str, Any] | None = None) -> SearchConfig:
    """Defaults, then the YAML file, then ``overrides`` (command-line flags; ``None`` = not given)."""
    return load_config(SearchConfig, yaml_path, overrides)
