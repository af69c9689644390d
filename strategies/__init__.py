"""Search strategies of ruas-nni: the cooperative bilevel search of RUAS (paper Algorithm 1) as an
NNI one-shot strategy, and its ablations.

    from strategies import CooperativeBilevel
    strategy = CooperativeBilevel()            # IEM group ("iem/*"), then NRM group ("nrm/*")
    strategy(RawFormatModelSpace(RUASSpace(), evaluator), SequentialExecutionEngine())

This package imports NNI; the inference side (:mod:`ruas_nni`) does not.
"""

from .cooperative import (
    ALL_LOSSES,
    RUAS_GROUPS,
    ChoiceGroup,
    CooperativeBilevel,
    CooperativeBilevelLightningModule,
    JointDARTS,
    NonFiniteSearchError,
    SeparateSearch,
    labelled_architecture_parameters,
    ruas_groups,
)
from .hypergradient import Hypergradient, LowerStep, first_order_hypergradient, unrolled_hypergradient

__all__ = [
    "ALL_LOSSES",
    "RUAS_GROUPS",
    "ChoiceGroup",
    "CooperativeBilevel",
    "CooperativeBilevelLightningModule",
    "Hypergradient",
    "JointDARTS",
    "LowerStep",
    "NonFiniteSearchError",
    "SeparateSearch",
    "first_order_hypergradient",
    "labelled_architecture_parameters",
    "ruas_groups",
    "unrolled_hypergradient",
]
