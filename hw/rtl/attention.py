"""The attention unit: its two products, bit for bit
:func:`ternary_accel.model.hwnum.attention_scores` and
:func:`~ternary_accel.model.hwnum.attention_values`, the absmax quantizer of the query
heads and the KV cache, and one query head assembled from them with
:class:`~ternary_accel.hw.rtl.softmax.Softmax` between the products.

* :class:`Scores`: a query head's codes and row factor (``query``, held until the row's
  last key), then one cached key a beat (its ``head_dim`` codes side by side and its
  ``max/qmax`` factor), consumed ``lanes`` codes a cycle over ``head_dim / lanes``
  cycles: the exact dot product of the codes (``lanes`` products a cycle, summed), then
  once a key, pipelined: times the key's factor (rounded to ``scale_bits``), times the
  row's factor, rounded half up, saturated to ``SCORE_BITS``; one score a key.
* :class:`Values`: one softmax weight and one cached value (codes and factor) a beat,
  consumed ``lanes`` codes a cycle: the weight times the position's factor, rounded
  (once a position), times each code, summed over the row (``lanes`` sums a cycle); at
  the row's last beat the ``head_dim`` sums, shifted to the residual format, leave as
  one vector. Its widths are the numerics' ranges (:func:`value_bounds`).
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

from fractions import Fraction

import numpy as np
from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ternary_accel.hw.rtl.fixed import bit_length, normalise, shift_round
from ternary_accel.hw.rtl.scalar import EXP_WIDTH, RECIPROCAL, ScalarUnit
from ternary_accel.hw.rtl.softmax import Softmax
from ternary_accel.hw.timing import attention_lanes
from ternary_accel.model.hwnum import (DEFAULT, FACTOR_EXP_BITS, SCORE_BITS, HwNumerics,
                                       code_factor, fixed_constant, reciprocal, round_shift)

__all__ = ["Scores", "Values", "AbsmaxQuant", "AttentionHead", "KV_LAYOUT", "kv_beat_layout",
           "kv_code_bits", "value_bounds"]


class Scores(wiring.Component):
    """Log2-domain scores of one query head against cached keys (module docstring).

    Parameters
    ----------
    head_dim : int
    numerics : model.hwnum.HwNumerics
        ``qk_bits`` (the codes), ``scale_bits`` (the factors).
    lanes : int, optional
        Code products a cycle, a divisor of ``head_dim``
        (:func:`~ternary_accel.hw.timing.attention_lanes`: by default the largest divisor
        not above :data:`~ternary_accel.hw.timing.ATTENTION_LANES`). A key beat stays on
        ``keys`` for ``head_dim / lanes`` cycles (taken at its last).

    A key's codes are summed ``lanes`` products a cycle (the query's and the key's codes
    ``lanes`` at a time, chunk ``k`` the codes ``k lanes ..``); then, once a key, in
    :data:`~ternary_accel.hw.timing.ATTENTION_PIPELINE` registers: the exact dot product
    (with the key's and the row's factors), times the key's factor rounded to
    ``scale_bits``, times the row's factor, and into the output register the shift and the
    saturation. The row's factor is taken with the key's last codes, so ``query`` need
    only hold until the row's last key is taken.
    """

    def __init__(self, head_dim, numerics=DEFAULT, *, lanes=None):
        if isinstance(head_dim, bool) or not isinstance(head_dim, int) or head_dim < 1:
            raise ValueError(f"head_dim must be a positive integer, not {head_dim!r}")
        self.head_dim, self.numerics = head_dim, numerics
        self.lanes = attention_lanes(head_dim, lanes)
        self.beats = head_dim // self.lanes
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
        s, c = n.scale_bits, n.qk_bits
        lanes, beats = self.lanes, self.beats
        m = Module()
        key = self.keys.payload

        # the codes lanes at a time: chunk `beat` of the query's and of the key's
        beat = Signal(range(beats))
        q_chunk, k_chunk = _chunk(self.query.codes, beat, lanes, c), \
            _chunk(key.codes, beat, lanes, c)
        partial = Signal(signed(2 * c + lanes.bit_length()))
        m.d.comb += partial.eq(sum(q_chunk[k] * k_chunk[k] for k in range(lanes)))
        dot_shape = signed(2 * c + self.head_dim.bit_length())
        acc = Signal(dot_shape)
        final = beat == beats - 1

        # the pipeline: s1 the dot product and the factors, s2 times the key's factor,
        # s3 times the row's factor, then the shift and the saturation (the output)
        v1, v2, v3, valid = Signal(), Signal(), Signal(), Signal()
        advance = ~valid | self.o.ready
        a3 = ~v3 | advance
        a2 = ~v2 | a3
        a1 = ~v1 | a2
        dot, kmant, kexp = Signal(dot_shape), Signal(s + 1), Signal(signed(EXP_WIDTH + 2))
        qmant, qexp = Signal(s + 1), Signal(signed(EXP_WIDTH + 2))
        last1, last2, last3 = Signal(), Signal(), Signal()
        p1 = Signal(signed(len(dot) + s + 2 - s + 1))
        qmant2 = Signal(s + 1)
        shift2, shift3 = Signal(signed(EXP_WIDTH + 4)), Signal(signed(EXP_WIDTH + 4))
        product = Signal(signed(len(p1) + s + 2))

        m.d.comb += self.keys.ready.eq(final & a1)
        with m.If(self.keys.valid & ~final):
            m.d.sync += [acc.eq(acc + partial), beat.eq(beat + 1)]
        with m.If(a1):
            m.d.sync += [v1.eq(self.keys.valid & final), dot.eq(acc + partial),
                         kmant.eq(key.mant), kexp.eq(key.exp),
                         qmant.eq(self.query.mant), qexp.eq(self.query.exp),
                         last1.eq(key.last)]
            with m.If(self.keys.valid & final):
                m.d.sync += [acc.eq(0), beat.eq(0)]
        with m.If(a2):
            m.d.sync += [v2.eq(v1), p1.eq(shift_round(dot * kmant.as_signed(),
                                                      Const(s, signed(8)))),
                         shift2.eq(-(kexp + s + qexp)), qmant2.eq(qmant), last2.eq(last1)]
        with m.If(a3):
            m.d.sync += [v3.eq(v2), product.eq(p1 * qmant2.as_signed()),
                         shift3.eq(shift2), last3.eq(last2)]

        # round(product / 2**shift): a right shift past the product's width gives 0, a
        # left shift of more than SCORE_BITS saturates as any longer one
        score = Signal(signed(len(product) + 1 + SCORE_BITS))
        right = Signal(range(len(product) + 2))
        left = Signal(range(SCORE_BITS + 1))
        m.d.comb += [right.eq(Mux(shift3 > len(product) + 1, len(product) + 1,
                                  Mux(shift3 > 0, shift3, 0))),
                     left.eq(Mux(shift3 < -SCORE_BITS, SCORE_BITS,
                                 Mux(shift3 < 0, -shift3, 0)))]
        half = Mux(right == 0, 0, Const(1, len(product) + 1) << (right - 1)[:len(right)])
        m.d.comb += score.eq(((product + half) >> right) << left)
        low, high = -(1 << (SCORE_BITS - 1)), (1 << (SCORE_BITS - 1)) - 1
        clipped = Signal()
        m.d.comb += [self.o.valid.eq(valid),
                     self.saturated.eq(valid & self.o.ready & clipped)]
        with m.If(advance):
            m.d.sync += [valid.eq(v3),
                         self.o.payload.score.eq(Mux(score > high, high,
                                                     Mux(score < low, low, score))),
                         self.o.payload.last.eq(last3),
                         clipped.eq((score > high) | (score < low))]
        return m


def _chunk(codes, index, lanes, bits):
    """Elements ``index * lanes ..`` of the array ``codes`` (of ``bits``-bit signed
    elements) as a list of ``lanes`` signed values: a multiplexer of the chunks."""
    if len(codes) == lanes:
        return [codes[k] for k in range(lanes)]
    word = codes.as_value().word_select(index, lanes * bits)
    return [word[k * bits:(k + 1) * bits].as_signed() for k in range(lanes)]


def value_bounds(numerics, depth, value_bits=None):
    """The ranges :class:`Values` is sized for: ``(weight_max, weighted_max, exp_max,
    sum_max)``.

    * ``weight_max``: a softmax weight is ``round(p r 2**(e + prob_bits))`` with ``p`` at
      most the row's sum and ``r 2**e`` its reciprocal, whose two roundings (the sum to
      ``recip_bits`` bits, ``m``, then ``2**(2P-1) / m``) are each at most ``2**-P``
      relative: a weight is at most ``round(2**prob_bits (1 + 2**-P)**2)`` (the
      softmax's exhaustive maximum is ``2**prob_bits`` at the defaults).
    * a cached position's factor ``mant 2**exp`` is ``code_factor(peak, qmax)`` with the
      peak ``max|z|`` of residual-format elements, at most ``2**(resid_bits - 1)`` (the
      most negative element), and ``qmax = 2**(b-1) - 1`` of a code width ``b`` from
      ``value_bits`` (default ``v_bits``) to ``v_bits``; ``code_factor`` is monotonic in
      the peak (each step rounds a monotonic function), so ``weighted = round_shift(
      weight mant, -exp)`` is at most ``weighted_max``, its value at ``weight_max`` and
      the largest peak (the most over the widths; ``exp_max`` the largest exponent there).
    * a code is at most ``qmax`` in magnitude (absmax codes), so a product is at most
      ``weighted_max(b) qmax(b)`` and a sum of at most ``depth`` products (each weight
      up to ``weight_max``: a row's weights need not sum to one) at most ``sum_max``.
    """
    n = numerics
    low = n.v_bits if value_bits is None else value_bits
    if isinstance(low, bool) or not isinstance(low, int) or not 2 <= low <= n.v_bits:
        raise ValueError(f"value_bits must be a code width 2..v_bits ({n.v_bits}), "
                         f"not {value_bits!r}")
    one = Fraction(1 << n.prob_bits)
    weight_max = int(one * (1 + Fraction(1, 1 << n.recip_bits)) ** 2 + Fraction(1, 2))
    peak = np.array([1 << (n.resid_bits - 1)])
    weighted_max = product_max = 0
    exp_max = None
    for bits in range(low, n.v_bits + 1):
        qmax = (1 << (bits - 1)) - 1
        mant, exp = code_factor(peak, np.array([qmax]), n)
        weighted = int(round_shift(weight_max * mant, -exp)[0])
        weighted_max = max(weighted_max, weighted)
        exp_max = int(exp[0]) if exp_max is None else max(exp_max, int(exp[0]))
        product_max = max(product_max, weighted * qmax)
    return weight_max, weighted_max, exp_max, depth * product_max


class Values(wiring.Component):
    """The softmax-weighted sum of one head's cached value codes (module docstring).

    Parameters
    ----------
    head_dim : int
    depth : int
        Positions a row holds at most (sizes the sums).
    numerics : model.hwnum.HwNumerics
        ``v_bits``, ``prob_bits``, ``scale_bits``, ``resid_bits``.
    lanes : int, optional
        Weighted products a cycle (as :class:`Scores`): a beat stays on ``i`` for
        ``head_dim / lanes`` cycles, taken at its last.
    value_bits : int, optional
        The narrowest code width of the cached values (default ``v_bits``; a KV cache of
        fewer bits, the decoder's ``kv_bits``, needs its width: its factors are larger).

    The widths are the numerics' ranges (:func:`value_bounds`): ``weighted_width``
    unsigned bits of the weighted factor, ``sum_width`` signed bits of the sums,
    ``out_width`` of the outputs. A beat outside them (a weight above the softmax's, a
    factor of a peak above ``2**(resid_bits - 1)`` or of a code width below
    ``value_bits``) wraps.

    Once a position, in :data:`~ternary_accel.hw.timing.ATTENTION_PIPELINE` registers:
    the beat's weight and factor (with ``lanes`` codes a cycle); the weighted factor
    ``round_shift(weight mant, -exp)``; its ``lanes`` products with the codes; then the
    sums, ``lanes`` a cycle (a rotating register: the chunk summed is always the first).
    At the row's last position the sums, shifted to the residual format, go into the
    output register (``lanes`` a cycle) and leave as one vector.
    """

    def __init__(self, head_dim, depth, numerics=DEFAULT, *, lanes=None, value_bits=None):
        for name, value in (("head_dim", head_dim), ("depth", depth)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, not {value!r}")
        self.head_dim, self.depth, self.numerics = head_dim, depth, numerics
        self.lanes = attention_lanes(head_dim, lanes)
        self.beats = head_dim // self.lanes
        n = numerics
        s = n.scale_bits
        self.weight_max, self.weighted_max, self.exp_max, self.sum_max = \
            value_bounds(n, depth, value_bits)
        self.weighted_width = self.weighted_max.bit_length()
        self.sum_width = self.sum_max.bit_length() + 1
        self.out_width = ((self.sum_max >> n.prob_bits) + 1).bit_length() + 1
        super().__init__({
            "i": In(stream.Signature(data.StructLayout({
                "weight": unsigned(n.prob_bits + 1),
                "codes": data.ArrayLayout(signed(n.v_bits), head_dim),
                "mant": unsigned(s + 1), "exp": signed(EXP_WIDTH + 2),
                "last": unsigned(1)}))),
            "o": Out(stream.Signature(data.ArrayLayout(signed(self.out_width), head_dim))),
        })

    def elaborate(self, platform):
        n = self.numerics
        s, v, pb = n.scale_bits, n.v_bits, n.prob_bits
        lanes, beats = self.lanes, self.beats
        W, sw, ow = self.weighted_width, self.sum_width, self.out_width
        m = Module()
        beat_in = self.i.payload
        beat = Signal(range(beats))
        final = beat == beats - 1

        # the stages: 1 the beat's weight, factor and lanes codes; 2 the weighted
        # factor; 3 the products; then the sums
        v1, v2, v3 = Signal(), Signal(), Signal()
        full = Signal()
        last1, last2, last3 = Signal(), Signal(), Signal()
        index1, index2, index3 = (Signal(range(beats), name=f"index{k}") for k in (1, 2, 3))
        weight, mant, exp = Signal(pb + 1), Signal(s + 1), Signal(signed(EXP_WIDTH + 2))
        codes1 = [Signal(signed(v), name=f"codes1_{k}") for k in range(lanes)]
        codes2 = [Signal(signed(v), name=f"codes2_{k}") for k in range(lanes)]
        weighted = Signal(W)
        products = [Signal(signed(W + v), name=f"product{k}") for k in range(lanes)]
        taken = self.o.valid & self.o.ready
        a3 = ~v3 | ~last3 | ~full | self.o.ready          # the output register free
        a2 = ~v2 | a3
        a1 = ~v1 | a2
        m.d.comb += self.i.ready.eq(final & a1)
        with m.If(a1):
            m.d.sync += [v1.eq(self.i.valid), weight.eq(beat_in.weight),
                         mant.eq(beat_in.mant), exp.eq(beat_in.exp),
                         last1.eq(beat_in.last), index1.eq(beat)]
            m.d.sync += [a.eq(b) for a, b in zip(codes1, _chunk(beat_in.codes, beat, lanes, v))]
            with m.If(self.i.valid):
                m.d.sync += beat.eq(Mux(final, 0, beat + 1))

        # round_shift(weight * mant, -exp): right shifts past the product give 0; left
        # shifts of the numerics' factors are at most exp_max
        x = Signal(pb + 1 + s + 1)
        m.d.comb += x.eq(weight * mant)
        right = Signal(range(len(x) + 2))
        m.d.comb += right.eq(Mux(exp < -(len(x) + 1), len(x) + 1, Mux(exp < 0, -exp, 0)))
        half = Mux(right == 0, 0, Const(1, len(x) + 1) << (right - 1)[:len(right)])
        shifted = (x + half) >> right
        if self.exp_max > 0:
            left = Signal(range(self.exp_max + 1))
            m.d.comb += left.eq(Mux(exp > self.exp_max, self.exp_max, Mux(exp > 0, exp, 0)))
            shifted = shifted << left
        with m.If(a2):
            m.d.sync += [v2.eq(v1), weighted.eq(shifted), last2.eq(last1), index2.eq(index1)]
            m.d.sync += [a.eq(b) for a, b in zip(codes2, codes1)]
        with m.If(a3):
            m.d.sync += [v3.eq(v2), last3.eq(last2), index3.eq(index2)]
            m.d.sync += [p.eq(weighted * c) for p, c in zip(products, codes2)]

        # the sums: a rotating register of beats chunks, the first summed and put last
        sums = Signal(self.head_dim * sw)
        chunk = lanes * sw
        totals = [Signal(signed(sw), name=f"total{k}") for k in range(lanes)]
        m.d.comb += [t.eq(sums[k * sw:(k + 1) * sw].as_signed() + p)
                     for k, (t, p) in enumerate(zip(totals, products))]
        new = Cat(*(Mux(last3, 0, t) for t in totals))
        result = Signal(data.ArrayLayout(signed(ow), self.head_dim))
        m.d.comb += [self.o.valid.eq(full), self.o.payload.eq(result)]
        with m.If(taken):
            m.d.sync += full.eq(0)
        with m.If(v3 & a3):
            m.d.sync += sums.eq(Cat(sums[chunk:], new) if beats > 1 else new)
            with m.If(last3):
                rounded = Cat(*(((t + (1 << (pb - 1))) >> pb)[:ow] for t in totals))
                if beats > 1:
                    m.d.sync += result.as_value().word_select(index3, lanes * ow).eq(rounded)
                else:
                    m.d.sync += result.eq(rounded)
                with m.If(index3 == beats - 1):
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
    lanes : int, optional
        Code products a cycle of the scores and of the weighted sums (a divisor of
        ``head_dim``; default :func:`~ternary_accel.hw.timing.attention_lanes`): a key and
        a value beat each stay ``head_dim / lanes`` cycles on their streams.
    value_bits : int, optional
        The narrowest code width of the cached values (:class:`Values`; default
        ``v_bits``).

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

    def __init__(self, head_dim, depth, numerics=DEFAULT, *, lanes=None, value_bits=None):
        for name, value in (("head_dim", head_dim), ("depth", depth)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, not {value!r}")
        if not isinstance(numerics, HwNumerics):
            raise TypeError(f"numerics must be an HwNumerics, not {type(numerics).__name__}")
        self.head_dim, self.depth, self.numerics = head_dim, depth, numerics
        self.lanes = attention_lanes(head_dim, lanes)
        self.value_bits = value_bits
        value_bounds(numerics, depth, value_bits)                 # checked here
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
        m.submodules.scores = scores = Scores(hd, n, lanes=self.lanes)
        m.submodules.softmax = softmax = Softmax(self.depth, n)
        m.submodules.values = values = Values(hd, self.depth, n, lanes=self.lanes,
                                              value_bits=self.value_bits)
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
        width = values.out_width
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
