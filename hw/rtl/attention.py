"""The attention unit: its two products, bit for bit
:func:`ternary_accel.model.hwnum.attention_scores` and
:func:`~ternary_accel.model.hwnum.attention_values`, the absmax quantizer of the query
heads and the KV cache, and one query head assembled from them with
:class:`~ternary_accel.hw.rtl.softmax.Softmax` between the products.

* :class:`Scores`: a query head's codes and row factor (``query``, held until the row's
  last key), then one cached key a beat (its ``head_dim`` codes side by side and its
  ``max/qmax`` factor): the exact dot product of the codes (an adder tree), times the
  key's factor (rounded to ``scale_bits``), times the row's factor, rounded half up,
  saturated to ``SCORE_BITS``; one score a beat, a cycle after its key.
* :class:`Values`: one softmax weight and one cached value (codes and factor) a beat:
  the weight times the position's factor, rounded, times each code, summed over the
  row; at the row's last beat the ``head_dim`` sums, shifted to the residual format,
  leave as one vector.
* :class:`AbsmaxQuant`: bit for bit :func:`~ternary_accel.model.hwnum.quantize_absmax`
  of one vector at a time (the query head's, or a key's or value's for the KV cache):
  the elements into a buffer and ``max|z|``; one reciprocal of the maximum (brought to
  ``recip_bits`` bits) on its :class:`~ternary_accel.hw.rtl.scalar.ScalarUnit`; then the
  codes ``round(zn * qmax * r)`` one a beat and, alongside them, the peak and its factor
  (:func:`~ternary_accel.model.hwnum.code_factor`, or
  :func:`~ternary_accel.model.hwnum.score_factor` for a query): two normalising
  multiplies by constants made at elaboration (``reciprocal(qmax)`` for each allowed
  code width, the score scale), done while the divider runs.
* :class:`AttentionHead`: one query head over ``n <= depth`` cached positions, bit for
  bit one head and one query row of
  :meth:`~ternary_accel.model.hwdecoder.HwDecoder.attention`::

      q ──AbsmaxQuant──> slot (codes, score factor) ─┐
      keys ─────────────────────────────────> Scores ──> Softmax ─┐
      values ──────────────────────────────────────────────────> join ──> Values ──>
          serializer (saturate to resid_bits) ──> o

  The slot holds the query for its row of keys and frees at the row's last key, so the
  next head's query is quantized while this head finishes. The cache words
  (:func:`KV_LAYOUT`) carry the codes and their ``code_factor`` (what an
  :class:`AbsmaxQuant` gives the KV writer), not the peak. A row longer than ``depth``
  (the softmax refuses it) or a query longer than ``head_dim`` is dropped in order:
  the head's remaining keys and values are consumed and nothing is given for it.

:func:`~ternary_accel.hw.timing.absmax_cycles` and
:func:`~ternary_accel.hw.timing.attention_head_cycles` count their cycles.
"""

import numpy as np
from amaranth.hdl import Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ternary_accel.hw.rtl.fixed import bit_length, normalise, shift_round
from ternary_accel.hw.rtl.scalar import EXP_WIDTH, RECIPROCAL, ScalarUnit
from ternary_accel.hw.rtl.softmax import Softmax
from ternary_accel.model.hwnum import (DEFAULT, FACTOR_EXP_BITS, SCORE_BITS, HwNumerics,
                                       fixed_constant, reciprocal)

__all__ = ["Scores", "Values", "AbsmaxQuant", "AttentionHead", "KV_LAYOUT", "kv_beat_layout",
           "kv_code_bits"]


class Scores(wiring.Component):
    """Log2-domain scores of one query head against cached keys (module docstring).

    Parameters
    ----------
    head_dim : int
    numerics : model.hwnum.HwNumerics
        ``qk_bits`` (the codes), ``scale_bits`` (the factors).
    """

    def __init__(self, head_dim, numerics=DEFAULT):
        if isinstance(head_dim, bool) or not isinstance(head_dim, int) or head_dim < 1:
            raise ValueError(f"head_dim must be a positive integer, not {head_dim!r}")
        self.head_dim, self.numerics = head_dim, numerics
        c, s = numerics.qk_bits, numerics.scale_bits
        codes = data.ArrayLayout(signed(c), head_dim)
        factor = {"mant": unsigned(s + 1), "exp": signed(EXP_WIDTH + 2)}
        super().__init__({
            "query": In(data.StructLayout({"codes": codes, **factor})),
            "keys": In(stream.Signature(data.StructLayout({"codes": codes, **factor,
                                                           "last": unsigned(1)}))),
            "o": Out(stream.Signature(data.StructLayout({"score": signed(SCORE_BITS),
                                                         "last": unsigned(1)}))),
            "saturated": Out(1),
        })

    def elaborate(self, platform):
        n = self.numerics
        s = n.scale_bits
        m = Module()
        key = self.keys.payload
        dot = Signal(signed(2 * n.qk_bits + self.head_dim.bit_length()))
        m.d.comb += dot.eq(sum(self.query.codes[d] * key.codes[d]
                               for d in range(self.head_dim)))
        p1 = shift_round(dot * key.mant.as_signed(), Const(s, signed(8)))
        shift = Signal(signed(EXP_WIDTH + 4))
        m.d.comb += shift.eq(-(key.exp + s + self.query.exp))
        score = shift_round(p1 * self.query.mant.as_signed(), shift)
        low, high = -(1 << (SCORE_BITS - 1)), (1 << (SCORE_BITS - 1)) - 1
        clipped = Signal()
        valid = Signal()
        advance = ~valid | self.o.ready                   # one output register
        m.d.comb += [self.keys.ready.eq(advance), self.o.valid.eq(valid),
                     self.saturated.eq(valid & self.o.ready & clipped)]
        with m.If(advance):
            m.d.sync += [valid.eq(self.keys.valid),
                         self.o.payload.score.eq(Mux(score > high, high,
                                                     Mux(score < low, low, score))),
                         self.o.payload.last.eq(key.last),
                         clipped.eq((score > high) | (score < low))]
        return m


class Values(wiring.Component):
    """The softmax-weighted sum of one head's cached value codes (module docstring).

    Parameters
    ----------
    head_dim : int
    depth : int
        Positions a row holds at most (sizes the sums).
    numerics : model.hwnum.HwNumerics
        ``v_bits``, ``prob_bits``, ``scale_bits``, ``resid_bits``.
    """

    def __init__(self, head_dim, depth, numerics=DEFAULT):
        for name, value in (("head_dim", head_dim), ("depth", depth)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, not {value!r}")
        self.head_dim, self.depth, self.numerics = head_dim, depth, numerics
        n = numerics
        s = n.scale_bits
        self.weighted_width = n.prob_bits + 2 + s + 2 + n.resid_bits
        self.sum_width = self.weighted_width + n.v_bits + depth.bit_length() + 1
        super().__init__({
            "i": In(stream.Signature(data.StructLayout({
                "weight": unsigned(n.prob_bits + 1),
                "codes": data.ArrayLayout(signed(n.v_bits), head_dim),
                "mant": unsigned(s + 1), "exp": signed(EXP_WIDTH + 2),
                "last": unsigned(1)}))),
            "o": Out(stream.Signature(data.ArrayLayout(signed(self.sum_width), head_dim))),
        })

    def elaborate(self, platform):
        n = self.numerics
        m = Module()
        beat = self.i.payload
        weighted = shift_round(beat.weight * beat.mant, -beat.exp)
        sums = [Signal(signed(self.sum_width), name=f"sum{d}") for d in range(self.head_dim)]
        result = Signal(data.ArrayLayout(signed(self.sum_width), self.head_dim))
        full = Signal()
        m.d.comb += [self.o.valid.eq(full), self.o.payload.eq(result),
                     self.i.ready.eq(~full)]
        with m.If(self.o.valid & self.o.ready):
            m.d.sync += full.eq(0)
        with m.If(self.i.valid & self.i.ready):
            for d in range(self.head_dim):
                total = sums[d] + weighted * beat.codes[d]
                with m.If(beat.last):
                    m.d.sync += [sums[d].eq(0),
                                 result[d].eq((total + (1 << (n.prob_bits - 1)))
                                              >> n.prob_bits)]
                with m.Else():
                    m.d.sync += sums[d].eq(total)
            with m.If(beat.last):
                m.d.sync += full.eq(1)
        return m


def kv_code_bits(numerics):
    """Signed bits of a cached code: the wider of ``qk_bits`` and ``v_bits`` (a KV
    cache of fewer bits, ``kv_bits``, holds its codes in the same field)."""
    return max(numerics.qk_bits, numerics.v_bits)


def KV_LAYOUT(head_dim, numerics=DEFAULT):
    """One cached position of one KV head as the cache holds it and the attention unit
    reads it: ``{codes, mant, exp}``, ``head_dim`` signed :func:`kv_code_bits` codes
    (element 0 in the low bits) and their factor ``max/qmax`` as made by
    :func:`~ternary_accel.model.hwnum.code_factor` (``mant`` unsigned ``scale_bits + 1``,
    ``exp`` signed :data:`~ternary_accel.model.hwnum.FACTOR_EXP_BITS`, the
    accounting's :func:`~ternary_accel.model.hwnum.kv_factor_bits`): what :class:`AbsmaxQuant` gives for the
    position's key or value vector. A ``keys`` / ``values`` beat of
    :class:`AttentionHead` is this word with ``last`` above it (:func:`kv_beat_layout`).
    """
    if isinstance(head_dim, bool) or not isinstance(head_dim, int) or head_dim < 1:
        raise ValueError(f"head_dim must be a positive integer, not {head_dim!r}")
    if not isinstance(numerics, HwNumerics):
        raise TypeError(f"numerics must be an HwNumerics, not {type(numerics).__name__}")
    return data.StructLayout({
        "codes": data.ArrayLayout(signed(kv_code_bits(numerics)), head_dim),
        "mant": unsigned(numerics.scale_bits + 1),
        "exp": signed(FACTOR_EXP_BITS)})


def kv_beat_layout(head_dim, numerics=DEFAULT):
    """A ``keys`` / ``values`` stream beat: the members of :func:`KV_LAYOUT` (at the same
    bit offsets: the beat's low ``KV_LAYOUT.size`` bits are the cache word) and
    ``last``, high on the row's last position."""
    return data.StructLayout({**dict(KV_LAYOUT(head_dim, numerics).members),
                              "last": unsigned(1)})


def _bits_tuple(qmax_bits):
    allowed = (qmax_bits,) if isinstance(qmax_bits, int) and not isinstance(qmax_bits, bool) \
        else tuple(qmax_bits) if isinstance(qmax_bits, (tuple, list)) else None
    if not allowed or any(isinstance(b, bool) or not isinstance(b, int) or not 2 <= b <= 16
                          for b in allowed) or len(set(allowed)) != len(allowed):
        raise ValueError(f"qmax_bits must be a code width 2..16 or a tuple of distinct "
                         f"ones, not {qmax_bits!r}")
    return allowed


class AbsmaxQuant(wiring.Component):
    """The absmax quantizer of one vector at a time with its factor (module docstring).

    Parameters
    ----------
    width : int
        Elements a vector holds at most (the vector buffer).
    qmax_bits : int or tuple of int
        Code width(s) ``b`` (2..16), ``qmax = 2**(b-1) - 1``. Several: the ``bits``
        port chooses one per vector (sampled after its last element; a width not
        among them is an error).
    numerics : model.hwnum.HwNumerics
        ``resid_bits`` (the elements), ``recip_bits`` (the reciprocal), ``scale_bits``
        (the factor).
    score_dim : int, optional
        If given, the factor is :func:`~ternary_accel.model.hwnum.score_factor` of a
        query head of ``score_dim`` elements, else
        :func:`~ternary_accel.model.hwnum.code_factor`.

    Attributes
    ----------
    i : stream of ``{value, last}``
    bits : unsigned, only with several ``qmax_bits``
    codes : stream of ``{code, last}``
        ``code`` signed ``max(qmax_bits)``.
    factor : stream of ``{peak, mant, exp}``
        Once a vector, offered from its first code on until taken: ``peak`` = ``max|z|``
        (1 for an all-zero vector), ``mant * 2**exp`` the factor.
    error : pulse
        A vector longer than ``width`` (or of a ``bits`` not allowed): consumed,
        nothing produced.
    """

    def __init__(self, width, qmax_bits=8, numerics=DEFAULT, *, score_dim=None):
        if isinstance(width, bool) or not isinstance(width, int) or width < 1:
            raise ValueError(f"width must be a positive integer, not {width!r}")
        if not isinstance(numerics, HwNumerics):
            raise TypeError(f"numerics must be an HwNumerics, not {type(numerics).__name__}")
        if score_dim is not None and (isinstance(score_dim, bool)
                                      or not isinstance(score_dim, int) or score_dim < 1):
            raise ValueError(f"score_dim must be a positive integer or None, not {score_dim!r}")
        self.width, self.numerics, self.score_dim = width, numerics, score_dim
        self.allowed = _bits_tuple(qmax_bits)
        self.code_bits = max(self.allowed)
        n = numerics
        ports = {
            "i": In(stream.Signature(data.StructLayout({"value": signed(n.resid_bits),
                                                        "last": unsigned(1)}))),
            "codes": Out(stream.Signature(data.StructLayout({
                "code": signed(self.code_bits), "last": unsigned(1)}))),
            "factor": Out(stream.Signature(data.StructLayout({
                "peak": unsigned(n.resid_bits), "mant": unsigned(n.scale_bits + 1),
                "exp": signed(EXP_WIDTH + 2)}))),
            "error": Out(1),
        }
        if len(self.allowed) > 1:
            ports["bits"] = In(range(self.code_bits + 1))
        super().__init__(ports)

    def constants(self):
        """Per allowed width ``(bits, qmax, r, re)``: ``reciprocal(qmax, scale_bits)``;
        and the factor's constant ``(cm, ce)`` (``(1, 0)`` for a code factor)."""
        s = self.numerics.scale_bits
        table = []
        for b in self.allowed:
            qmax = (1 << (b - 1)) - 1
            r, re = reciprocal(qmax, s)
            table.append((b, qmax, int(r), int(re)))
        if self.score_dim is None:
            return table, (1, 0)
        cm, ce = fixed_constant(np.log2(np.e) / np.sqrt(self.score_dim)
                                * 2.0 ** (self.numerics.softmax_frac
                                          - 2 * self.numerics.resid_frac),
                                s, "score scale")
        return table, (int(cm), int(ce))

    def elaborate(self, platform):
        n = self.numerics
        rb, s, w = n.recip_bits, n.scale_bits, n.resid_bits
        m = Module()
        m.submodules.scalar = scalar = ScalarUnit(n)
        buffer = Memory(shape=signed(w), depth=self.width, init=[])
        m.submodules.buffer = buffer
        write, read = buffer.write_port(), buffer.read_port(domain="comb")
        table, (cm, ce) = self.constants()

        count = Signal(range(self.width + 2))
        index = Signal(range(self.width + 1))
        peak = Signal(w)                                  # max|z|, then at least 1
        value = self.i.payload.value
        magnitude = Signal(w)
        m.d.comb += magnitude.eq(Mux(value < 0, -value, value))

        # the chosen width's constants, sampled after the vector's last element
        qmax = Signal(signed(17))
        r_q = Signal(s + 1)
        re_q = Signal(signed(EXP_WIDTH))
        known = Signal()
        pick = [Signal.like(qmax, name="pick_qmax"), Signal.like(r_q, name="pick_r"),
                Signal.like(re_q, name="pick_re"), Signal(name="pick_known")]
        if len(self.allowed) == 1:
            m.d.comb += [p.eq(v) for p, v in zip(pick, (*table[0][1:], 1))]
        else:
            with m.Switch(self.bits):
                for b, *constants in table:
                    with m.Case(b):
                        m.d.comb += [p.eq(v) for p, v in zip(pick, (*constants, 1))]

        # the factor: normalise(peak * cm), times r_q, normalised (two free-running
        # registers: valid two cycles after peak and r_q hold still)
        prod1 = Signal(w + cm.bit_length())
        m.d.comb += prod1.eq(peak * cm)
        m1, e1 = normalise(m, prod1, s, "f1")
        f1_m = Signal(s + 1)
        f1_e = Signal(signed(EXP_WIDTH))
        prod2 = Signal(2 * s + 2)
        m.d.comb += prod2.eq(f1_m * r_q)
        m2, e2 = normalise(m, prod2, s, "f2")
        m.d.sync += [f1_m.eq(m1[:s + 1]), f1_e.eq(e1),
                     self.factor.payload.mant.eq(m2[:s + 1]),
                     self.factor.payload.exp.eq(f1_e + e2 + re_q + ce)]
        m.d.comb += self.factor.payload.peak.eq(peak)

        # the reciprocal's operand: peak brought to recip_bits bits
        length = bit_length(m, peak, "peak_length")
        shift = Signal(range(w + 1))
        down = Signal(range(w + 1))
        m.d.comb += down.eq(Mux(length > rb, length - rb, 0))

        # out: round(zn * qmax * r), clipped to +-qmax
        r = Signal(scalar.mant_width)
        r_exp = Signal(signed(EXP_WIDTH))
        zn = Signal(signed(w + 1))
        m.d.comb += [read.addr.eq(index), zn.eq(shift_round(read.data, shift))]
        product = Signal(signed(w + 1 + 17 + scalar.mant_width + 1))
        m.d.comb += product.eq(zn * qmax * r.as_signed())
        rounded = Signal(signed(len(product)))
        m.d.comb += rounded.eq(shift_round(product, -r_exp))
        m.d.comb += [self.codes.payload.code.eq(Mux(rounded > qmax, qmax,
                                                    Mux(rounded < -qmax, -qmax, rounded))),
                     self.codes.payload.last.eq(index == count - 1)]
        pending = Signal()                                # the factor not yet taken
        m.d.comb += self.factor.valid.eq(pending)
        with m.If(self.factor.valid & self.factor.ready):
            m.d.sync += pending.eq(0)

        with m.FSM():
            with m.State("IN"):
                m.d.comb += self.i.ready.eq(1)
                with m.If(self.i.valid):
                    with m.If(count < self.width):
                        m.d.comb += [write.addr.eq(count), write.data.eq(value),
                                     write.en.eq(1)]
                    m.d.sync += [count.eq(Mux(count > self.width, count, count + 1)),
                                 peak.eq(Mux(magnitude > peak, magnitude, peak))]
                    with m.If(self.i.payload.last):
                        m.d.sync += [qmax.eq(pick[0]), r_q.eq(pick[1]), re_q.eq(pick[2]),
                                     known.eq(pick[3])]
                        m.next = "CHECK"
            with m.State("CHECK"):
                with m.If((count > self.width) | ~known):
                    m.d.comb += self.error.eq(1)
                    m.d.sync += [count.eq(0), peak.eq(0)]
                    m.next = "IN"
                with m.Else():                   # (the scalar unit is idle here)
                    at_least_one = Mux(peak == 0, 1, peak)
                    m.d.comb += [scalar.i.valid.eq(1), scalar.i.payload.op.eq(RECIPROCAL),
                                 scalar.i.payload.value.eq(shift_round(at_least_one, down))]
                    m.d.sync += [peak.eq(at_least_one), shift.eq(down)]
                    with m.If(scalar.i.ready):
                        m.next = "WAIT"
            with m.State("WAIT"):
                m.d.comb += scalar.o.ready.eq(1)
                with m.If(scalar.o.valid):
                    m.d.sync += [r.eq(scalar.o.payload.mant), r_exp.eq(scalar.o.payload.exp),
                                 index.eq(0), pending.eq(1)]
                    m.next = "OUT"
            with m.State("OUT"):
                m.d.comb += self.codes.valid.eq(1)
                with m.If(self.codes.ready):
                    m.d.sync += index.eq(index + 1)
                    with m.If(index == count - 1):
                        with m.If(~pending | self.factor.ready):
                            m.d.sync += [count.eq(0), peak.eq(0)]
                            m.next = "IN"
                        with m.Else():
                            m.next = "FACTOR"
            with m.State("FACTOR"):                  # the factor taken: the next vector
                with m.If(~pending | self.factor.ready):
                    m.d.sync += [count.eq(0), peak.eq(0)]
                    m.next = "IN"
        return m


class AttentionHead(wiring.Component):
    """One query head's attention over ``n <= depth`` cached positions (module docstring).

    Parameters
    ----------
    head_dim : int
    depth : int
        Positions a row holds at most (the softmax's row buffer).
    numerics : model.hwnum.HwNumerics

    Attributes
    ----------
    q : stream of ``{value, last}``
        The query head's ``head_dim`` residual-format elements (after RoPE); a shorter
        one stands for the query padded with zeros.
    keys, values : streams of :func:`kv_beat_layout`
        The cached positions of the head's KV head, one a beat, in order; the row ends
        at the keys' ``last`` (the values' ``last`` ends a row only when it is dropped).
    o : stream of ``{value, last}``
        The head's ``head_dim`` outputs, saturated to ``resid_bits``.
    error : pulse
        A keys row longer than ``depth``: the head's values row is dropped, no output.
    q_error : pulse
        A query longer than ``head_dim``: the head's keys and values rows are dropped,
        no output.
    saturated, score_saturated : pulses
        An output (a score) clipped to its format.
    """

    def __init__(self, head_dim, depth, numerics=DEFAULT):
        for name, value in (("head_dim", head_dim), ("depth", depth)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, not {value!r}")
        if not isinstance(numerics, HwNumerics):
            raise TypeError(f"numerics must be an HwNumerics, not {type(numerics).__name__}")
        self.head_dim, self.depth, self.numerics = head_dim, depth, numerics
        element = data.StructLayout({"value": signed(numerics.resid_bits),
                                     "last": unsigned(1)})
        beat = kv_beat_layout(head_dim, numerics)
        super().__init__({
            "q": In(stream.Signature(element)),
            "keys": In(stream.Signature(beat)),
            "values": In(stream.Signature(beat)),
            "o": Out(stream.Signature(element)),
            "error": Out(1),
            "q_error": Out(1),
            "saturated": Out(1),
            "score_saturated": Out(1),
        })

    def elaborate(self, platform):
        n = self.numerics
        hd = self.head_dim
        m = Module()
        m.submodules.quant = quant = AbsmaxQuant(hd, n.qk_bits, n, score_dim=hd)
        m.submodules.scores = scores = Scores(hd, n)
        m.submodules.softmax = softmax = Softmax(self.depth, n)
        m.submodules.values = values = Values(hd, self.depth, n)
        keys, vals = self.keys.payload, self.values.payload

        # the query in: a refused one blocks the next until its rows are dropped
        bad = Signal()
        m.d.comb += [quant.i.payload.eq(self.q.payload), quant.i.valid.eq(self.q.valid & ~bad),
                     self.q.ready.eq(quant.i.ready & ~bad), self.q_error.eq(quant.error),
                     self.error.eq(softmax.error),
                     self.score_saturated.eq(scores.saturated)]
        with m.If(quant.error):
            m.d.sync += bad.eq(1)

        # the slot: the query's codes and factor, held for its row of keys
        query = Signal.like(scores.query)
        m.d.comb += scores.query.eq(query)
        index = Signal(range(hd + 1))
        got_codes, got_factor = Signal(), Signal()
        inflight = Signal(range(8))               # rows in the scores, not yet out of Values
        inc, dec = Signal(), Signal()
        m.d.sync += inflight.eq(inflight + inc - dec)
        drop_request, drop_done = Signal(), Signal()
        m.d.comb += [scores.keys.payload.mant.eq(keys.mant),
                     scores.keys.payload.exp.eq(keys.exp),
                     scores.keys.payload.last.eq(keys.last)]
        m.d.comb += [scores.keys.payload.codes[d].eq(keys.codes[d]) for d in range(hd)]
        code, factor = quant.codes, quant.factor
        with m.FSM(name="slot"):
            with m.State("EMPTY"):
                with m.If(bad & (index == 0) & ~got_factor):
                    m.d.sync += bad.eq(0)
                    m.next = "DROP_KEYS"
                with m.Else():
                    m.d.comb += [code.ready.eq(~got_codes), factor.ready.eq(~got_factor)]
                    with m.If(code.valid & ~got_codes):
                        m.d.sync += [query.codes[index].eq(code.payload.code),
                                     index.eq(index + 1), got_codes.eq(code.payload.last)]
                    with m.If(factor.valid & ~got_factor):
                        m.d.sync += [query.mant.eq(factor.payload.mant),
                                     query.exp.eq(factor.payload.exp), got_factor.eq(1)]
                    with m.If((got_codes | (code.valid & code.payload.last))
                              & (got_factor | factor.valid)):
                        m.d.sync += [index.eq(0), got_codes.eq(0), got_factor.eq(0)]
                        m.next = "FULL"
            with m.State("FULL"):
                m.d.comb += [scores.keys.valid.eq(self.keys.valid),
                             self.keys.ready.eq(scores.keys.ready)]
                with m.If(self.keys.valid & scores.keys.ready & keys.last):
                    m.d.comb += inc.eq(1)
                    m.d.sync += query.eq(0)
                    m.next = "EMPTY"
            with m.State("DROP_KEYS"):
                m.d.comb += self.keys.ready.eq(1)
                with m.If(self.keys.valid & keys.last):
                    m.next = "DROP_VALUES"
            with m.State("DROP_VALUES"):
                m.d.comb += drop_request.eq(1)
                with m.If(drop_done):
                    m.next = "EMPTY"

        # scores into the softmax; its weights joined with the values
        wiring.connect(m, scores.o, softmax.i)
        m.d.comb += [values.i.payload.weight.eq(softmax.o.payload.weight),
                     values.i.payload.mant.eq(vals.mant), values.i.payload.exp.eq(vals.exp),
                     values.i.payload.last.eq(softmax.o.payload.last)]
        m.d.comb += [values.i.payload.codes[d].eq(vals.codes[d]) for d in range(hd)]
        with m.FSM(name="values"):
            with m.State("JOIN"):
                m.d.comb += [values.i.valid.eq(softmax.o.valid & self.values.valid),
                             softmax.o.ready.eq(values.i.ready & self.values.valid),
                             self.values.ready.eq(values.i.ready & softmax.o.valid)]
                with m.If(values.i.valid & values.i.ready & softmax.o.payload.last):
                    m.d.comb += dec.eq(1)
                with m.If(softmax.error):                  # the row refused: drop its values
                    m.d.comb += dec.eq(1)
                    m.next = "DROP"
                with m.Elif(drop_request & (inflight == 0)):
                    m.next = "DROP_QUERY"
            with m.State("DROP"):
                m.d.comb += self.values.ready.eq(1)
                with m.If(self.values.valid & vals.last):
                    m.next = "JOIN"
            with m.State("DROP_QUERY"):
                m.d.comb += self.values.ready.eq(1)
                with m.If(self.values.valid & vals.last):
                    m.d.comb += drop_done.eq(1)
                    m.next = "JOIN"

        # out: the sums one a beat, saturated
        width = values.sum_width
        sums = Signal(data.ArrayLayout(signed(width), hd))
        left = Signal(range(hd + 1))
        low, high = -(1 << (n.resid_bits - 1)), (1 << (n.resid_bits - 1)) - 1
        head = sums[0]
        clipped = (head > high) | (head < low)
        m.d.comb += [self.o.valid.eq(left != 0),
                     self.o.payload.value.eq(Mux(head > high, high, Mux(head < low, low, head))),
                     self.o.payload.last.eq(left == 1),
                     self.saturated.eq(self.o.valid & self.o.ready & clipped),
                     values.o.ready.eq((left == 0) | ((left == 1) & self.o.ready))]
        with m.If(self.o.valid & self.o.ready):
            m.d.sync += [sums.eq(sums.as_value() >> width), left.eq(left - 1)]
        with m.If(values.o.valid & values.o.ready):
            m.d.sync += [sums.eq(values.o.payload), left.eq(hd)]
        return m
