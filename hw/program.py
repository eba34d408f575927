"""A decoder token as a program of operations: the sequencer's instruction set, the
memory images a host loads, the program generator, and the program's golden run.

The accelerator (:class:`ternary_accel.hw.rtl.token.TokenCore`) runs a whole token —
embedding row, every layer, final norm, LM head, argmax — from a program the host
writes once per model; per token the host sets the token id and the position, starts,
and reads the next token. Nothing in the host runs per operation.

**Memories.** The core reaches five memories through read (and write) channels, each
addressed in its own words (a DMA maps a channel's word address to bytes); the
:class:`TokenImage` holds their contents:

* ``prog``: the instructions (:data:`INSTRUCTION`), from address 0 to an ``END``;
* ``vec``: 32-bit signed words: the embedding table in the residual format (``vocab``
  rows of ``hidden``), then each layer's four norm gains (``gain_bits`` integers),
  then the final norm's;
* ``wgt``: the engine's weight words (:func:`pack_projection`), each projection's
  tiles in order, layer by layer, ``q k v o gate up down``;
* ``kv``: the KV cache, one entry a position and KV head (its ``head_dim`` codes and
  its absmax peak): ``[layer][keys, values][kv_head][position]``, ``positions``
  entries a head (the context the image was made for);
* ``head``: the LM head's beats (:class:`~ternary_accel.hw.rtl.head.HeadDot`
  ``weights``), tile by tile.

**On chip.** A scratchpad of residual-format words (:class:`ScratchLayout`: the
residual stream, q, k, v, the attention output, the projections' outputs, gate and up),
a code buffer of the quantized input of the next BitLinear (``lanes`` codes a word) and
one factor register (the fused norm's per-token factor). Their sizes come from the
configuration (:meth:`ScratchLayout.words`).

**Operations** (``op``; the fields each uses are listed in :data:`OPS`):

* ``LOAD``: ``n`` words of ``vec`` from ``addr`` (plus ``token * n`` when ``sub`` is 1:
  the embedding row) to the scratchpad at ``d``;
* ``NORM``: RMSNorm fused with the absmax quantizer on ``n`` words at ``a`` with the
  gains at ``vec[addr]`` (exponent ``gexp``, ``eps``, the constant ``cmant``/``cexp``):
  codes to the code buffer, the factor to the factor register
  (:func:`model.hwnum.norm_quant`);
* ``MATMUL``: the code buffer (``n`` inputs) times the ternary weights at
  ``wgt[addr]`` (``reps`` outputs), rescaled by the factor and the weight scale
  ``mant``/``exp`` into the residual format, to ``d``;
* ``ROPE``: ``reps`` head vectors of ``n`` at ``a`` rotated at the position, to ``d``;
* ``KV_WRITE``: ``reps`` head vectors of ``n`` at ``a`` quantized (absmax, ``bits``)
  into ``kv[addr + h * stride + position]``;
* ``ATTEND``: for each of ``reps`` query heads (``n`` at ``a + h n``): the scores
  against ``position + 1`` keys at ``kv[addr + (h // b) * stride]``, the softmax,
  the values at ``kv[addr2 + (h // b) * stride]``, the head's output to ``d + h n``
  (``b``: query heads a KV head);
* ``ELEMENTWISE``: ``sub`` (:data:`ADD`, :data:`RELU2`, :data:`GATE`) on ``n`` words at
  ``a`` and ``b``, to ``d``;
* ``HEAD``: the code buffer (``n`` inputs) times the LM head's ``reps`` rows at
  ``head[addr]``, rescaled per row, the logits out and their argmax the token;
* ``END``.
"""

from dataclasses import dataclass

import numpy as np

from ternary_accel.model import hwnum as H
from ternary_accel.model.encoding import pack_trits, pack_words, unpack_trits, unpack_words
from ternary_accel.model.hwdecoder import HwDecoder

from ternary_accel.hw.mapping import port_codes_per_word
from ternary_accel.hw.params import EngineParams

__all__ = ["END", "LOAD", "NORM", "MATMUL", "ROPE", "KV_WRITE", "ATTEND", "ELEMENTWISE",
           "HEAD", "OPS", "COUNTERS", "ADD", "RELU2", "GATE", "INSTRUCTION", "VEC_BITS", "PROJECTIONS",
           "ScratchLayout", "TokenImage", "TokenProgram", "token_engine", "pack_projection",
           "make_program", "token_operations", "projection_words", "encode_instruction", "decode_instruction", "GoldenToken",
           "ProgramError"]

END, LOAD, NORM, MATMUL, ROPE, KV_WRITE, ATTEND, ELEMENTWISE, HEAD = range(9)
#: Operation names and the fields each uses.
OPS = {END: ("END", ()), LOAD: ("LOAD", ("sub", "d", "n", "addr")),
       NORM: ("NORM", ("a", "n", "addr", "gexp", "eps", "cmant", "cexp")),
       MATMUL: ("MATMUL", ("n", "reps", "addr", "d", "mant", "exp")),
       ROPE: ("ROPE", ("a", "d", "n", "reps")),
       KV_WRITE: ("KV_WRITE", ("a", "n", "reps", "addr", "stride", "bits")),
       ATTEND: ("ATTEND", ("a", "b", "d", "n", "reps", "addr", "addr2", "stride")),
       ELEMENTWISE: ("ELEMENTWISE", ("sub", "a", "b", "d", "n")),
       HEAD: ("HEAD", ("n", "reps", "addr"))}
#: The token core's cycle counters (``TokenCore.cycles``), by opcode: each operation's,
#: and on END's the sequencer's (every instruction's fetch, decode and set-up).
COUNTERS = tuple("sequencer" if op == END else name for op, (name, _) in sorted(OPS.items()))
#: ``sub`` of ELEMENTWISE (the element-wise unit's operations).
ADD, RELU2, GATE = 0, 1, 2

#: The instruction word: ``(field, bits, signed)`` from the least significant bit.
INSTRUCTION = (("op", 4, False), ("sub", 4, False), ("a", 16, False), ("b", 16, False),
               ("d", 16, False), ("n", 16, False), ("reps", 20, False),
               ("addr", 32, False), ("addr2", 32, False), ("stride", 24, False),
               ("mant", 24, False), ("exp", 8, True), ("eps", 62, False),
               ("cmant", 24, False), ("cexp", 8, True), ("gexp", 8, True),
               ("bits", 4, False))
#: Bits of a ``vec`` word.
VEC_BITS = 32
#: The BitLinears of a layer in the order their weights are stored.
PROJECTIONS = ("q", "k", "v", "o", "gate", "up", "down")
_NORMS = ("input_layernorm", "attn_sub_norm", "post_attention_layernorm", "ffn_sub_norm")


class ProgramError(ValueError):
    """A model or engine the token program cannot express, or a bad instruction."""


def _field_limits(bits, signed):
    return (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)


def encode_instruction(**fields):
    """The instruction word (an int) of ``fields`` (unnamed fields are 0)."""
    known = {name for name, _, _ in INSTRUCTION}
    unknown = set(fields) - known
    if unknown:
        raise ProgramError(f"unknown instruction field {sorted(unknown)[0]!r}")
    word, at = 0, 0
    for name, bits, signed in INSTRUCTION:
        value = int(fields.get(name, 0))
        low, high = _field_limits(bits, signed)
        if not low <= value <= high:
            op = OPS.get(fields.get("op"), ("?",))[0]
            raise ProgramError(f"{op} field {name} = {value} does not fit {bits} "
                               f"{'signed ' if signed else ''}bits")
        word |= (value & ((1 << bits) - 1)) << at
        at += bits
    return word


def decode_instruction(word):
    """The fields of an instruction word (the inverse of :func:`encode_instruction`)."""
    fields, at = {}, 0
    for name, bits, signed in INSTRUCTION:
        value = (int(word) >> at) & ((1 << bits) - 1)
        if signed and value >> (bits - 1):
            value -= 1 << bits
        fields[name] = value
        at += bits
    return fields


def instruction_bits():
    """Bits of an instruction word."""
    return sum(bits for _, bits, _ in INSTRUCTION)


def token_engine(lanes=8, rows=8, *, max_beats=None, weight_port_bits=None, packing=None,
                 hidden=None, ffn=None):
    """The :class:`EngineParams` of a token core: no output stage (the hardware
    numerics' :class:`~ternary_accel.hw.rtl.rescale.Rescale` follows it), one token,
    dot products as long as the widest input (``ffn``) when given."""
    if max_beats is None:
        widest = max(v for v in (hidden, ffn, lanes) if v is not None)
        max_beats = -(-widest // lanes)
    return EngineParams(lanes=lanes, rows=rows, max_beats=max_beats, output_stage=False,
                        weight_port_bits=weight_port_bits, packing=packing)


def pack_projection(values, params):
    """A projection's ternary weights (out, in) as the engine's weight words, (words,
    word bytes) uint8: tile by tile of ``rows`` outputs, beat by beat of ``lanes``
    inputs, each beat's ``rows x lanes`` codes row-major (a whole base-3 beat a word, or
    the port's words of the packing)."""
    out_f, in_f = values.shape
    m, k = params.rows, params.lanes
    beats = (np.asarray(values, dtype=np.int64).reshape(out_f // m, m, in_f // k, k)
             .transpose(0, 2, 1, 3).reshape(-1, m * k))
    if not params.assembled:
        per = params.bytes_per_beat
        padded = np.pad(beats, ((0, 0), (0, per * 5 - m * k)))
        return np.asarray(pack_trits(padded.reshape(-1)), dtype=np.uint8).reshape(-1, per)
    mapping = params.mapping(out_f, in_f)
    port_bits = mapping.port_bits_used
    per_beat = mapping.port_words_per_beat * port_codes_per_word(mapping.packing, port_bits)
    padded = np.pad(beats, ((0, 0), (0, per_beat - m * k)))
    return np.asarray(pack_words(padded.reshape(-1), mapping.packing, port_bits),
                      dtype=np.uint8).reshape(-1, port_bits // 8)


@dataclass(frozen=True)
class ScratchLayout:
    """Word addresses of the scratchpad's regions for a configuration."""

    hidden: int
    ffn: int
    q_width: int
    kv_width: int

    @property
    def regions(self):
        """``{name: (address, words)}`` in address order."""
        sizes = (("x", self.hidden), ("q", self.q_width), ("k", self.kv_width),
                 ("v", self.kv_width), ("attn", self.q_width), ("out", self.hidden),
                 ("gate", self.ffn), ("up", self.ffn))
        at, regions = 0, {}
        for name, size in sizes:
            regions[name] = (at, size)
            at += size
        return regions

    def __getitem__(self, name):
        return self.regions[name][0]

    @property
    def words(self):
        """Words of the scratchpad."""
        return sum(size for _, size in self.regions.values())


@dataclass
class TokenImage:
    """The memories' contents for one model (module docstring): ``vec`` (int64),
    ``wgt`` (uint8, words x bytes), ``head`` (a dict of the head beats' fields),
    ``kv_entries`` (entries of the KV region) and ``prog`` (instruction words)."""

    vec: np.ndarray
    wgt: np.ndarray
    head: dict
    kv_entries: int
    prog: list


@dataclass
class TokenProgram:
    """A model's program and images, and the sizes of the core that runs it."""

    image: TokenImage
    params: EngineParams
    numerics: H.HwNumerics
    config: object
    scratch: ScratchLayout
    positions: int
    head_rows: int
    head_tiles: int
    listing: list
    #: Codes a cycle of the attention unit's products (:func:`hw.timing.attention_lanes`).
    attention_lanes: int = None

    @property
    def code_words(self):
        """Words of the code buffer (``lanes`` codes each)."""
        c = self.config
        return max(c.hidden, c.ffn, c.heads * c.head_dim) // self.params.lanes

    def sizes(self):
        """The on-chip buffers, ``{name: (words, bits)}``."""
        n = self.numerics
        return {"scratchpad": (self.scratch.words, n.resid_bits),
                "code buffer": (self.code_words, 8 * self.params.lanes),
                "factor register": (1, n.scale_bits + 1 + 10)}


def _check(decoder, params, positions):
    if not isinstance(decoder, HwDecoder):
        raise ProgramError("the token program runs the hardware numerics: give an HwDecoder")
    if decoder.activations != "a8" or decoder.topk is not None \
            or decoder.block_topk is not None:
        raise ProgramError("the token program runs a8 activations without Top-K "
                           f"(this decoder: {decoder.activations}, topk={decoder.topk})")
    if decoder.kv_bits is not None:
        raise ProgramError("the token program keeps the numerics' 8-bit KV codes "
                           f"(kv_bits={decoder.kv_bits} is not supported)")
    if params.output_stage or params.tokens != 1 or params.weight_order != "rows":
        raise ProgramError("a token core's engine has no output stage, T = 1 and "
                           "row-major weights (token_engine)")
    c = decoder.config
    for what, width in (("hidden", c.hidden), ("ffn", c.ffn),
                        ("heads x head_dim", c.heads * c.head_dim),
                        ("kv_heads x head_dim", c.kv_heads * c.head_dim)):
        if width % params.lanes or width % params.rows:
            raise ProgramError(f"{what} = {width} is not a multiple of the engine's lanes "
                               f"({params.lanes}) and rows ({params.rows})")
        if width // params.lanes > params.max_beats:
            raise ProgramError(f"{what} = {width} needs {width // params.lanes} beats; "
                               f"the engine's max_beats is {params.max_beats}")
    if not 1 <= positions <= c.max_position_embeddings:
        raise ProgramError(f"positions must be 1..{c.max_position_embeddings}, "
                           f"not {positions}")


def _head_beats(head, numerics, lanes, rows):
    """The head's beats (HeadDot ``weights``), tile by tile: codes (tiles, beats, rows,
    lanes), multipliers (tiles, beats, rows), scales (tiles, rows), last, end."""
    vocab, hidden = head.codes.shape
    tiles, beats = -(-vocab // rows), hidden // lanes
    pad = tiles * rows - vocab
    codes = np.pad(head.codes, ((0, pad), (0, 0)))
    fields = {"codes": codes.reshape(tiles, rows, beats, lanes).transpose(0, 2, 1, 3),
              "mant": np.pad(head.mant, (0, pad)).reshape(tiles, rows),
              "exp": np.pad(head.exp, (0, pad)).reshape(tiles, rows)}
    last = np.zeros((tiles, beats), dtype=np.int64)
    last[:, -1] = 1
    end = np.zeros((tiles, beats), dtype=np.int64)
    end[-1, -1] = 1
    fields.update(last=last, end=end)
    if numerics.head == "grouped":
        per = numerics.head_group // lanes
        mult = np.pad(head.groups, ((0, pad), (0, 0)))         # (rows, groups)
        fields["mult"] = np.repeat(mult, per, axis=1).reshape(tiles, rows, beats) \
            .transpose(0, 2, 1)
    return fields, tiles


def _projection_shapes(config):
    c = config
    q, kv = c.heads * c.head_dim, c.kv_heads * c.head_dim
    return {"q": (q, c.hidden), "k": (kv, c.hidden), "v": (kv, c.hidden), "o": (c.hidden, q),
            "gate": (c.ffn, c.hidden), "up": (c.ffn, c.hidden), "down": (c.hidden, c.ffn)}


def projection_words(out_features, in_features, params):
    """Weight words of one projection on the engine ``params`` (:func:`pack_projection`)."""
    mapping = params.mapping(out_features, in_features)
    return mapping.weight_beats * mapping.port_words_per_beat


def token_operations(config, params, numerics, positions):
    """The program's operations without the model's constants: a list of ``(op,
    fields, key)``, ``key`` naming the constants an operation takes (``("norm", layer,
    name)`` for a NORM, ``("projection", layer, name)`` for a MATMUL, else None).
    Needs only the configuration, so the cycle model
    (:func:`ternary_accel.hw.timing.token_cycles`) and ``perf`` use it for models whose
    weights are not at hand; :func:`make_program` fills in the constants."""
    c, n = config, numerics
    s = ScratchLayout(c.hidden, c.ffn, c.heads * c.head_dim, c.kv_heads * c.head_dim)
    hd = c.head_dim
    shapes = _projection_shapes(c)
    ops = []
    at = {"vec": c.vocab * c.hidden, "wgt": 0}

    def emit(op, key=None, **fields):
        ops.append((op, fields, key))

    def norm(layer, name, src, width):
        emit(NORM, ("norm", layer, name), a=src, n=width, addr=at["vec"])
        at["vec"] += width

    def matmul(layer, name, dst):
        out_f, in_f = shapes[name]
        emit(MATMUL, ("projection", layer, name), n=in_f, reps=out_f, addr=at["wgt"], d=dst)
        at["wgt"] += projection_words(out_f, in_f, params)

    emit(LOAD, sub=1, d=s["x"], n=c.hidden, addr=0)
    kv_head = positions
    kv_layer = 2 * c.kv_heads * kv_head
    group = c.heads // c.kv_heads
    for layer in range(c.layers):
        keys, values = layer * kv_layer, layer * kv_layer + c.kv_heads * kv_head
        norm(layer, "input_layernorm", s["x"], c.hidden)
        for name in ("q", "k", "v"):
            matmul(layer, name, s[name])
        emit(ROPE, a=s["q"], d=s["q"], n=hd, reps=c.heads)
        emit(ROPE, a=s["k"], d=s["k"], n=hd, reps=c.kv_heads)
        emit(KV_WRITE, a=s["k"], n=hd, reps=c.kv_heads, addr=keys, stride=kv_head,
             bits=n.qk_bits)
        emit(KV_WRITE, a=s["v"], n=hd, reps=c.kv_heads, addr=values, stride=kv_head,
             bits=n.v_bits)
        emit(ATTEND, a=s["q"], b=group, d=s["attn"], n=hd, reps=c.heads, addr=keys,
             addr2=values, stride=kv_head)
        norm(layer, "attn_sub_norm", s["attn"], c.heads * hd)
        matmul(layer, "o", s["out"])
        emit(ELEMENTWISE, sub=ADD, a=s["x"], b=s["out"], d=s["x"], n=c.hidden)
        norm(layer, "post_attention_layernorm", s["x"], c.hidden)
        matmul(layer, "gate", s["gate"])
        matmul(layer, "up", s["up"])
        emit(ELEMENTWISE, sub=RELU2, a=s["gate"], b=s["gate"], d=s["gate"], n=c.ffn)
        emit(ELEMENTWISE, sub=GATE, a=s["gate"], b=s["up"], d=s["gate"], n=c.ffn)
        norm(layer, "ffn_sub_norm", s["gate"], c.ffn)
        matmul(layer, "down", s["out"])
        emit(ELEMENTWISE, sub=ADD, a=s["x"], b=s["out"], d=s["x"], n=c.hidden)
    norm(None, "norm", s["x"], c.hidden)
    emit(HEAD, n=c.hidden, reps=c.vocab, addr=0)
    emit(END)
    return ops


def make_program(decoder, params=None, *, positions=None, head_rows=None,
                 attention_lanes=None):
    """The program and memory images of ``decoder`` (an :class:`HwDecoder`, a8) on a
    token core with the engine ``params`` (:func:`token_engine`), its KV region sized
    for ``positions`` (default: the model's maximum), its LM head unit
    (:class:`~ternary_accel.hw.rtl.head.HeadDot`) ``head_rows`` rows of the engine's
    ``lanes`` a beat (default: the engine's rows), its attention unit's products
    ``attention_lanes`` codes a cycle (default: :func:`hw.timing.attention_lanes`)."""
    c = decoder.config
    n = decoder.numerics
    params = token_engine(hidden=c.hidden, ffn=c.ffn) if params is None else params
    positions = c.max_position_embeddings if positions is None else positions
    _check(decoder, params, positions)
    scratch = ScratchLayout(c.hidden, c.ffn, c.heads * c.head_dim, c.kv_heads * c.head_dim)
    vec, wgt, prog, listing = [decoder.hw_embedding.reshape(-1)], [], [], []
    for op, fields, key in token_operations(c, params, n, positions):
        fields = dict(fields)
        if op == NORM:
            _, layer, name = key
            if layer is None:                     # the final norm, the head's int8 input
                decoder.hw_head                   # makes the final norm's constants too
                (gint, gexp), eps = decoder._hw_final
                bits = n.head_act_bits
            else:
                constants = decoder.hw_layer(layer)
                gint, gexp = constants["gains"][name]
                eps, bits = constants["eps"][name], 8
            cm, ce = H.norm_constant(fields["n"], bits, n)
            vec.append(np.asarray(gint, dtype=np.int64))
            fields.update(gexp=gexp, eps=eps, cmant=int(cm), cexp=int(ce))
        elif op == MATMUL:
            _, layer, name = key
            words = pack_projection(decoder.layer_weights(layer).projections[name].values,
                                    params)
            if words.shape[0] != projection_words(fields["reps"], fields["n"], params):
                raise ProgramError(f"projection {name} of layer {layer} packs into "
                                   f"{words.shape[0]} words, not the mapping's")
            wgt.append(words)
            fields["mant"], fields["exp"] = decoder.hw_layer(layer)["scales"][name]
        prog.append(encode_instruction(op=op, **fields))
        listing.append((OPS[op][0], fields))
    head_rows = params.rows if head_rows is None else head_rows
    if isinstance(head_rows, bool) or not isinstance(head_rows, int) or head_rows < 1:
        raise ProgramError(f"head_rows must be a positive integer, not {head_rows!r}")
    from ternary_accel.hw.timing import attention_lanes as _lanes
    try:
        attention_lanes = _lanes(c.head_dim, attention_lanes)
    except ValueError as error:
        raise ProgramError(f"attention_lanes: {error}") from None
    head_fields, tiles = _head_beats(decoder.hw_head, n, params.lanes, head_rows)
    kv_entries = c.layers * 2 * c.kv_heads * positions
    image = TokenImage(vec=np.concatenate(vec), wgt=np.concatenate(wgt), head=head_fields,
                       kv_entries=kv_entries, prog=prog)
    return TokenProgram(image, params, n, c, scratch, positions, head_rows, tiles, listing,
                        attention_lanes)


class GoldenToken:
    """The program run in NumPy with the hardware numerics' functions, as the core runs
    it: the golden model of :class:`~ternary_accel.hw.rtl.token.TokenCore`.

    Parameters
    ----------
    program : TokenProgram
    """

    def __init__(self, program):
        self.program = program
        c, n = program.config, program.numerics
        self.kv_codes = np.zeros((program.image.kv_entries, c.head_dim), dtype=np.int64)
        self.kv_peak = np.zeros(program.image.kv_entries, dtype=np.int64)
        self.kv_qmax = np.ones(program.image.kv_entries, dtype=np.int64)
        self._rsqrt = H.rsqrt_table(n.rsqrt_seed_bits, n.rsqrt_bits)
        self._exp2 = H.exp2_table(n.softmax_frac, n.exp_bits)
        self._cos, self._sin = H.rope_table(c.head_dim, c.rope_theta, program.positions,
                                            n.rope_bits)
        self.saturations = H.Saturations()

    def _weights(self, at, out_f, in_f):
        """The ternary weights of the projection at ``wgt[at]`` (unpacked from the
        image, so the golden run reads what the core reads)."""
        p = self.program.params
        mapping = p.mapping(out_f, in_f)
        words = mapping.weight_beats * mapping.port_words_per_beat
        raw = self.program.image.wgt[at:at + words]
        m, k = p.rows, p.lanes
        beats = (out_f // m) * (in_f // k)
        if p.assembled:
            codes = np.asarray(unpack_words(raw, mapping.packing,
                                            mapping.port_bits_used), dtype=np.int64)
            per = mapping.port_words_per_beat * port_codes_per_word(
                mapping.packing, mapping.port_bits_used)
            codes = codes.reshape(beats, per)[:, :m * k]
        else:
            codes = np.asarray(unpack_trits(raw.reshape(-1), raw.size * 5),
                               dtype=np.int64).reshape(beats, -1)[:, :m * k]
        return (codes.reshape(out_f // m, in_f // k, m, k).transpose(0, 2, 1, 3)
                .reshape(out_f, in_f))

    def run(self, token, position):
        """One token at ``position``: returns ``(next token, logits)`` (residual-format
        integers, one per vocabulary entry)."""
        prog = self.program
        n, img = prog.numerics, prog.image
        if not 0 <= position < prog.positions:
            raise ProgramError(f"position {position} is outside the KV region "
                               f"(0..{prog.positions - 1})")
        scratch = np.zeros(prog.scratch.words, dtype=np.int64)
        codes = factor = None
        tally = self.saturations
        for word in img.prog:
            f = decode_instruction(word)
            op = f["op"]
            a, b, d, width, reps = f["a"], f["b"], f["d"], f["n"], f["reps"]
            if op == END:
                break
            if op == LOAD:
                at = f["addr"] + (token * width if f["sub"] else 0)
                scratch[d:d + width] = img.vec[at:at + width]
            elif op == NORM:
                x = scratch[a:a + width][None]
                gains = (img.vec[f["addr"]:f["addr"] + width], f["gexp"])
                bits = 8
                nq = H.norm_quant(x, gains, f["eps"], n, bits=bits, tally=tally,
                                  table=self._rsqrt)
                codes, factor = nq.values[0], (nq.mant, nq.exp)
            elif op == MATMUL:
                w = self._weights(f["addr"], reps, width)
                acc = w @ codes[:width]
                km, ke = H.output_factor(factor[0], factor[1], f["mant"], f["exp"], n)
                scratch[d:d + reps] = H.rescale(acc[None], km[:, None], ke[:, None],
                                                n.resid_frac, n.resid_bits, tally)[0]
            elif op == ROPE:
                x = scratch[a:a + width * reps].reshape(reps, 1, width)
                out = H.rope_rotate(x, self._cos[position:position + 1][None],
                                    self._sin[position:position + 1][None], n, tally)
                scratch[d:d + width * reps] = out.reshape(-1)
            elif op == KV_WRITE:
                qmax = (1 << (f["bits"] - 1)) - 1
                x = scratch[a:a + width * reps].reshape(reps, width)
                q, peak = H.quantize_absmax(x, qmax, n.recip_bits)
                at = f["addr"] + np.arange(reps) * f["stride"] + position
                self.kv_codes[at], self.kv_peak[at], self.kv_qmax[at] = q, peak, qmax
            elif op == ATTEND:
                qmax = (1 << (n.qk_bits - 1)) - 1
                for h in range(reps):
                    q = scratch[a + h * width:a + (h + 1) * width][None]
                    qc, qm = H.quantize_absmax(q, qmax, n.recip_bits)
                    rm, re_ = H.score_factor(qm, qmax, width, n)
                    kat = f["addr"] + (h // b) * f["stride"] + np.arange(position + 1)
                    vat = f["addr2"] + (h // b) * f["stride"] + np.arange(position + 1)
                    km, ke = H.code_factor(self.kv_peak[kat], self.kv_qmax[kat], n)
                    vm, ve = H.code_factor(self.kv_peak[vat], self.kv_qmax[vat], n)
                    dots = self.kv_codes[kat] @ qc[0]
                    scores = H.attention_scores(dots[None], km[None], ke[None], rm[:, None],
                                                re_[:, None], n, tally)
                    w = H.softmax_weights(scores, n, self._exp2)
                    out = H.attention_values(w, vm[None], ve[None], self.kv_codes[vat][None], n)
                    scratch[d + h * width:d + (h + 1) * width] = H.saturate(
                        out[0], n.resid_bits, tally, "attention output")
            elif op == ELEMENTWISE:
                x, y = scratch[a:a + width], scratch[b:b + width]
                fn = {ADD: lambda: H.residual_add(x, y, n, tally),
                      RELU2: lambda: H.relu2(x, n, tally),
                      GATE: lambda: H.gate_product(x, y, n, tally)}
                if f["sub"] not in fn:
                    raise ProgramError(f"ELEMENTWISE sub-operation {f['sub']} is not one of "
                                       f"ADD, RELU2, GATE")
                scratch[d:d + width] = fn[f["sub"]]()
            elif op == HEAD:
                head = self.program.image.head
                logits = self._head(head, codes[:width], factor, reps)
                return int(H.argmax(logits[None])[0]), logits
            else:
                raise ProgramError(f"opcode {op} is not an operation")
        raise ProgramError("the program ended without a HEAD")

    #: Rows of the head the golden run takes at once (their codes as int64 products).
    HEAD_BLOCK_ROWS = 4096

    def _head(self, fields, values, factor, vocab):
        """The head from the image's beats (what the core reads), then
        :func:`model.hwnum.head_accumulators` and :func:`~model.hwnum.head_logits`,
        a block of tiles at a time (each row's logit is its own: a large vocabulary's
        head needs no int64 copy of the whole table)."""
        prog = self.program
        n, lanes = prog.numerics, prog.params.lanes
        tiles, rows = prog.head_tiles, prog.head_rows
        per = max(1, self.HEAD_BLOCK_ROWS // rows)
        logits = []
        for t in range(0, tiles, per):
            block = slice(t, min(t + per, tiles))
            count = min(vocab, block.stop * rows) - t * rows
            if count <= 0:
                break
            codes = fields["codes"][block].transpose(0, 2, 1, 3).reshape(
                -1, fields["codes"].shape[1] * lanes)[:count]
            groups = None
            if n.head == "grouped":
                step = n.head_group // lanes
                groups = fields["mult"][block].transpose(0, 2, 1).reshape(
                    -1, fields["mult"].shape[1])[:count, ::step]
            head = H.HeadMatrix(codes, groups, fields["mant"][block].reshape(-1)[:count],
                                fields["exp"][block].reshape(-1)[:count])
            acc = H.head_accumulators(values[None], head, lanes)
            logits.append(H.head_logits(acc, np.atleast_1d(factor[0]),
                                        np.atleast_1d(factor[1]), head, n,
                                        self.saturations)[0])
        return np.concatenate(logits)


#: Cycles the sequencer spends on an instruction before its operation starts: the
#: fetch command, the instruction word (a memory answering on the cycle after the
#: command), the set-up of the movers.
SEQUENCER_CYCLES = 3


def operation_cycles(op, fields, *, params, numerics, position, head_rows=None,
                     attention_lanes=None):
    """Cycles of one operation on the token core without stalls, memories answering a
    cycle after each command (what ``TokenCore.cycles`` counts for it): the unit's
    cycle model (:mod:`ternary_accel.hw.timing`) plus the movers' latencies.

    * LOAD: the command, then a word a cycle, then the write: ``n + 2``;
    * NORM: :func:`~hw.timing.norm_quant_cycles` and the command's cycle;
    * MATMUL: the engine's :attr:`~hw.timing.LayerMapping.cycles` on the projection,
      the last tile's ``rows`` results through the serializer (one a cycle; tiles of
      fewer beats than rows wait for it), the write;
    * ROPE: :func:`~hw.timing.rope_cycles` a head, back to back, the read and the write;
    * KV_WRITE: a head at a time, :func:`~hw.timing.absmax_cycles` and the entry's
      write, then one;
    * ATTEND: the heads pipelined in the attention unit (the next query is quantized
      while a head's row runs), a head every ``max(absmax_cycles(head_dim), head_dim +
      n B, softmax_cycles(n) + 2 n (B - 1) + 4)`` cycles for ``n`` positions and ``B =
      head_dim / attention_lanes`` cycles a key, then the last head's
      :func:`~hw.timing.attention_head_cycles`, the read and the write;
    * ELEMENTWISE: ``n`` and the unit's two stages, the reads and the write;
    * HEAD: the token's codes (:func:`~hw.timing.head_load_cycles`), the head's rows
      (:func:`~hw.timing.head_cycles` over whole tiles), the rescale and the argmax;
    * END: 0 (its fetch is the sequencer's).
    """
    from ternary_accel.hw import timing as T
    n, reps = fields.get("n", 0), fields.get("reps", 0)
    if op == LOAD:
        return n + 2
    if op == NORM:
        return T.norm_quant_cycles(n, numerics) + 1
    if op == MATMUL:
        m = params.mapping(reps, n)
        # the results leave one a cycle: a tile shorter than its rows waits for them
        wait = max(0, m.rows - m.col_beats * m.beat_period)
        return m.cycles + (m.row_tiles - 1) * wait + m.rows + 1
    if op == ROPE:
        return reps * T.rope_cycles(n) + 2
    if op == KV_WRITE:
        return reps * (T.absmax_cycles(n, numerics) + 1) + 1
    if op == ATTEND:
        positions = position + 1
        lanes = T.attention_lanes(n, attention_lanes)
        beat = n // lanes                      # cycles a key (a value) stays on the unit
        # A head every: the query's quantizer; the query slot; the softmax row, its
        # scores and weights B cycles each. The next head's keys follow this head's
        # values on the one KV channel, so none is taken ahead (the unit alone takes
        # up to four: hw.timing.attention_head_interval).
        interval = max(T.absmax_cycles(n, numerics), n + positions * beat,
                       T.softmax_cycles(positions, numerics) + 2 * positions * (beat - 1)
                       + 4)
        return ((reps - 1) * interval
                + T.attention_head_cycles(positions, n, numerics, lanes) + 2)
    if op == ELEMENTWISE:
        return n + 4
    if op == HEAD:
        rows = params.rows if head_rows is None else head_rows
        vocab = -(-reps // rows) * rows
        return (T.head_load_cycles(n, lanes=params.lanes)
                + T.head_cycles(vocab, n, lanes=params.lanes, rows=rows) + 3)
    if op == END:
        return 0
    raise ProgramError(f"opcode {op} is not an operation")


def token_cycles(config, params, numerics, position, *, positions=None, head_rows=None,
                 attention_lanes=None):
    """The cycle model of one token at ``position`` on the token core without stalls:
    ``{counter: cycles}`` (:data:`COUNTERS`: each operation's summed over the program,
    and the sequencer's :data:`SEQUENCER_CYCLES` an instruction), equal to
    ``TokenCore.cycles`` in simulation. Needs only the configuration (:func:`token_operations`)."""
    positions = config.max_position_embeddings if positions is None else positions
    ops = token_operations(config, params, numerics, positions)
    cycles = dict.fromkeys(COUNTERS, 0)
    for op, fields, _ in ops:
        cycles[COUNTERS[op]] += operation_cycles(op, fields, params=params,
                                                 numerics=numerics, position=position,
                                                 head_rows=head_rows,
                                                 attention_lanes=attention_lanes)
    cycles["sequencer"] += SEQUENCER_CYCLES * len(ops)
    return cycles
