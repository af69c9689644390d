"""The configuration of a search: :class:`SearchConfig` (the reference settings as defaults), the
strategies by name, and loading it from YAML and flags."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Mapping

from ..base.config import load_config
from ..model.network import WARM_STARTS

__all__ = ["STRATEGIES", "SearchConfig", "load_search_config"]

STRATEGIES = ("cooperative", "separate", "joint", "darts", "gumbel-darts")
"""Search strategies by name: the paper's, its two ablations and NNI's two DARTS baselines."""


@dataclass
class SearchConfig:
    """Everything a search depends on. Defaults are the reference settings (spec Sec. 3)."""

    # data
    data: list[str] = field(default_factory=list, metadata={"help": "folders of unpaired low-light images"})
    crop: int = field(default=320, metadata={"min": 8, "help": "side of the random square crops"})
    val_fraction: float = field(default=0.5, metadata={"min": 0.0, "max": 0.95,
                                                      "help": "share of the images for the upper level"})
    batch_size: int = field(default=1, metadata={"min": 1})
    flip: bool = True
    # schedule
    strategy: str = field(default="cooperative", metadata={"choices": STRATEGIES})
    epochs: int = field(default=20, metadata={"min": 1})
    steps: int | None = field(default=None, metadata={"min": 1, "help": "at most this many batches per epoch"})
    seed: int = 0
    warmup_epochs: int = field(default=0, metadata={
        "min": 0, "help": "epochs that train only the weights before the alphas start to move (NNI DARTS' warm-up)"})
    # size
    param_budget: int | None = field(default=5000, metadata={
        "min": 1, "help": "expected parameters above this are penalised (NNI ExpectationProfilerPenalty); null = off"})
    budget_weight: float = field(default=1.0, metadata={
        "min": 0.0, "help": "scale of the budget penalty: loss + w * max(E[params] / budget - 1, 0)"})
    # cooperative search (Algorithm 1)
    beta: float = field(default=1.0, metadata={"help": "weight of L_val^n in the IEM's architecture loss"})
    unrolled: bool = field(default=True, metadata={"help": "second-order (unrolled) hypergradient"})
    nrm_period: int = field(default=10, metadata={"min": 1, "help": "step the NRM group every N-th batch"})
    iem_inner_steps: int = field(default=1, metadata={"min": 1})
    nrm_inner_steps: int = field(default=1, metadata={"min": 1})
    finite_difference_r: float = field(default=0.01, metadata={"min": 1e-12})
    # optimisers
    weight_lr: float = field(default=0.005, metadata={"min": 0.0})
    weight_lr_min: float = field(default=0.001, metadata={"min": 0.0})
    weight_momentum: float = field(default=0.9, metadata={"min": 0.0, "max": 1.0})
    weight_decay: float = field(default=3e-4, metadata={"min": 0.0})
    grad_clip: float | None = field(default=5.0, metadata={"min": 0.0})
    arch_lr: float = field(default=3e-4, metadata={
        "min": 0.0, "help": "Adam learning rate of the alphas (reference 3e-4: they barely move in a short search)"})
    arch_betas: list[float] = field(default_factory=lambda: [0.5, 0.999])
    arch_weight_decay: float = field(default=1e-3, metadata={"min": 0.0})
    gumbel_temperature: list[float] = field(default_factory=lambda: [1.0, 0.33],
                                            metadata={"help": "gumbel-darts: initial and final temperature"})
    # losses
    smooth_sigma: float | None = field(default=None, metadata={"help": "null: the authors' coefficient"})
    smooth_guide: str = field(default="rgb", metadata={"choices": ("rgb", "ycbcr")})
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
        if self.warmup_epochs >= self.epochs:
            raise ValueError(f"'warmup_epochs' ({self.warmup_epochs}) must be smaller than 'epochs' ({self.epochs}): "
                             "otherwise the architecture never moves")
        if self.weight_lr_min > self.weight_lr:
            raise ValueError(f"'weight_lr_min' ({self.weight_lr_min}) is larger than 'weight_lr' ({self.weight_lr})")

    def network_options(self) -> dict[str, Any]:
        """The :class:`ruas_nni.model.export.NetworkOptions` of the searched network."""
        return {"iem_stages": self.iem_stages, "nrm_cells": self.nrm_cells, "iem_channels": 3,
                "nrm_channels": self.nrm_channels, "gamma": self.gamma, "warm_start": self.warm_start}


def load_search_config(yaml_path: str | os.PathLike[str] | None = None,
                       overrides: Mapping[str, Any] | None = None) -> SearchConfig:
    """Defaults, then the YAML file, then ``overrides`` (command-line flags; ``None`` = not given)."""
    return load_config(SearchConfig, yaml_path, overrides)
