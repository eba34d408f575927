"""Amaranth 0.5 hardware of the ternary matmul accelerator."""

from .lanes import DotProduct
from .matmul import ErrorLayout, MatmulUnit

__all__ = ["DotProduct", "MatmulUnit", "ErrorLayout"]
