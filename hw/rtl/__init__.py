"""Amaranth 0.5 components of the accelerator: the matmul unit, its lane groups and
output stage, the layer engine, stream adapters and vendor cells."""

from ternary_accel.hw.rtl.lanes import DotProduct
from ternary_accel.hw.rtl.matmul import ErrorLayout, MatmulUnit

__all__ = ["DotProduct", "MatmulUnit", "ErrorLayout"]
