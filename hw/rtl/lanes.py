"""The ternary (or binary) dot-product lane group: K int8 (or int4) activations, K weight codes,
one exact sum, with no multiplier: each lane selects +a, -a or 0, and a pipelined adder
tree adds the lanes.

Negation costs no adder: a lane with weight -1 passes the ones' complement ``~a``
(``= -a - 1``) and a correction bit 1; every adder of the tree takes one pending
correction as its carry-in. K lanes have K corrections and the tree K - 1 adders, so
one correction is left at the root: the lane group hands it out as ``carry`` for the
consumer's adder (the matmul unit's accumulator), or adds it in a final stage.
"""

from amaranth.hdl import Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from ternary_accel.model.arith import acc_width, act_range
from ternary_accel.model.encoding import NEGATIVE_BIT, NONZERO_BIT, code_width
from ternary_accel.model.quant import ACT_WIDTH, BINARY, INT8, TERNARY

from ternary_accel.hw.params import check_bool, check_positive_int, check_weight_mode
from ternary_accel.hw.params import ECP5, GENERIC, check_act_width, check_fabric
from ternary_accel.hw.timing import tree_latency, tree_levels

__all__ = ["DotProduct", "lane_term", "add_with_carry", "invalid_code", "tree_levels",
           "tree_latency", "GENERIC", "ECP5", "check_fabric", "check_act_width"]


def lane_term(activation, code, weight_mode):
    """One lane's product ``w * a`` as ``(term, correction)`` with ``w * a = term +
    correction``, and no adder.

    Ternary: ``(nonzero ? a : 0) ^ negative`` with correction ``negative``
    (``~a + 1 = -a``); the unused code ``0b10`` (negative without nonzero) gives
    ``~0 + 1 = 0``. The correction is the code's own bit, so it costs no LUT.
    Binary: ``code ? a : ~a`` with correction ``~code``. The "int8" baseline
    multiplies (correction 0). Terms are ``acc_width(1, mode, act_width)`` bits (the
    activation's width + 1) so ``-(-128)`` (``-(-8)`` for int4) is exact.
    """
    width = acc_width(1, weight_mode, len(activation))
    wide = activation.as_signed()
    if weight_mode == TERNARY:
        nonzero, negate = code[NONZERO_BIT], code[NEGATIVE_BIT]
        mask = negate.replicate(width).as_signed()
        return Mux(nonzero, wide, Const(0, signed(width))) ^ mask, negate
    if weight_mode == BINARY:
        negate = ~code[0]
        return wide ^ negate.replicate(width).as_signed(), negate
    assert weight_mode == INT8
    return activation * code.as_signed(), None


def add_with_carry(a, b, carry=None):
    """``a + b + carry``: Yosys maps the carry to the chain's carry-in, which on ECP5
    rides in the carry-in feeder cell nextpnr inserts for every chain anyway (an extra
    low bit of both operands, ``(2a + c) + (2b + c)``, measured half a cell worse)."""
    return a + b if carry is None else a + b + carry


def invalid_code(code, weight_mode):
    """1 when ``code`` is the unused ternary pattern (binary and int8 codes are all valid)."""
    if weight_mode == TERNARY:
        return code[NEGATIVE_BIT] & ~code[NONZERO_BIT]
    return Const(0, 1)


class DotProduct(wiring.Component):
    """Pipelined dot product of ``lanes`` int8 (or int4) activations with ternary/binary
    weights.

    Each lane turns its code into a term and a correction bit (:func:`lane_term`); a
    balanced adder tree sums the terms, each adder absorbing one correction as its
    carry-in. Every tree node is exactly as wide as the range of its leaves needs
    (``acc_width(leaves)``), so widths grow by at most one bit per level.

    A stage register follows every ``levels_per_stage`` adder levels and the last
    level; all stage registers advance together when ``en`` is high.

    Parameters
    ----------
    lanes : int
        Number of lanes K (>= 1).
    weight_mode : str
        ``"ternary"`` (2-bit codes, see :mod:`model.encoding`), ``"binary"``, or the
        ``"int8"`` multiplier baseline.
    levels_per_stage : int
        Adder levels between two stage registers (>= 1); 1 is fully pipelined.
    carry_out : bool
        Hand the last correction out on ``carry`` (the dot product is
        ``sum + carry``) instead of adding it in one more stage (``sum`` exact).
    fabric : str
        ``"generic"`` (portable Verilog, the default) or ``"ecp5"``: the same tree,
        registers and latency, built from Lattice ``CCU2C`` carry cells with every other
        lane folded into the first adder level (:mod:`hw.fpga.ecp5`) and node widths
        trimmed to their exact range. Ignored for the int8 baseline.
    act_width : int
        Bits of an activation: 8 (the default) or 4 (BitNet a4.8's int4 inputs, -8..7;
        every tree node is then 4 bits narrower). Not with the int8 baseline, which is
        an int8 x int8 multiplier.
    invalid_flag : bool
        With the ``invalid`` output (the default). The matmul unit builds its lane
        groups without it: it flags invalid codes itself, registered, from the weight
        stream, so a lane group's combinational OR over its lanes would be dead logic.

    Attributes
    ----------
    activations : Signal(ArrayLayout(signed(act_width), lanes)), in
        The activations of one beat.
    codes : Signal(ArrayLayout(unsigned(code_width), lanes)), in
        The weight codes of one beat.
    en : Signal, in
        Advance the pipeline.
    invalid : Signal, out
        With ``invalid_flag``. Combinational: some lane of the current input carries the
        unused code.
    sum : Signal(signed(acc_width(lanes, weight_mode, act_width))), out
        The dot product of the input seen ``latency`` enabled cycles earlier (less
        ``carry`` with ``carry_out``).
    carry : Signal, out
        With ``carry_out``: the correction still to add.

    Raises
    ------
    TypeError, ValueError
        On a parameter of the wrong type or out of range, or ``act_width=4`` with the
        int8 baseline.
    """

    def __init__(self, *, lanes, weight_mode=TERNARY, levels_per_stage=1, carry_out=False,
                 fabric=GENERIC, act_width=ACT_WIDTH, invalid_flag=True):
        self._lanes = check_positive_int("lanes", lanes)
        self._weight_mode = check_weight_mode(weight_mode)
        self._levels_per_stage = check_positive_int("levels_per_stage", levels_per_stage)
        self._carry_out = check_bool("carry_out", carry_out)
        self._fabric = check_fabric(fabric)
        self._act_width = check_act_width(act_width, weight_mode)
        self._invalid_flag = check_bool("invalid_flag", invalid_flag)
        super().__init__({
            "activations": In(data.ArrayLayout(signed(act_width), lanes)),
            "codes": In(data.ArrayLayout(unsigned(code_width(weight_mode)), lanes)),
            "en": In(1),
            **({"invalid": Out(1)} if invalid_flag else {}),
            "sum": Out(signed(acc_width(lanes, weight_mode, act_width))),
            "carry": Out(1),
        })

    @property
    def lanes(self):
        return self._lanes

    @property
    def weight_mode(self):
        return self._weight_mode

    @property
    def levels_per_stage(self):
        return self._levels_per_stage

    @property
    def carry_out(self):
        return self._carry_out

    @property
    def fabric(self):
        return self._fabric

    @property
    def act_width(self):
        return self._act_width

    @property
    def invalid_flag(self):
        return self._invalid_flag

    @property
    def levels(self):
        """Adder levels of the tree: ``ceil(log2(lanes))``."""
        return tree_levels(self._lanes)

    @property
    def has_correction(self):
        """Whether a correction is left at the root (not for the int8 baseline)."""
        return self._weight_mode != INT8

    @property
    def latency(self):
        """Enabled cycles from an input to its sum: the tree's stage registers, and the
        final correction stage unless ``carry_out``."""
        final = not self._carry_out and self.has_correction
        return tree_latency(self._lanes, self._levels_per_stage) + (1 if final else 0)

    @property
    def sum_width(self):
        return acc_width(self._lanes, self._weight_mode, self._act_width)

    def _flag_invalid(self, m):
        """``invalid``: an OR over the lanes' codes (with ``invalid_flag``)."""
        if not self._invalid_flag:
            return
        invalid = Const(0, 1)
        for lane in range(self._lanes):
            invalid = invalid | invalid_code(self.codes[lane], self._weight_mode)
        m.d.comb += self.invalid.eq(invalid)

    def _reduce(self, nodes, add, register_node):
        """Walk the balanced tree over ``nodes`` (LSB lane first), level by level:
        ``add(a, b, name)`` makes a node of two, ``register_node(node, name)`` puts a node
        behind a stage register (every ``levels_per_stage`` levels and after the last).
        The odd node out of a level passes up unchanged. Returns the root."""
        if self.levels == 0:
            nodes = [register_node(nodes[0], "stage0_node0")]
        for level in range(1, self.levels + 1):
            stage = -(-level // self._levels_per_stage) - 1
            registered = level % self._levels_per_stage == 0 or level == self.levels
            next_nodes = []
            for index in range(0, len(nodes), 2):
                if index + 1 == len(nodes):  # odd node out passes up a level
                    node = nodes[index]
                else:
                    node = add(nodes[index], nodes[index + 1],
                               f"level{level}_add{index // 2}")
                if registered:
                    node = register_node(node, f"stage{stage}_node{index // 2}")
                next_nodes.append(node)
            nodes = next_nodes
        root, = nodes
        return root

    def elaborate(self, platform):
        if self._fabric == ECP5 and self.has_correction:
            return self._elaborate_ecp5()
        m = Module()
        mode, act_width = self._weight_mode, self._act_width

        self._flag_invalid(m)

        # Level 0: one node per lane: (value, leaves, pending corrections).
        nodes = []
        for lane in range(self._lanes):
            value, correction = lane_term(self.activations[lane], self.codes[lane], mode)
            term = Signal(signed(acc_width(1, mode, act_width)), name=f"term{lane}")
            m.d.comb += term.eq(value)
            pending = []
            if correction is not None:
                bit = Signal(name=f"term{lane}_correction")
                m.d.comb += bit.eq(correction)
                pending = [bit]
            nodes.append((term, 1, pending))

        def register(value, shape, name):
            reg = Signal(shape, name=name)
            with m.If(self.en):
                m.d.sync += reg.eq(value)
            return reg

        def register_node(node, name):
            value, leaves, pending = node
            return (register(value, signed(acc_width(leaves, mode, act_width)), name), leaves,
                    [register(bit, 1, f"{name}_correction{i}")
                     for i, bit in enumerate(pending)])

        def add(a_node, b_node, name):
            (a, la, pa), (b, lb, pb) = a_node, b_node
            leaves, pending = la + lb, pa + pb
            carry_in = pending.pop(0) if pending else None
            value = Signal(signed(acc_width(leaves, mode, act_width)), name=name)
            m.d.comb += value.eq(add_with_carry(a, b, carry_in))
            return (value, leaves, pending)

        root, _, pending = self._reduce(nodes, add, register_node)
        assert len(pending) == (1 if self.has_correction else 0)
        leftover = pending[0] if pending else Const(0, 1)
        if self._carry_out or not self.has_correction:
            m.d.comb += [self.sum.eq(root), self.carry.eq(leftover)]
        else:
            final = register(root + leftover, signed(self.sum_width), "final_sum")
            m.d.comb += [self.sum.eq(final), self.carry.eq(0)]
        return m

    def _elaborate_ecp5(self):
        """The tree of :meth:`elaborate` from ``CCU2C`` chains: level 1 adds the term of
        lane ``2i`` (one LUT4 per bit) to lane ``2i + 1`` folded into the chain, so half
        the lanes need no select LUT; each chain absorbs one correction as its carry-in.
        Nodes are as wide as their exact range (ones' complement terms are in
        ``[-128, 127]``, ``[-8, 7]`` for int4), one bit narrower than
        ``acc_width(leaves)``."""
        from ternary_accel.hw.rtl.ecp5 import carry_chain, fold_half, plain_half, signed_bits

        m = Module()
        mode = self._weight_mode
        self._flag_invalid(m)

        act_width = self._act_width
        lo_term, hi_term = act_range(act_width)  # a ones' complement term: ~a or a

        def materialize(node):
            """A raw lane's term and correction, through one LUT4 per bit."""
            if node["raw"] is None:
                return node
            lane = node["raw"]
            value, correction = lane_term(self.activations[lane], self.codes[lane], mode)
            term = Signal(signed(act_width), name=f"term{lane}")
            bit = Signal(name=f"term{lane}_correction")
            m.d.comb += [term.eq(value), bit.eq(correction)]
            return {"raw": None, "value": term, "range": (lo_term, hi_term),
                    "pending": [bit]}

        def register(value, shape, name):
            reg = Signal(shape, name=name)
            with m.If(self.en):
                m.d.sync += reg.eq(value)
            return reg

        def register_node(node, name):
            node = materialize(node)
            lo, hi = node["range"]
            return {"raw": None, "range": node["range"],
                    "value": register(node["value"], signed(signed_bits(lo, hi)), name),
                    "pending": [register(bit, 1, f"{name}_correction{i}")
                                for i, bit in enumerate(node["pending"])]}

        def add(a, b, name):
            if b["raw"] is not None:  # fold lane b into the chain
                a = materialize(a)
                lane = b["raw"]
                fold = [lane_term(self.activations[lane], self.codes[lane], mode)[1]]
                lo = a["range"][0] + lo_term
                hi = a["range"][1] + hi_term
                pending = a["pending"] + fold
                width = signed_bits(lo, hi + 1)
                halves = [fold_half(a["value"], self.activations[lane],
                                    self.codes[lane], mode, i) for i in range(width)]
            else:
                a, b = materialize(a), materialize(b)
                lo = a["range"][0] + b["range"][0]
                hi = a["range"][1] + b["range"][1]
                pending = a["pending"] + b["pending"]
                width = signed_bits(lo, hi + 1)
                halves = [plain_half(a["value"], b["value"], i) for i in range(width)]
            carry = pending.pop(0)
            total = carry_chain(m, name, halves, carry)
            return {"raw": None, "value": total.as_signed(), "range": (lo, hi + 1),
                    "pending": pending}

        root = self._reduce([{"raw": lane} for lane in range(self._lanes)], add,
                            register_node)
        assert len(root["pending"]) == 1
        leftover = root["pending"][0]
        if self._carry_out:
            m.d.comb += [self.sum.eq(root["value"]), self.carry.eq(leftover)]
        else:
            zero = Const(0, 1)
            total = carry_chain(m, "final", [plain_half(root["value"], zero, i)
                                             for i in range(self.sum_width)], leftover)
            final = register(total.as_signed(), signed(self.sum_width), "final_sum")
            m.d.comb += [self.sum.eq(final), self.carry.eq(0)]
        return m
