"""NNI model spaces of ruas-nni."""

from .ruas import RUASSpace

__all__ = ["RUASSpace"]
