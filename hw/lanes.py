"""The ternary (or binary) dot-product lane group: K int8 activations, K weight codes,
one exact sum, with no multiplier: each lane selects +a, -a or 0, and a pipelined adder
tree adds the lanes."""

from amaranth.hdl import Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from model.arith import acc_width
from model.encoding import NEGATIVE_BIT, NONZERO_BIT, code_width
from model.quant import ACT_WIDTH, BINARY, TERNARY

from .params import check_positive_int, check_weight_mode

__all__ = ["DotProduct", "select_term", "invalid_code", "tree_levels", "tree_latency"]


def tree_levels(lanes):
    """Adder levels of a balanced tree over ``lanes`` leaves: ``ceil(log2(lanes))``."""
    return (lanes - 1).bit_length()


def tree_latency(lanes, levels_per_stage):
    """Stage registers of a :class:`DotProduct`: one per ``levels_per_stage`` levels, >= 1."""
    return max(1, -(-tree_levels(lanes) // levels_per_stage))


def select_term(activation, code, weight_mode):
    """The product ``w * a`` of one lane as a select, no multiplier.

    Ternary: ``nonzero ? (negative ? -a : a) : 0`` -- the unused code ``0b10``
    (negative without nonzero) therefore selects 0. Binary: ``code ? a : -a``.
    The result is ``ACT_WIDTH + 1`` bits wide so that ``-(-128)`` is exact.
    """
    term_shape = signed(ACT_WIDTH + 1)
    if weight_mode == TERNARY:
        nonzero = code[NONZERO_BIT]
        negative = code[NEGATIVE_BIT]
        return Mux(nonzero, Mux(negative, -activation, activation), Const(0, term_shape))
    assert weight_mode == BINARY
    return Mux(code[0], activation, -activation)


def invalid_code(code, weight_mode):
    """1 when ``code`` is the unused ternary pattern (binary codes are all valid)."""
    if weight_mode == TERNARY:
        return code[NEGATIVE_BIT] & ~code[NONZERO_BIT]
    return Const(0, 1)


class DotProduct(wiring.Component):
    """Pipelined dot product of ``lanes`` int8 activations with ternary/binary weights.

    Each lane turns its code into ``+a``, ``-a`` or ``0`` (:func:`select_term`); a
    balanced adder tree sums the lanes. Every tree node is exactly as wide as the
    range of its leaves needs (``acc_width(leaves)``), so widths grow by at most one
    bit per level and the output is ``acc_width(lanes)`` bits, derived from K.

    A stage register follows every ``levels_per_stage`` adder levels and the last
    level; all stage registers advance together when ``en`` is high.

    Parameters
    ----------
    lanes : int
        Number of lanes K (>= 1).
    weight_mode : str
        ``"ternary"`` (2-bit codes, see :mod:`model.encoding`) or ``"binary"``.
    levels_per_stage : int
        Adder levels between two stage registers (>= 1); 1 is fully pipelined.

    Attributes
    ----------
    activations : Signal(ArrayLayout(signed(8), lanes)), in
        The activations of one beat.
    codes : Signal(ArrayLayout(unsigned(code_width), lanes)), in
        The weight codes of one beat.
    en : Signal, in
        Advance the pipeline.
    invalid : Signal, out
        Combinational: some lane of the current input carries the unused code.
    sum : Signal(signed(acc_width(lanes))), out
        The dot product of the input seen ``latency`` enabled cycles earlier.

    Raises
    ------
    TypeError, ValueError
        On a parameter of the wrong type or out of range.
    """

    def __init__(self, *, lanes, weight_mode=TERNARY, levels_per_stage=1):
        self._lanes = check_positive_int("lanes", lanes)
        self._weight_mode = check_weight_mode(weight_mode)
        self._levels_per_stage = check_positive_int("levels_per_stage", levels_per_stage)
        super().__init__({
            "activations": In(data.ArrayLayout(signed(ACT_WIDTH), lanes)),
            "codes": In(data.ArrayLayout(unsigned(code_width(weight_mode)), lanes)),
            "en": In(1),
            "invalid": Out(1),
            "sum": Out(signed(acc_width(lanes))),
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
    def levels(self):
        """Adder levels of the tree: ``ceil(log2(lanes))``."""
        return tree_levels(self._lanes)

    @property
    def latency(self):
        """Enabled cycles from an input to its sum (number of stage registers)."""
        return tree_latency(self._lanes, self._levels_per_stage)

    @property
    def sum_width(self):
        return acc_width(self._lanes)

    def elaborate(self, platform):
        m = Module()

        # Level 0: one term per lane, (value, leaves) pairs.
        nodes = []
        for lane in range(self._lanes):
            term = Signal(signed(ACT_WIDTH + 1), name=f"term{lane}")
            m.d.comb += term.eq(select_term(self.activations[lane], self.codes[lane],
                                            self._weight_mode))
            nodes.append((term, 1))

        invalid = Const(0, 1)
        for lane in range(self._lanes):
            invalid = invalid | invalid_code(self.codes[lane], self._weight_mode)
        m.d.comb += self.invalid.eq(invalid)

        def register(value, leaves, name):
            reg = Signal(signed(acc_width(leaves)), name=name)
            with m.If(self.en):
                m.d.sync += reg.eq(value)
            return reg

        if self.levels == 0:
            nodes = [(register(nodes[0][0], 1, "stage0_sum"), 1)]

        for level in range(1, self.levels + 1):
            stage = -(-level // self._levels_per_stage) - 1
            registered = level % self._levels_per_stage == 0 or level == self.levels
            next_nodes = []
            for index in range(0, len(nodes), 2):
                if index + 1 == len(nodes):  # odd node out passes up a level
                    value, leaves = nodes[index]
                else:
                    (a, la), (b, lb) = nodes[index], nodes[index + 1]
                    leaves = la + lb
                    value = Signal(signed(acc_width(leaves)),
                                   name=f"level{level}_add{index // 2}")
                    m.d.comb += value.eq(a + b)
                if registered:
                    value = register(value, leaves, f"stage{stage}_node{index // 2}")
                next_nodes.append((value, leaves))
            nodes = next_nodes

        assert len(nodes) == 1
        m.d.comb += self.sum.eq(nodes[0][0])
        return m
