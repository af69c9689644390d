"""The seven candidate operations of a distillation-cell edge (paper Sec. 3.3, Fig. 2(d)).

Every operation maps ``C`` channels to ``C`` channels at the same spatial size. Convolutions have a
bias and "same" padding. The order of :data:`OPERATION_NAMES` is the order of the rows of the
architecture weights (``alpha``) everywhere in the project.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

__all__ = [
    "OPERATION_NAMES",
    "OPERATIONS",
    "Convolution",
    "ResidualConvolution",
    "make_operation",
]

OPERATION_NAMES: tuple[str, ...] = (
    "skip_connect",
    "conv_1x1",
    "conv_3x3",
    "dilconv_3x3",
    "resconv_1x1",
    "resconv_3x3",
    "resdilconv_3x3",
)


class Convolution(nn.Module):
    """``conv(x)``: a biased convolution with "same" padding.

    The convolution lives in ``self.op`` so that the state-dict keys of an edge are
    ``<edge>.op.weight`` and ``<edge>.op.bias``, as in the authors' checkpoints.
    """

    def __init__(self, channels: int, kernel_size: int, dilation: int = 1) -> None:
        super().__init__()
        padding = dilation * (kernel_size - 1) // 2
        self.op = nn.Conv2d(channels, channels, kernel_size, padding=padding, dilation=dilation, bias=True)

    @property
    def receptive_radius(self) -> int:
        """How many pixels away from the centre one output pixel can see."""
        return self.op.dilation[0] * (self.op.kernel_size[0] - 1) // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class ResidualConvolution(Convolution):
    """``conv(x) + x``: the residual convolutions of the search space."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x) + x


OperationFactory = Callable[[int], nn.Module]

OPERATIONS: dict[str, OperationFactory] = {
    "skip_connect": lambda c: nn.Identity(),
    "conv_1x1": lambda c: Convolution(c, 1),
    "conv_3x3": lambda c: Convolution(c, 3),
    "dilconv_3x3": lambda c: Convolution(c, 3, dilation=2),
    "resconv_1x1": lambda c: ResidualConvolution(c, 1),
    "resconv_3x3": lambda c: ResidualConvolution(c, 3),
    "resdilconv_3x3": lambda c: ResidualConvolution(c, 3, dilation=2),
}


def make_operation(name: str, channels: int) -> nn.Module:
    """Build the candidate operation ``name`` for ``channels`` channels.

    Raises ``ValueError`` naming the allowed operations when ``name`` is unknown.
    """
    try:
        factory = OPERATIONS[name]
    except KeyError:
        raise ValueError(f"unknown operation {name!r}; expected one of {', '.join(OPERATION_NAMES)}") from None
    return factory(channels)


def receptive_radius(module: nn.Module) -> int:
    """Receptive radius of one candidate operation (0 for the identity)."""
    return module.receptive_radius if isinstance(module, Convolution) else 0
