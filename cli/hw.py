"""The matmul unit's and the layer engine's parameters as command-line flags, shared by
``ternary-accel verilog`` and ``synth``: the flags and their checks are those of
:class:`~ternary_accel.hw.params.UnitParams` and
:class:`~ternary_accel.hw.params.EngineParams`."""

from ternary_accel.hw.params import EngineParams, UnitParams
from ternary_accel.model.quant import TERNARY

__all__ = ["add_design_arguments", "params_from_args"]

#: The engine-only flags, for the message when they come without ``--engine``.
ENGINE_FLAGS = "--weight-order, --acc-tiles, --tokens, --weight-port-bits and --packing"


def add_design_arguments(parser):
    """Add the unit's flags and the engine's own (used with ``--engine``) to ``parser``."""
    UnitParams.add_arguments(parser)
    EngineParams.add_engine_arguments(parser)


def params_from_args(parser, args, *, engine):
    """The :class:`UnitParams` of ``args``, or with ``engine`` the :class:`EngineParams`;
    a bad value or combination is a usage error naming the flag."""
    if not engine:
        if EngineParams.engine_only_given(args):
            parser.error(f"{ENGINE_FLAGS} are engine parameters: add --engine")
        return UnitParams.from_args(parser, args)
    if args.weight_mode != TERNARY:
        parser.error(f"--engine takes ternary weights (base-3 packed), not "
                     f"--weight-mode {args.weight_mode}")
    return EngineParams.from_args(parser, args)
