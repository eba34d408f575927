"""The pipelined fixed-point output stage: the golden model's rounding at the unit's clock,
several accumulators per cycle (:func:`ternary_accel.model.arith.round_fixed` on
``slots`` accumulators).

Per slot, every register stage does one cheap step:

- 1: the inputs, registered, the scale and the shift in a copy per slot.
- 2 to 5: the multiply ``p = acc * scale``: on ECP5 (``fabric="ecp5"``) in ``MULT18X18D``
  blocks with their input, pipeline and output registers (Yosys maps ``*`` onto the
  blocks but keeps its registers in the fabric, so the blocks are instantiated), the
  accumulator cut into 17-bit chunks, one block each, then a fabric register; the
  generic design registers a ``*`` the same number of times.
- 6: the chunks' partial products added (one carry chain; a plain register with one chunk).
- 7 to 9: the right shift of ``q = 2 p`` by ``shift`` (0..63), two mux levels per stage,
  largest first, keeping only the ``OUT_WIDTH + 1`` low bits the result needs: a bit
  leaving the window at the top ends up above the result, so instead of being shifted it
  sets a sticky "too large" flag when it differs from the sign.
- 10 and 11: round, then saturate: ``u = q >> shift = floor(p / 2**(shift - 1))`` (``2 p`` for
  ``shift = 0``) holds the result ``floor(p / 2**shift)`` above its lowest bit, which is
  the rounding bit: ``round_fixed = sat((u >> 1) + u[0])``, a 17-bit increment instead of
  the wide bias add ``p + 2**(shift - 1)`` (the same value: ``floor((x + 1) / 2)``
  depends only on ``floor(x)``). A shift past the product's width leaves ``u`` all sign
  bits, so the result is 0 with no special case.

The datapath registers have no enable and no reset (results are qualified by ``valid``,
which resets); the stage never stalls.
"""

from amaranth.hdl import (Cat, ClockSignal, Const, Instance, Module, Mux, Signal, Value,
                          signed, unsigned)
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from ternary_accel.model.arith import OUT_WIDTH, SCALE_WIDTH, SHIFT_WIDTH, signed_range

from ternary_accel.hw.params import check_positive_int
from ternary_accel.hw.params import ECP5, GENERIC, check_fabric
from ternary_accel.hw.timing import MULTIPLY_LATENCY, OUTPUT_STAGE_LATENCY, SHIFT_LEVELS_PER_STAGE, SHIFT_STAGES

__all__ = ["OutputStage", "OUTPUT_STAGE_LATENCY", "MULTIPLY_LATENCY", "SHIFT_STAGES",
           "DSP_CHUNK", "dsp_chunks", "product_width", "shift_windows"]

#: The register holding the product (stage 1 takes the inputs, one copy of the scale and
#: shift per slot).
PRODUCT_STAGE = 1 + MULTIPLY_LATENCY + 1
#: Bits of an accumulator chunk below the top one: the unsigned part of an 18-bit signed
#: ``MULT18X18D`` operand.
DSP_CHUNK = 17
#: Bits of a ``MULT18X18D`` operand (signed).
DSP_WIDTH = 18
#: Bits the shift keeps: the result and its rounding bit below it.
KEPT_BITS = OUT_WIDTH + 1


def product_width(acc_width):
    """Signed bits of ``acc * scale`` for an unsigned ``SCALE_WIDTH``-bit scale."""
    return acc_width + SCALE_WIDTH


def dsp_chunks(acc_width):
    """``[(low bit, width)]`` of the accumulator chunks, one ``MULT18X18D`` each: 17-bit
    unsigned chunks from the bottom, the top chunk signed and up to 18 bits."""
    chunks, low = [], 0
    while acc_width - low > DSP_WIDTH:
        chunks.append((low, DSP_CHUNK))
        low += DSP_CHUNK
    return chunks + [(low, acc_width - low)]


def shift_windows(width):
    """``[(amount, window)]`` per shift level, largest amount first: after the level only
    bits 0 to ``window - 1`` of the shifted ``width``-bit value are kept (the rest ends
    above the result whatever the later levels shift)."""
    amounts = [1 << bit for bit in reversed(range(SHIFT_WIDTH))]
    levels, window = [], width
    for index, amount in enumerate(amounts):
        window = min(window, KEPT_BITS + sum(amounts[index + 1:]))
        levels.append((amount, window))
    return levels


def _differs(bits, sign):
    """1 when some bit of ``bits`` differs from ``sign``."""
    return bits != sign.replicate(len(bits))


def _mult18x18d(a, b, p):
    """A ``MULT18X18D`` with input, pipeline and output registers on the sync clock:
    ``p`` (36 bits) is the signed product of the 18-bit ``a`` and ``b`` three cycles
    earlier."""
    ports = {f"i_A{i}": a[i] for i in range(DSP_WIDTH)}
    ports.update({f"i_B{i}": b[i] for i in range(DSP_WIDTH)})
    ports.update({f"i_C{i}": Const(0, 1) for i in range(DSP_WIDTH)})
    ports.update({f"o_P{i}": p[i] for i in range(2 * DSP_WIDTH)})
    registers = {f"p_REG_{reg}_{kind}": value
                 for reg in ("INPUTA", "INPUTB", "PIPELINE", "OUTPUT")
                 for kind, value in (("CLK", "CLK0"), ("CE", "CE0"), ("RST", "RST0"))}
    return Instance("MULT18X18D", **registers, p_GSR="DISABLED", p_RESETMODE="SYNC",
                    p_MULT_BYPASS="DISABLED", p_SOURCEB_MODE="B_SHIFT",
                    p_CAS_MATCH_REG="FALSE", p_HIGHSPEED_CLK="NONE",
                    i_CLK0=ClockSignal(), i_CE0=Const(1, 1), i_RST0=Const(0, 1),
                    i_SIGNEDA=Const(1, 1), i_SIGNEDB=Const(1, 1), i_SOURCEA=Const(0, 1),
                    i_SOURCEB=Const(0, 1), **ports)


class OutputStage(wiring.Component):
    """``slots`` accumulators per cycle through ``round_fixed(acc, scale, shift)``, in
    :data:`OUTPUT_STAGE_LATENCY` cycles, one set per cycle, never stalling.

    Parameters
    ----------
    slots : int
        Accumulators taken per cycle (they share ``scale`` and ``shift``).
    acc_width : int
        Signed bits of an accumulator.
    fabric : str
        ``"generic"`` (a registered ``*``) or ``"ecp5"`` (``MULT18X18D`` blocks with
        their registers; the Verilog then needs the Lattice cell library).
    tag_width : int
        Bits of ``tag``, carried beside the data (0 for none).

    Attributes
    ----------
    valid : Signal, in
        The slots hold accumulators to rescale.
    acc : Signal(ArrayLayout(signed(acc_width), slots)), in
    scale : Signal(unsigned(SCALE_WIDTH)), in
    shift : Signal(unsigned(SHIFT_WIDTH)), in
    tag : Signal(tag_width), in
    out_valid : Signal, out
        ``valid``, :data:`OUTPUT_STAGE_LATENCY` cycles later.
    out : Signal(ArrayLayout(signed(OUT_WIDTH), slots)), out
        The results of the accumulators taken :data:`OUTPUT_STAGE_LATENCY` cycles
        earlier.
    out_tag : Signal(tag_width), out
        ``tag``, as late.

    Raises
    ------
    TypeError, ValueError
        On a parameter of the wrong type or out of range.
    """

    def __init__(self, *, slots, acc_width, fabric=GENERIC, tag_width=0):
        self._slots = check_positive_int("slots", slots)
        self._acc_width = check_positive_int("acc_width", acc_width, minimum=2)
        self._fabric = check_fabric(fabric)
        self._tag_width = check_positive_int("tag_width", tag_width, minimum=0)
        super().__init__({
            "valid": In(1),
            "acc": In(data.ArrayLayout(signed(acc_width), slots)),
            "scale": In(unsigned(SCALE_WIDTH)),
            "shift": In(unsigned(SHIFT_WIDTH)),
            "tag": In(max(tag_width, 1)),
            "out_valid": Out(1),
            "out": Out(data.ArrayLayout(signed(OUT_WIDTH), slots)),
            "out_tag": Out(max(tag_width, 1)),
        })

    @property
    def slots(self):
        return self._slots

    @property
    def acc_width(self):
        return self._acc_width

    @property
    def fabric(self):
        return self._fabric

    @property
    def latency(self):
        return OUTPUT_STAGE_LATENCY

    def elaborate(self, platform):
        m = Module()
        # valid and tag: reset, so nothing is valid after a reset
        valid, tag = self.valid, self.tag
        for stage in range(OUTPUT_STAGE_LATENCY):
            next_valid = Signal(name=f"os{stage + 1}_valid")
            next_tag = Signal(len(tag), name=f"os{stage + 1}_tag")
            m.d.sync += [next_valid.eq(valid), next_tag.eq(tag)]
            valid, tag = next_valid, next_tag
        m.d.comb += [self.out_valid.eq(valid), self.out_tag.eq(tag)]
        for slot in range(self._slots):
            m.d.comb += self.out[slot].eq(self._slot(m, slot))
        return m

    def _register(self, m, value, name, shape=None):
        reg = Signal(shape if shape is not None else value.shape(), name=name,
                     reset_less=True)
        m.d.sync += reg.eq(value)
        return reg

    def _slot(self, m, slot):
        """One accumulator's pipeline; returns its result register."""
        name = f"slot{slot}"
        # Stage 1: the inputs, the scale and the shift in one copy per slot, so that no
        # register fans out to every slot's DSP blocks and muxes. (Yosys merges equal
        # inferred registers, not vendor flip-flop instances.)
        acc = self._register(m, self.acc[slot], f"{name}_acc1")
        shift = self._copy(m, self.shift, f"{name}_shift1")
        scale = self._copy(m, self.scale, f"{name}_scale1")
        shifts = [shift]
        for stage in range(2, PRODUCT_STAGE + SHIFT_STAGES + 1):
            shifts.append(self._register(m, shifts[-1], f"{name}_shift{stage}"))

        product = self._multiply(m, acc, scale, name)  # in register PRODUCT_STAGE
        width = product_width(self._acc_width)
        q = Signal(signed(width + 1), name=f"{name}_q")
        m.d.comb += q.eq(Cat(Const(0, 1), product))
        sign = q[-1]

        # Stages 7 .. 9: the shift, largest amount first. A bit dropped above the
        # window makes the result too large unless it equals the sign. That flag is
        # pipelined apart from the shift, one LUT level a stage: the dropped bits
        # against the sign in groups of three ("partials"), registered; the next stage
        # gates them with the level's select; the one after ORs them into "high".
        value, sign_bit = q, sign
        high, gated, pending = Const(0, 1), [], []
        levels = shift_windows(width + 1)
        for stage in range(SHIFT_STAGES):
            shift_now = shifts[PRODUCT_STAGE - 1 + stage]  # beside this stage's input
            register = PRODUCT_STAGE + 1 + stage
            dropped_sets = []
            stage_levels = levels[stage * SHIFT_LEVELS_PER_STAGE:
                                  (stage + 1) * SHIFT_LEVELS_PER_STAGE]
            for amount, window in stage_levels:
                select_bit = amount.bit_length() - 1
                if len(value) > window:
                    dropped_sets.append((value[window:], select_bit))
                select = shift_now[select_bit]
                value = Cat(*[Mux(select, value[j + amount] if j + amount < len(value)
                                  else sign_bit, value[j]) for j in range(window)])
            high, gated, pending = self._flags(m, f"{name}_flag{register}", high, gated,
                                               pending, dropped_sets, shift_now, sign_bit)
            value = self._register(m, value, f"{name}_shifted{register}")
            sign_bit = self._register(m, sign_bit, f"{name}_sign{register}")

        # Stages 10 and 11: result = sat(u >> 1 + u[0]), the increment registered
        # before the saturation. u >> 1 is in range unless a bit from its sign bit
        # (u[16]) up differs from the sign; the increment overflows only from 0x7fff,
        # detected beside the carry chain rather than after it.
        assert len(value) == KEPT_BITS
        shift_now = shifts[PRODUCT_STAGE - 1 + SHIFT_STAGES]
        high, gated, pending = self._flags(m, f"{name}_flag{PRODUCT_STAGE + SHIFT_STAGES + 1}", high, gated, pending, [],
                                           shift_now, sign_bit)
        assert not pending
        rounded = self._register(m, value[1:] + value[0], f"{name}_rounded",
                                 signed(OUT_WIDTH))
        wide = self._register(m, value[-1] != sign_bit, f"{name}_wide")
        top = self._register(m, value[0] & (value[1:] == (1 << (OUT_WIDTH - 1)) - 1),
                             f"{name}_top")
        sign_bit = self._register(m, sign_bit, f"{name}_sign{PRODUCT_STAGE + SHIFT_STAGES + 1}")
        saturate = Cat(high, *gated, wide, top).any()
        lo, hi = signed_range(OUT_WIDTH)
        return self._register(m, Mux(saturate, Mux(sign_bit, lo, hi), rounded),
                              f"{name}_result", signed(OUT_WIDTH))

    def _flags(self, m, name, high, gated, pending, dropped_sets, shift_now, sign):
        """One register stage of the "too large" flag: ``high`` takes in the ``gated``
        terms, the ``pending`` partials (``(bits, select bit)``) are gated by their
        level's select (``shift_now``, aligned with them), the ``dropped_sets`` of this
        stage become partials. Returns the three, registered."""
        next_high = self._register(m, Cat(high, *gated).any(), f"{name}_high")
        next_gated = [self._register(m, ~shift_now[select_bit] & partials.any(),
                                     f"{name}_gated{index}")
                      for index, (partials, select_bit) in enumerate(pending)]
        next_pending = []
        for index, (bits, select_bit) in enumerate(dropped_sets):
            groups = [_differs(bits[start:start + 3], sign) for start in range(0, len(bits), 3)]
            next_pending.append((self._register(m, Cat(*groups), f"{name}_partial{index}"),
                                 select_bit))
        return next_high, next_gated, next_pending

    def _copy(self, m, value, name):
        """A register of ``value`` that stays a copy of its own in the netlist."""
        reg = Signal(value.shape(), name=name, reset_less=True)
        if self._fabric == ECP5 and self._slots > 1:
            from ternary_accel.hw.rtl.ecp5 import flip_flop
            for bit in range(len(reg)):
                m.submodules[f"{name}_ff{bit}"] = flip_flop(value[bit], reg[bit])
        else:
            m.d.sync += reg.eq(value)
        return reg

    def _multiply(self, m, acc, scale, name):
        """Stages 2 .. 6: the product ``acc * scale``, registered."""
        width = product_width(self._acc_width)
        if self._fabric != ECP5:
            a = self._register(m, acc, f"{name}_mul_a")
            b = self._register(m, scale, f"{name}_mul_b")
            product = self._register(m, a * b, f"{name}_mul_p2", signed(width))
            product = self._register(m, product, f"{name}_mul_p3")
            product = self._register(m, product, f"{name}_mul_p4")
            return self._register(m, product, f"{name}_product")
        scale = Cat(scale, Const(0, DSP_WIDTH - SCALE_WIDTH))  # >= 0 as signed
        total = 0
        for index, (low, bits) in enumerate(dsp_chunks(self._acc_width)):
            top = low + bits == self._acc_width
            chunk = Value.cast(acc)[low:low + bits]
            # the top chunk signed, the others unsigned (a zero above them)
            operand = chunk.as_signed() if top else chunk  # zero-extended to 18 bits
            a = Signal(signed(DSP_WIDTH), name=f"{name}_dsp{index}_a")
            p = Signal(signed(2 * DSP_WIDTH), name=f"{name}_dsp{index}_p")
            m.d.comb += a.eq(operand)
            m.submodules[f"{name}_dsp{index}"] = _mult18x18d(a, scale, p)
            total = total + (self._register(m, p, f"{name}_dsp{index}_p4") << low)
        return self._register(m, total, f"{name}_product", signed(width))
