"""The cycle model of the matmul unit and the layer engine: the pipeline's registers, the
timing contract's latency L and interval R, the exit cycle of every result, and the
cycles of a whole layer (:class:`LayerMapping`, :class:`SparseLayerMapping`).

Plain Python, no Amaranth: the RTL (:mod:`ternary_accel.hw.rtl`) builds its pipeline
from these numbers, and the simulator, the driver, the performance model and the
design-space exploration count cycles with them without importing the HDL.
"""

from dataclasses import dataclass, field

import numpy as np

from ternary_accel.hw.mapping import LayerTiling, SparseTiling
from ternary_accel.model.arith import OUT_WIDTH, SHIFT_WIDTH, acc_width
from ternary_accel.model.quant import ACT_WIDTH, TERNARY
from ternary_accel.model.sparse import BEAT_MAJOR

__all__ = ["scalar_latency", "norm_quant_cycles", "result_width", "code_flag_latency", "input_latency", "output_interval",
           "accumulate_delay", "pipeline_depth", "unit_latency", "result_fifo_depth",
           "result_cycles", "stream_arrivals", "throttled_result_cycles", "tree_levels",
           "shared_output_stage",
           "tree_latency", "LayerMapping", "SparseLayerMapping", "layer_cycles",
           "QUEUE_DEPTH", "QUEUE_LATENCY", "RESULT_FIFO_LATENCY", "RESULT_BUFFER_LATENCY",
           "OUTPUT_STAGE_LATENCY", "MULTIPLY_LATENCY", "SHIFT_STAGES",
           "SHIFT_LEVELS_PER_STAGE", "INVALID_OR_FANIN"]


#: Cycles from a write to the word on ``r.payload``, with the buffer empty.
RESULT_BUFFER_LATENCY = 2


#: Registers of the multiply: the DSP block's input, pipeline and output registers, and
#: a fabric register the products land in (a DSP block's outputs are a long route from
#: any adder nextpnr places).
MULTIPLY_LATENCY = 4
#: Shift levels (of ``SHIFT_WIDTH``) done between two registers.
SHIFT_LEVELS_PER_STAGE = 2
#: Register stages of the variable shift.
SHIFT_STAGES = -(-SHIFT_WIDTH // SHIFT_LEVELS_PER_STAGE)
#: Registers from the stage's input to its results: the input copies, the multiply, the
#: partial-product sum, the shift stages, the rounding increment, the saturation.
OUTPUT_STAGE_LATENCY = 1 + MULTIPLY_LATENCY + 1 + SHIFT_STAGES + 2


def tree_levels(lanes):
    """Adder levels of a balanced tree over ``lanes`` leaves: ``ceil(log2(lanes))``."""
    return (lanes - 1).bit_length()


def tree_latency(lanes, levels_per_stage):
    """Stage registers of a :class:`DotProduct`: one per ``levels_per_stage`` levels, >= 1."""
    return max(1, -(-tree_levels(lanes) // levels_per_stage))


def result_width(lanes, max_beats, output_stage, weight_mode=TERNARY, act_width=ACT_WIDTH):
    """Bits of one result: ``OUT_WIDTH`` with the output stage, else the accumulator's
    ``acc_width(lanes * max_beats, weight_mode, act_width)``."""
    return (OUT_WIDTH if output_stage else
            acc_width(lanes * max_beats, weight_mode, act_width))


#: Inputs of each OR of the invalid-code flag tree (one LUT4).
INVALID_OR_FANIN = 4


def code_flag_latency(lanes, rows):
    """Cycles from a beat carrying an invalid code to ``error.code`` high: the pair
    flags, the registered OR tree over the ``rows * ceil(lanes / 2)`` pair flags, the
    sticky flag."""
    count, levels = rows * -(-lanes // 2), 0
    while count > 1:
        count, levels = -(-count // INVALID_OR_FANIN), levels + 1
    return 1 + levels + 1


#: Cycles from a write into the result FIFO to that result on ``res``.
RESULT_FIFO_LATENCY = RESULT_BUFFER_LATENCY


def input_latency(act_copies=None):
    """Registers between the input handshake and the lane groups: none, or with
    ``act_copies`` the input stage (activations in that many copies, weight codes)."""
    return 0 if act_copies is None else 1


def output_interval(rows, output_rows=None):
    """R: cycles one result vector holds the output stage, ``rows / output_rows``
    (1 for a fully parallel stage, ``output_rows`` ``None`` or ``rows``).

    Parameters
    ----------
    rows : int
        M, the rows of a result vector.
    output_rows : int or None
        Rows the output stage takes per cycle; must divide ``rows``.

    Returns
    -------
    int
    """
    if output_rows is None:
        return 1
    if rows % output_rows:
        raise ValueError(f"output_rows must divide rows ({rows}), not {output_rows}")
    return rows // output_rows


def shared_output_stage(output_rows, rows):
    """Whether the output stage is shared: ``output_rows`` rows at a time through a queue."""
    if output_rows is None:
        return False
    if rows is None:
        raise TypeError("rows must be given with output_rows")
    return output_interval(rows, output_rows) > 1


def accumulate_delay(lanes, levels_per_stage, *, act_copies=None):
    """Cycles from a ``last`` beat's transfer to its dot products in the ``done``
    register: the input stage, the lane groups' tree stages, the accumulate register."""
    return input_latency(act_copies) + tree_latency(lanes, levels_per_stage) + 1


#: Cycles from a vector entering the output queue to its output-stage start (the queue's
#: write), from the start to the vector in the read register, from there to the first
#: slice in the serializer's register.
QUEUE_LATENCY = 3


def pipeline_depth(lanes, levels_per_stage, output_stage, output_rows=None, rows=None, *,
                   act_copies=None):
    """Registers from the input handshake to the result FIFO's write port, the output
    stage idle: :func:`accumulate_delay`, then with the output stage (``output_rows``
    ``None``) its multiply and round registers, or (``output_rows`` given) the
    pipelined stage (:data:`hw.outstage.OUTPUT_STAGE_LATENCY`); when that is shared
    (``output_rows < rows``) first the queue (:data:`QUEUE_LATENCY`) and after it the
    ``R - 1`` cycles the collector waits for the vector's last slice
    (:func:`output_interval`)."""
    depth = accumulate_delay(lanes, levels_per_stage, act_copies=act_copies)
    if not output_stage:
        return depth
    if output_rows is None:
        return depth + 2
    depth += OUTPUT_STAGE_LATENCY
    if shared_output_stage(output_rows, rows):
        depth += QUEUE_LATENCY + output_interval(rows, output_rows) - 1
    return depth


def unit_latency(lanes, levels_per_stage, output_stage, output_rows=None, rows=None, *,
                 act_copies=None):
    """L: cycles from a ``last`` beat's transfer to its result on ``res``, the output stage
    idle and ``res`` ready.

    The timing contract: with ``res.ready`` always high and the inputs never starved,
    result vector ``n`` leaves (is on ``res``, valid) at cycle
    ``C_n = max(A_n + L, C_(n-1) + R)``, ``A_n`` the cycle its ``last`` beat transfers
    and ``R`` = :func:`output_interval` (:func:`result_cycles`). While the output
    queue has room ``A_n`` is the cycle of the unthrottled stream (beats back to back);
    see :func:`throttled_result_cycles` for a stream that fills it.

    Parameters
    ----------
    lanes, levels_per_stage : int
        As :class:`MatmulUnit`.
    output_stage : bool
        With the output stage.
    output_rows : int or None
        As :class:`MatmulUnit`.
    rows : int or None
        M; needed with ``output_rows``.
    act_copies : int or None
        As :class:`MatmulUnit`.

    Returns
    -------
    int
    """
    return (pipeline_depth(lanes, levels_per_stage, output_stage, output_rows, rows,
                           act_copies=act_copies) + RESULT_FIFO_LATENCY)


def result_fifo_depth(lanes, levels_per_stage, output_stage, output_rows=None, rows=None,
                      *, act_copies=None):
    """Entries of the result FIFO: every result that can be in flight, plus slack so an
    always-ready consumer never throttles the input (with a shared output stage: the
    results of vectors started in the stage, one per ``R`` cycles)."""
    if shared_output_stage(output_rows, rows):
        interval = output_interval(rows, output_rows)
        in_flight = interval + OUTPUT_STAGE_LATENCY + QUEUE_LATENCY - 1 + RESULT_FIFO_LATENCY
        return -(-in_flight // interval) + 2
    return unit_latency(lanes, levels_per_stage, output_stage, output_rows, rows,
                        act_copies=act_copies) + 2


#: Vectors the shared output stage's queue holds (its credits): one LUT RAM's depth.
QUEUE_DEPTH = 16


def result_cycles(arrivals, latency, interval):
    """Exit cycles of the timing contract: ``C_n = max(A_n + L, C_(n-1) + R)``.

    Parameters
    ----------
    arrivals : array_like of int
        ``A_n``, the cycle each vector's ``last`` beat transfers, in order.
    latency : int
        L, :func:`unit_latency`.
    interval : int
        R, :func:`output_interval`.

    Returns
    -------
    numpy.ndarray of int64
        ``C_n``, in the closed form ``max_(i <= n) (A_i + L + (n - i) R)``.
    """
    a = np.asarray(arrivals, dtype=np.int64)
    n = np.arange(len(a), dtype=np.int64)
    return np.maximum.accumulate(a + latency - n * interval) + n * interval


def stream_arrivals(beats):
    """``A_n`` of a stream of dot products of ``beats[n]`` beats each, back to back from
    cycle 0: the cycle of each ``last`` beat."""
    b = np.asarray(beats, dtype=np.int64)
    if np.any(b < 1):
        raise ValueError("every dot product has at least one beat")
    return np.cumsum(b) - 1


def throttled_result_cycles(beats, latency, interval, *, queue_depth=QUEUE_DEPTH,
                            start_delay):
    """Exit cycles of a stream of dot products of ``beats[n]`` beats, back to back from
    cycle 0, ``res`` always ready, including the shared output stage's input throttle.

    A ``last`` beat is held while ``queue_depth`` vectors wait for the stage (accepted,
    not started); other beats never are. Vector ``n`` starts in the stage at
    ``S_n = max(a_n + start_delay, S_(n-1) + R)`` and leaves at
    ``C_n = S_n + L - start_delay``, where its ``last`` beat transfers at
    ``a_n = max(a_(n-1) + beats[n], S_(n - queue_depth) + 1)``. A held beat delays all
    that follow it, so once the queue has filled, a later dot product that finds the
    stage idle leaves later than :func:`result_cycles` of the unthrottled stream says.

    Parameters
    ----------
    beats : array_like of int
        Beats of each dot product (>= 1).
    latency, interval : int
        L and R.
    queue_depth : int
        The queue's credits (:attr:`MatmulUnit.queue_depth`).
    start_delay : int
        Cycles from a ``last`` beat to its vector's start in an idle stage
        (:attr:`MatmulUnit.start_delay`).

    Returns
    -------
    (numpy.ndarray, numpy.ndarray)
        The ``last`` beats' transfer cycles ``a_n`` and the exit cycles ``C_n``.
    """
    b = np.asarray(beats, dtype=np.int64)
    stream_arrivals(b)  # checks
    a = np.zeros(len(b), dtype=np.int64)
    start = np.zeros(len(b), dtype=np.int64)
    for n in range(len(b)):
        a[n] = (a[n - 1] if n else -1) + b[n]
        if n >= queue_depth:
            a[n] = max(a[n], start[n - queue_depth] + 1)
        start[n] = a[n] + start_delay
        if n:
            start[n] = max(start[n], start[n - 1] + interval)
    return a, start + latency - start_delay


@dataclass(frozen=True)
class LayerMapping(LayerTiling):
    """:class:`model.mapping.LayerTiling` (tiles, beats, bytes) on a built engine: with
    its pipeline (``levels_per_stage``, ``output_stage``) and ``max_beats``, the RTL's
    latency and the cycle model. The RTL driver, ``hw perf`` and the reports use it.

    With weight reuse (``batch`` T > 1) or a weight port (``port_bits``) the engine
    assembles each beat from its port words and applies it to the batch's tokens on
    consecutive cycles (:class:`LayerEngine`); the tokens run in batches of T, and a
    last smaller batch is a run of its own.

    Raises
    ------
    ValueError
        If the layer does not tile onto the engine (:func:`check_layer_shape`).
    """

    levels_per_stage: int = 1
    output_stage: bool = True
    max_beats: int = None
    #: Rows the pipelined output stage rescales per cycle (None: the two-register stage;
    #: below ``rows``, one stage shared by the rows behind a queue).
    output_rows: int = field(default=None, kw_only=True)
    #: Copies of the unit's activation input register (None: no input register).
    act_copies: int = field(default=None, kw_only=True)

    @property
    def latency(self):
        """L of the unit's timing contract (:func:`hw.matmul.unit_latency`)."""
        return unit_latency(self.lanes, self.levels_per_stage, self.output_stage,
                            self.output_rows if self.output_stage else None, self.rows,
                            act_copies=self.act_copies)

    @property
    def output_interval(self):
        """R: cycles of the output stage per result vector."""
        if not self.output_stage:
            return 1
        return output_interval(self.rows, self.output_rows)

    @property
    def shared_output_stage(self):
        """Whether result vectors queue for a shared output stage (R > 1)."""
        return self.output_interval > 1

    @property
    def start_delay(self):
        """Cycles from a last beat's transfer to its vector's start in the idle shared
        output stage (:attr:`hw.matmul.MatmulUnit.start_delay`)."""
        return accumulate_delay(self.lanes, self.levels_per_stage,
                                act_copies=self.act_copies) + 1

    @property
    def assembled(self):
        """Whether the engine assembles beats from port words (reuse or a port width)."""
        return self.batch > 1 or self.port_bits is not None

    @property
    def beat_period(self):
        """Cycles per weight beat of a batch of ``size`` tokens: max(W, size)."""
        return max(self.port_words_per_beat, self.batch)

    def run_arrivals(self, size, batches):
        """Unthrottled transfer cycles of the last beats of one run's result vectors
        (``batches`` batches of ``size`` tokens; cycle 0 is the run's first transfer),
        in result order: batch, tile, token.

        Without reuse or a port the engine takes one beat per clock, tiles and tokens
        back to back. With them, the beat register is loaded as the last port word of
        a beat arrives: beat ``k``'s ``size`` uses are at ``W + k * max(W, size) + j``.
        """
        beats = self.col_beats
        vectors = np.arange(batches * self.row_tiles, dtype=np.int64)
        if not self.assembled:
            return (vectors + 1) * beats - 1
        words = self.port_words_per_beat
        last_beats = (vectors + 1) * beats - 1
        period = max(words, size)
        return (words + last_beats[:, None] * period
                + np.arange(size, dtype=np.int64)[None, :]).reshape(-1)

    def run_exits(self, size, batches):
        """The cycle each result vector of one run (:attr:`runs`) leaves the engine, no stall
        (the unit's timing contract, :func:`hw.matmul.result_cycles`).

        With a shared output stage (R > 1) a last beat waits while
        :data:`hw.matmul.QUEUE_DEPTH` vectors queue for the stage, and the wait delays
        the beats behind it; when the unthrottled stream would fill the queue the
        schedule is followed beat by beat (:meth:`_throttled_exits`)."""
        arrivals = (self.run_arrivals(size, batches) if self.assembled
                    else self.run_arrivals(1, size * batches))
        latency, interval = self.latency, self.output_interval
        if interval == 1:
            return result_cycles(arrivals, latency, interval)
        delay = self.start_delay
        starts = result_cycles(arrivals, delay, interval)
        queue = QUEUE_DEPTH
        if len(arrivals) <= queue or np.all(arrivals[queue:] >= starts[:-queue] + 1):
            return starts + latency - delay      # the queue never holds a last beat
        return self._throttled_exits(size, batches) + latency - delay

    def _throttled_exits(self, size, batches):
        """Start cycles ``S_n`` in the shared output stage, beat by beat: the last word
        of beat ``k`` is taken at ``L_k = max(L_(k-1) + W, U_(k-1))`` (``U``: the
        beat's last use), its uses follow one a cycle, and a last beat's use ``n``
        waits until ``S_(n - QUEUE_DEPTH) + 1``; ``S_n = max(u_n + delay, S_(n-1) + R)``.
        Without weight assembly the beats are back to back (``W = 1``, one use)."""
        beats, interval, delay = self.col_beats, self.output_interval, self.start_delay
        assembled = self.assembled
        words = self.port_words_per_beat if assembled else 1
        uses = size if assembled else 1
        period = max(words, uses)
        vectors = batches * self.row_tiles * (1 if assembled else size)
        starts = np.zeros(vectors * uses, dtype=np.int64)
        loaded, used, n = -1, -1 << 40, 0     # L and U of the previous beat
        for _ in range(vectors):
            # the tile's beats before its last: never held
            loaded = max(loaded + words, used)
            if beats > 1:
                loaded += (beats - 2) * period
                used = loaded + uses
                loaded = max(loaded + words, used)
            use = loaded
            for _ in range(uses):
                use += 1
                if n >= QUEUE_DEPTH:
                    use = max(use, starts[n - QUEUE_DEPTH] + 1)
                starts[n] = use + delay if n == 0 else max(use + delay,
                                                           starts[n - 1] + interval)
                n += 1
            used = use
        # whole beats go to the unit without the beat register's cycle
        return starts if assembled else starts - 1

    @property
    def runs(self):
        """``(size, batches)`` of each run: the full batches, then the remainder."""
        if not self.assembled:
            return ((self.tokens, 1),)
        full, rest = divmod(self.tokens, self.batch)
        return tuple(run for run in ((self.batch, full), (rest, 1)) if run[0] and run[1])

    def run_cycles(self, size, batches):
        """Cycles of one run, from its first transfer to its last result, no stall."""
        return int(self.run_exits(size, batches)[-1]) + 1

    @property
    def cycles(self):
        """The cycle model: from the first transfer to the last result, no stall,
        summed over the runs (:attr:`runs`). Without reuse or a port: one beat per
        clock, tile and token switches free, then the unit's latency."""
        if not self.assembled and self.output_interval == 1:
            return self.beats + self.latency
        return sum(self.run_cycles(size, batches) for size, batches in self.runs)


@dataclass(frozen=True)
class SparseLayerMapping(SparseTiling):
    """:class:`hw.mapping.SparseTiling` on a built engine (``weight_order="columns"``):
    its latency and the cycle model of the sparse dataflow.

    Raises
    ------
    ValueError
        If the layer does not tile onto the engine, or a token keeps more columns than
        ``max_beats`` beats hold.
    """

    levels_per_stage: int = 1
    output_stage: bool = True
    max_beats: int = None
    acc_tiles: int = None
    #: As :class:`LayerMapping`; the sparse dataflow takes only a parallel stage
    #: (None or ``rows``).
    output_rows: int = field(default=None, kw_only=True)
    act_copies: int = field(default=None, kw_only=True)

    def __post_init__(self):
        super().__post_init__()
        if self.output_rows not in (None, self.rows):
            raise ValueError("the sparse dataflow takes a parallel output stage: "
                             f"output_rows must be None or rows ({self.rows}), "
                             f"not {self.output_rows}")
        if self.max_beats is not None and max(self.token_beats) > self.max_beats:
            raise ValueError(f"a token keeps {max(self.kept)} columns, "
                             f"{max(self.token_beats)} beats, more than the engine's "
                             f"max_beats ({self.max_beats})")
        if self.order == BEAT_MAJOR and (self.acc_tiles is None
                                         or self.acc_tiles < self.row_tiles):
            raise ValueError(f"the beat-major order of a layer of {self.row_tiles} row "
                             f"tiles needs an engine with an accumulator bank of at least "
                             f"{self.row_tiles} tiles (acc_tiles={self.acc_tiles})")

    @property
    def latency(self):
        return unit_latency(self.lanes, self.levels_per_stage, self.output_stage,
                            self.output_rows if self.output_stage else None, self.rows,
                            act_copies=self.act_copies)

    @property
    def cycles(self):
        """From the first beat to the last result, no stall: one compacted beat per
        clock, tokens and tiles back to back, then the unit's latency."""
        return self.beats + self.latency

    def token_cycles(self, token):
        """The cycle model of token ``token`` alone: its beats for every tile, then the
        latency."""
        return self.row_tiles * self.token_beats[token] + self.latency


def layer_cycles(out_features, in_features, tokens, *, lanes, rows, levels_per_stage=1,
                 output_stage=True):
    """Cycles from a layer's first beat to its last result, no stall
    (:attr:`LayerMapping.cycles`)."""
    return LayerMapping(out_features, in_features, tokens, lanes, rows, levels_per_stage,
                        output_stage).cycles


def scalar_latency(op, numerics):
    """Cycles from the edge where :class:`hw.rtl.scalar.ScalarUnit` accepts an operation
    to its result's ``valid``: one to normalise, then the reciprocal's ``2 P + 1``
    quotient bits (``P = recip_bits``) or the rsqrt's three cycles a Newton step, and one
    to form the result.

    Parameters
    ----------
    op : str
        ``"reciprocal"`` or ``"rsqrt"``.
    numerics : model.hwnum.HwNumerics
    """
    if op == "reciprocal":
        return 1 + (2 * numerics.recip_bits + 1) + 1
    if op == "rsqrt":
        return 1 + 3 * numerics.newton_steps + 1
    raise ValueError(f"op must be 'reciprocal' or 'rsqrt', not {op!r}")


def norm_quant_cycles(width, numerics):
    """Cycles of :class:`hw.rtl.normquant.NormQuant` for one token of ``width`` elements
    without stalls, from the edge that takes the first element to the edge that gives
    the last code: the elements in, the rsqrt and the reciprocal on the scalar unit (each
    with a cycle to hand it over and one to take it back), one for INT4's multiplier
    (taken in int8 too), three for the factor, one to offer it, the codes out."""
    return (width + 2 + scalar_latency("rsqrt", numerics)
            + 2 + scalar_latency("reciprocal", numerics) + 1 + 3 + 1 + width)


#: Pipeline stages of :class:`hw.rtl.head.HeadDot` after the edge that takes a weight
#: beat: the beat (the memory reads the token's codes), the codes registered, the
#: products, the partial sums, the row sums, the row sums times their multipliers
#: (accumulated at the next edge).
HEAD_PIPELINE = 6


def head_cycles(vocab, hidden, *, lanes, rows):
    """Cycles of :class:`hw.rtl.head.HeadDot` for one token's head without stalls, from
    the edge that takes the first weight beat to the edge that gives the last row's sum:
    ``beats = hidden / lanes`` a tile of ``rows`` rows, a tile's sums leaving one row a
    cycle while the next tile runs (a tile waits for the bank when ``beats < rows``), the
    pipeline (:data:`hw.rtl.head.HEAD_PIPELINE`) and the last tile's ``rows`` sums. The token's codes take
    ``beats`` more cycles on ``act`` before it (:func:`head_load_cycles`)."""
    for name, value in (("vocab", vocab), ("hidden", hidden), ("lanes", lanes),
                        ("rows", rows)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, not {value!r}")
    if hidden % lanes or vocab % rows:
        raise ValueError(f"the head ({vocab} x {hidden}) does not tile onto {rows} rows of "
                         f"{lanes} lanes")
    beats, tiles = hidden // lanes, vocab // rows
    return beats + (tiles - 1) * max(beats, rows) + HEAD_PIPELINE + rows


def head_load_cycles(hidden, *, lanes):
    """Cycles of a token's codes into :class:`hw.rtl.head.HeadDot` (a beat a cycle)."""
    return hidden // lanes


def softmax_cycles(positions, numerics):
    """Cycles of :class:`hw.rtl.softmax.Softmax` for a row of ``positions`` scores
    without stalls, from the edge that takes the first score to the edge that gives the
    last weight: the scores in, a cycle to check the row's length, the exp pass, a
    cycle to hand the sum to the scalar unit, the reciprocal's latency
    (:func:`scalar_latency`), a cycle to take it back, the weights out."""
    if isinstance(positions, bool) or not isinstance(positions, int) or positions < 1:
        raise ValueError(f"positions must be a positive integer, not {positions!r}")
    return 3 * positions + 3 + scalar_latency("reciprocal", numerics)


def rope_cycles(head_dim):
    """Cycles of :class:`hw.rtl.rope.Rope` for one head vector without stalls, from the
    edge that takes its first element to the edge that gives its last: the first half
    in, a pair a cycle (the first results out), the kept second half out."""
    if isinstance(head_dim, bool) or not isinstance(head_dim, int) or head_dim < 2 \
            or head_dim % 2:
        raise ValueError(f"head_dim must be a positive even integer, not {head_dim!r}")
    return 3 * head_dim // 2


#: Code products a cycle of :class:`hw.rtl.attention.Scores` and ``Values`` (and of
#: :class:`~hw.rtl.attention.AttentionHead`) unless chosen: a key (a value) of ``head_dim``
#: codes is consumed over ``head_dim / lanes`` cycles. Eight: eight 8 x 8 code products
#: and eight weighted-factor products a cycle (a few DSP blocks of an ECP5's 156), while
#: at ``head_dim`` 64 a key still takes only eight cycles against the softmax's three a
#: position; a head of fewer than eight dimensions (or one eight does not divide) takes
#: its largest divisor below eight.
ATTENTION_LANES = 8

#: Register stages of :class:`hw.rtl.attention.Scores` (and of ``Values``) after the
#: cycle that consumes a key's (a value's) last codes: the dot product; its key factor;
#: its row factor (Scores) -- the inputs; the weighted factor; the products (Values).
ATTENTION_PIPELINE = 3


def attention_lanes(head_dim, lanes=None):
    """The lanes of an attention unit of ``head_dim``: ``lanes`` checked (a positive
    divisor of ``head_dim``), or by default the largest divisor of ``head_dim`` not above
    :data:`ATTENTION_LANES`."""
    if isinstance(head_dim, bool) or not isinstance(head_dim, int) or head_dim < 1:
        raise ValueError(f"head_dim must be a positive integer, not {head_dim!r}")
    if lanes is None:
        return max(d for d in range(1, min(head_dim, ATTENTION_LANES) + 1)
                   if head_dim % d == 0)
    if isinstance(lanes, bool) or not isinstance(lanes, int) or lanes < 1 \
            or head_dim % lanes:
        raise ValueError(f"lanes must be a positive divisor of head_dim ({head_dim}), "
                         f"not {lanes!r}")
    return lanes


def attention_product_cycles(positions, head_dim=None, lanes=None):
    """Cycles of :class:`hw.rtl.attention.Scores` (or ``Values``) for one row of
    ``positions`` cached keys (or values) without stalls, from the edge that takes the
    first (the edge of its last ``lanes`` codes) to the edge that gives the last score
    (or the weighted sums): ``head_dim / lanes`` cycles a position
    (:func:`attention_lanes`; one without ``head_dim``), the
    :data:`ATTENTION_PIPELINE` registers and the output register."""
    if isinstance(positions, bool) or not isinstance(positions, int) or positions < 1:
        raise ValueError(f"positions must be a positive integer, not {positions!r}")
    beats = 1 if head_dim is None else head_dim // attention_lanes(head_dim, lanes)
    return (positions - 1) * beats + ATTENTION_PIPELINE + 2


def absmax_cycles(width, numerics):
    """Cycles of :class:`hw.rtl.attention.AbsmaxQuant` for one vector of ``width``
    elements without stalls, from the edge that takes its first element to the edge that
    gives its last code: the elements in, a cycle to check the length and hand ``1/max``
    to the scalar unit, the reciprocal's latency (:func:`scalar_latency`), a cycle to take
    it back, the codes out (the factor leaves alongside them)."""
    if isinstance(width, bool) or not isinstance(width, int) or width < 1:
        raise ValueError(f"width must be a positive integer, not {width!r}")
    return 2 * width + 2 + scalar_latency("reciprocal", numerics)


def attention_head_cycles(positions, head_dim, numerics, lanes=None):
    """Cycles of :class:`hw.rtl.attention.AttentionHead` for one query head over
    ``positions`` cached positions without stalls, from the edge that takes the query's
    first element to the edge that gives the last output, with ``B = head_dim / lanes``
    cycles a key and a value (:func:`attention_lanes`) and ``P`` =
    :data:`ATTENTION_PIPELINE`: the query quantized (:func:`absmax_cycles`), the first
    key's ``B`` cycles into the scores and their ``P`` registers, the softmax of the row
    (:func:`softmax_cycles`) slowed by ``B - 1`` cycles a score (the scores come a key
    every ``B`` cycles) and a weight (the weighted sums take a value every ``B`` cycles,
    the first one ``B - 1`` cycles after it is offered), the weighted sums' ``P``
    registers and a cycle for the sums into the output register, the ``head_dim``
    outputs."""
    if isinstance(positions, bool) or not isinstance(positions, int) or positions < 1:
        raise ValueError(f"positions must be a positive integer, not {positions!r}")
    beats = head_dim // attention_lanes(head_dim, lanes)
    return (absmax_cycles(head_dim, numerics) + beats + ATTENTION_PIPELINE
            + softmax_cycles(positions, numerics) + (2 * positions - 1) * (beats - 1)
            + ATTENTION_PIPELINE + 1 + head_dim)


def attention_head_interval(positions, head_dim, numerics, lanes=None):
    """Cycles between two query heads of ``positions`` positions each on one
    :class:`hw.rtl.attention.AttentionHead`, back to back without stalls (the queries,
    keys and values always offered, the outputs always taken): ``heads`` of them take
    ``(heads - 1) * interval + attention_head_cycles(...)``.

    A head is bound by its query's quantizer (:func:`absmax_cycles`: the next query is
    quantized while this head runs), by the scores' query slot (the query's ``head_dim``
    codes into it a cycle each, then its ``B`` cycles a key: with few lanes) or by the
    softmax, which holds one row at a time: its
    row of :func:`softmax_cycles` slowed by ``B - 1`` cycles each score and each weight
    (``2 positions - 1`` of them, as in :func:`attention_head_cycles`), less ``B - 1``
    for each of the next head's first scores (at most ``P + 1``, ``P`` =
    :data:`ATTENTION_PIPELINE`: its registers and the output register) that the scores
    made while the softmax finished this head, but the first."""
    if isinstance(positions, bool) or not isinstance(positions, int) or positions < 1:
        raise ValueError(f"positions must be a positive integer, not {positions!r}")
    beats = head_dim // attention_lanes(head_dim, lanes)
    ahead = min(positions - 1, ATTENTION_PIPELINE + 1)
    return max(absmax_cycles(head_dim, numerics), head_dim + positions * beats,
               softmax_cycles(positions, numerics)
               + (beats - 1) * (2 * positions - 1 - ahead))
