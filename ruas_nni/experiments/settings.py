"""The settings that every trial of a comparison shares, defined once.

:class:`TrialSettings` is one shape from end to end: ``ruas-nni compare``'s flags and ``--config`` YAML
fill :class:`ruas_nni.experiments.compare.CompareConfig` (which *is* a ``TrialSettings`` plus the
experiment's own keys), :meth:`TrialSettings.to_argv` writes it into the trial command, and the trial
process reads it back with :meth:`TrialSettings.from_argv`. The defaults below are the only ones: a
quick comparison (the paper's settings are ``epochs 20, crop 320, train_steps 800``, ``arch_lr`` null,
i.e. 3e-4: ``examples/compare.yaml``).

The trial takes every path and setting from this command line, never from the NNI manager: the
manager is unauthenticated (``docs/experiments.md``), so only the strategy and the seed come from it,
and :func:`validate_parameters` checks those.
"""

from __future__ import annotations

import argparse
import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from ..base.config import from_mapping
from ..search.config import STRATEGIES

__all__ = ["TrialSettings", "SEED_RANGE", "ParameterError", "validate_parameters"]

SEED_RANGE = (0, 2**31 - 1)
"""Seeds a trial accepts (inclusive)."""


@dataclass
class TrialSettings:
    """What every trial of a comparison shares (the flags of its trial command)."""

    data: list[str] = field(default_factory=list, metadata={"help": "folders of unpaired low-light images"})
    eval_data: str | None = field(default=None, metadata={"help": "paired folder (low/, high/) to score on"})
    strategies: list[str] = field(default_factory=lambda: list(STRATEGIES), metadata={
        "choices": STRATEGIES, "help": "strategies to compare (a trial runs only these)"})
    epochs: int = field(default=4, metadata={"min": 1, "help": "search epochs"})
    steps: int | None = field(default=None, metadata={"min": 1, "help": "search steps per epoch (null: all)"})
    crop: int = field(default=128, metadata={"min": 8, "help": "crop side of search and training"})
    train_steps: int = field(default=200, metadata={"min": 1, "help": "training steps of each searched network"})
    arch_lr: float | None = field(default=0.1, metadata={
        "min": 0.0, "help": "learning rate of the architecture weights (null: the search config's, 3e-4)"})
    # 0.1, not the search's 3e-4: with 4 epochs of a few images, 3e-4 leaves every probability within
    # 0.001 of 1/7 and the genotype is the argmax of the random start; 0.1 moves the largest to 0.3-0.4
    # (docs/experiments.md, "What a quick comparison can tell")
    device: str | None = field(default=None, metadata={
        "choices": ("cpu", "cuda", "auto"), "help": "device of a trial (null: cpu, or auto with gpus_per_trial)"})
    threads: int | None = field(default=None, metadata={"min": 1, "help": "torch threads of a trial (null: 1)"})
    search_config: str | None = field(default=None, metadata={"help": "YAML of `ruas-nni search` for other settings"})
    train_config: str | None = field(default=None, metadata={"help": "YAML of `ruas-nni train` for other settings"})

    def __post_init__(self) -> None:
        if not self.strategies:
            raise ValueError("'strategies' needs at least one strategy")
        duplicated = sorted({s for s in self.strategies if self.strategies.count(s) > 1})
        if duplicated:
            raise ValueError(f"'strategies' lists {duplicated[0]!r} twice")

    # ---------------------------------------------------------------- the trial command line

    @classmethod
    def trial_fields(cls) -> list[dataclasses.Field]:
        return list(dataclasses.fields(TrialSettings))

    def trial_settings(self) -> TrialSettings:
        """Just the trial's part (a subclass, such as the comparison's config, drops its own keys)."""
        return TrialSettings(**{f.name: getattr(self, f.name) for f in self.trial_fields()})

    def to_argv(self) -> list[str]:
        """The flags of the trial command that carry these settings (``None`` values are left out)."""
        words: list[str] = []
        for f in self.trial_fields():
            value = getattr(self, f.name)
            flag = "--" + f.name.replace("_", "-")
            if value is None:
                continue
            if isinstance(value, (list, tuple)):
                for item in value:
                    words += [flag, str(item)]
            else:
                words += [flag, str(value)]
        return words

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        """One flag per field; values are checked by :meth:`from_namespace` as the YAML keys are."""
        hints = typing.get_type_hints(TrialSettings)
        for f in cls.trial_fields():
            flag = "--" + f.name.replace("_", "-")
            is_list = typing.get_origin(hints[f.name]) is list
            kinds = set(typing.get_args(hints[f.name])) or {hints[f.name]}
            kind = int if int in kinds else float if float in kinds else str
            default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
            shown = ", ".join(map(str, default)) if is_list else default
            parser.add_argument(flag, action="append" if is_list else "store", default=None, type=kind,
                                help=f"{f.metadata.get('help', '')} (default: {shown})")

    @classmethod
    def from_namespace(cls, args: argparse.Namespace, source: str = "trial command") -> TrialSettings:
        """The settings the flags of :meth:`add_arguments` give (missing flags: the defaults)."""
        given = {f.name: getattr(args, f.name) for f in cls.trial_fields() if getattr(args, f.name) is not None}
        return from_mapping(TrialSettings, _numbers(given), source)

    @classmethod
    def from_argv(cls, argv: Sequence[str]) -> TrialSettings:
        parser = argparse.ArgumentParser()
        cls.add_arguments(parser)
        return cls.from_namespace(parser.parse_args(list(argv)))


def _numbers(values: Mapping[str, Any]) -> dict[str, Any]:
    """Command-line text to the field types (``from_mapping`` checks types, ranges and choices)."""
    hints = typing.get_type_hints(TrialSettings)
    result: dict[str, Any] = {}
    for key, value in values.items():
        kinds = set(typing.get_args(hints[key])) or {hints[key]}
        if isinstance(value, str) and (int in kinds or float in kinds):
            try:
                value = int(value) if int in kinds else float(value)
            except ValueError:
                pass  # from_mapping names the key and the expected type
        result[key] = value
    return result


class ParameterError(ValueError):
    """The NNI manager sent parameters a trial does not accept."""


def validate_parameters(parameters: Any, strategies: Sequence[str]) -> tuple[str, int]:
    """``(strategy, seed)`` from the parameters the NNI manager sent, or :class:`ParameterError`.

    Accepted: a mapping with exactly the keys ``strategy`` (one of ``strategies``, the comparison's)
    and ``seed`` (an integer in :data:`SEED_RANGE`, not a bool or a string). Anything else is refused:
    the manager is unauthenticated, so these values may come from anyone who can reach its port."""
    if not isinstance(parameters, Mapping):
        raise ParameterError(f"parameters must be a mapping of strategy and seed, got {type(parameters).__name__}")
    unknown = sorted(str(k) for k in parameters if k not in ("strategy", "seed"))
    if unknown:
        raise ParameterError(f"unknown parameter {unknown[0][:60]!r}; a trial accepts only 'strategy' and 'seed'")
    if "strategy" not in parameters or "seed" not in parameters:
        raise ParameterError("parameters need both 'strategy' and 'seed'")
    strategy, seed = parameters["strategy"], parameters["seed"]
    if not isinstance(strategy, str) or strategy not in strategies:
        raise ParameterError(f"strategy {str(strategy)[:60]!r} is not one of this comparison's: {', '.join(strategies)}")
    low, high = SEED_RANGE
    if not isinstance(seed, int) or isinstance(seed, bool) or not low <= seed <= high:
        raise ParameterError(f"seed must be an integer in {low}..{high}, got {str(seed)[:40]!r}")
    return strategy, seed
