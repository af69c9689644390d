"""Genotypes: one operation per cell edge for the IEM and one for the NRM.

A genotype is written ``{"iem": [7 op names], "nrm": [7 op names]}`` (edges ``e1`` .. ``e7``), the
format of ``arch.json``. NNI's exported samples (``{"iem/e1": "skip_connect", ...}``) convert to
the same thing. ``nrm`` may be ``None`` for an IEM-only network (paper Table 2, ``RUAS_i``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from .network import EDGE_NAMES
from .ops import OPERATION_NAMES

__all__ = ["Genotype", "PAPER_GENOTYPE"]

MODULES = ("iem", "nrm")


def _validate_ops(module: str, ops: Sequence[Any]) -> tuple[str, ...]:
    if isinstance(ops, (str, bytes)) or not isinstance(ops, Sequence):
        raise ValueError(f"genotype {module!r} must be a list of {len(EDGE_NAMES)} operation names, got {ops!r}")
    if len(ops) != len(EDGE_NAMES):
        raise ValueError(f"genotype {module!r} needs {len(EDGE_NAMES)} operations (edges e1..e7), got {len(ops)}")
    names = []
    for edge, op in zip(EDGE_NAMES, ops):
        if isinstance(op, int) and not isinstance(op, bool) and 0 <= op < len(OPERATION_NAMES):
            op = OPERATION_NAMES[op]
        if op not in OPERATION_NAMES:
            raise ValueError(
                f"genotype {module}/{edge}: unknown operation {op!r}; expected one of {', '.join(OPERATION_NAMES)}"
            )
        names.append(op)
    return tuple(names)


@dataclass(frozen=True)
class Genotype:
    """The searched architecture: the operation on each of the seven edges of each module."""

    iem: tuple[str, ...]
    nrm: tuple[str, ...] | None

    def __post_init__(self) -> None:
        object.__setattr__(self, "iem", _validate_ops("iem", self.iem))
        if self.nrm is not None:
            object.__setattr__(self, "nrm", _validate_ops("nrm", self.nrm))

    @classmethod
    def from_any(cls, arch: Any) -> Genotype:
        """Accept a :class:`Genotype`, a ``{"iem": [...], "nrm": [...]}`` dict (``arch.json``; extra
        keys such as ``probs`` are ignored) or an NNI sample ``{"iem/e1": op, ..., "nrm/e7": op}``."""
        if isinstance(arch, Genotype):
            return arch
        if not isinstance(arch, Mapping):
            raise ValueError(f"an architecture must be a mapping, got {type(arch).__name__}")
        if "iem" in arch:
            return cls(tuple(arch["iem"]), tuple(arch["nrm"]) if arch.get("nrm") is not None else None)
        return cls.from_sample(arch)

    @classmethod
    def from_sample(cls, sample: Mapping[str, Any]) -> Genotype:
        """Convert an NNI sample (labels ``iem/e1`` .. ``nrm/e7``) to a genotype."""
        ops: dict[str, list[Any]] = {}
        for module in MODULES:
            labels = [f"{module}/{edge}" for edge in EDGE_NAMES]
            present = [label in sample for label in labels]
            if all(present):
                ops[module] = [sample[label] for label in labels]
            elif any(present):
                missing = [label for label, p in zip(labels, present) if not p]
                raise ValueError(f"NNI sample is missing {', '.join(missing)}")
        if "iem" not in ops:
            raise ValueError(
                "not a RUAS architecture: expected keys 'iem' and 'nrm' (arch.json) "
                f"or NNI labels 'iem/e1'..'nrm/e7', got {sorted(sample)[:8]}"
            )
        return cls(tuple(ops["iem"]), tuple(ops["nrm"]) if "nrm" in ops else None)

    def to_dict(self) -> dict[str, list[str] | None]:
        return {"iem": list(self.iem), "nrm": list(self.nrm) if self.nrm is not None else None}

    def to_sample(self) -> dict[str, str]:
        """The NNI sample that freezes ``RUASSpace`` to this genotype."""
        sample = {f"iem/{edge}": op for edge, op in zip(EDGE_NAMES, self.iem)}
        if self.nrm is not None:
            sample.update({f"nrm/{edge}": op for edge, op in zip(EDGE_NAMES, self.nrm)})
        return sample


PAPER_GENOTYPE = Genotype(
    iem=("skip_connect", "resconv_1x1", "resdilconv_3x3", "conv_3x3", "conv_3x3", "skip_connect", "conv_3x3"),
    nrm=("resconv_1x1", "resconv_1x1", "resdilconv_3x3", "skip_connect", "resconv_1x1", "resconv_1x1", "skip_connect"),
)
"""The genotypes searched in the paper (Sec. 4, Fig. 2), used by the authors' checkpoints."""
