# amaranth: UnusedElaboratable=no
"""Memory port word packings (base3, 3in5, 2bit): the NumPy model on every group value,
and the RTL word decoder exhaustively against it.

(The first line silences Amaranth's warning for the decoders built only to check their
ports and constructor errors.)"""

import itertools

import numpy as np
import pytest
from amaranth.hdl import ClockDomain, Module
from amaranth.sim import Simulator

from ternary_accel.hw.rtl.unpack import WordDecoder, group_table, rom_table
from ternary_accel.model.encoding import (BASE3, CODE_INVALID, CODE_NEG, CODE_POS, CODE_ZERO, CODES2,
                            DEFAULT_PACKING, PACKINGS, TRITS3_IN5, bits_per_weight,
                            check_packing, check_port_bits, codes_per_group, codes_per_word,
                            decode_words, encode_lane_codes, group_bits, pack_trits,
                            pack_words, packed_length, unpack_trits, unpack_words, words_for)

PORT_BITS = (8, 16, 24, 64, 128)
#: First invalid group value of each packing that has one.
LIMIT = {BASE3: 243, TRITS3_IN5: 27}


# Python-int reference of the layout, independent of the vectorized model -------------

def word_int(word):
    return int.from_bytes(bytes(int(b) for b in word), "little")


def int_word(value, port_bits):
    return np.frombuffer(value.to_bytes(port_bits // 8, "little"), dtype=np.uint8)


def reference_words(weights, packing, port_bits):
    """Words built one group at a time with Python integers."""
    size, codes = group_bits(packing), codes_per_group(packing)
    per_word = (port_bits // size) * codes
    padded = list(weights) + [0] * (-len(weights) % per_word)
    words = []
    for start in range(0, len(padded), per_word):
        value = 0
        for g in range(port_bits // size):
            trits = padded[start + g * codes:start + (g + 1) * codes]
            if packing == CODES2:
                group = {0: CODE_ZERO, 1: CODE_POS, -1: CODE_NEG}[trits[0]]
            else:
                group = sum((w + 1) * 3 ** i for i, w in enumerate(trits))
            value |= group << (g * size)
        words.append(int_word(value, port_bits))
    return np.array(words, dtype=np.uint8).reshape(-1, port_bits // 8)


def every_group(packing):
    """Weights that hold every valid group once (trit 0 first), then one more weight."""
    if packing == CODES2:
        groups = [[0], [1], [-1]]
    else:
        groups = [list(t) for t in
                  itertools.product((-1, 0, 1), repeat=codes_per_group(packing))]
    return np.array([w for g in groups for w in g] + [1], dtype=np.int8)


def set_group(words, word, group, value, packing, port_bits):
    """A copy of ``words`` with group ``group`` of word ``word`` set to ``value``."""
    size = group_bits(packing)
    out = words.copy()
    x = word_int(out[word]) & ~(((1 << size) - 1) << (group * size))
    out[word] = int_word(x | value << (group * size), port_bits)
    return out


# NumPy model --------------------------------------------------------------------------

def test_geometry():
    assert PACKINGS == ("base3", "3in5", "2bit") and DEFAULT_PACKING == TRITS3_IN5
    assert [codes_per_word(p, 128) for p in PACKINGS] == [80, 75, 64]
    assert [codes_per_word(p, 8) for p in PACKINGS] == [5, 3, 4]
    assert [codes_per_word(p, 24) for p in PACKINGS] == [15, 12, 12]
    assert [bits_per_weight(p) for p in PACKINGS] == [1.6, 5 / 3, 2.0]
    assert [words_for(512, p, 128) for p in PACKINGS] == [7, 7, 8]
    assert [words_for(512, p, 64) for p in PACKINGS] == [13, 15, 16]
    assert words_for(0, BASE3, 8) == 0 and words_for(75, TRITS3_IN5, 128) == 1
    assert words_for(76, TRITS3_IN5, 128) == 2


def test_digit_and_bit_order():
    # trit 0 is the least significant digit, as in pack_trits; group 0 in the low bits
    assert pack_trits([1, -1, -1, -1, -1]).tolist() == [2]
    assert pack_words([1, -1, -1, -1, -1], BASE3, 8).tolist() == [[2]]
    assert pack_words([1, -1, -1], TRITS3_IN5, 8).tolist() == [[2]]
    assert pack_words([-1, -1, 1], TRITS3_IN5, 8).tolist() == [[18]]
    # 3in5 group 1 straddles bytes 0 and 1 (value 26 at bits 5..9); group 2 is padding,
    # three zero weights (13 at bits 10..14); bit 15 is unused
    assert pack_words([-1, -1, -1, 1, 1, 1], TRITS3_IN5, 16).tolist() == [
        [26 << 5 & 0xFF, 26 >> 3 | 13 << 2]]
    assert pack_words([1, -1, 0, 0], CODES2, 8).tolist() == [[0b00_00_11_01]]


@pytest.mark.parametrize("port_bits", PORT_BITS)
@pytest.mark.parametrize("packing", PACKINGS)
def test_round_trip_every_group(packing, port_bits):
    per_word = codes_per_word(packing, port_bits)
    weights = every_group(packing)
    if len(weights) % per_word == 0:
        weights = np.append(weights, -1)
    count = len(weights)
    words = pack_words(weights, packing, port_bits)
    assert words.dtype == np.uint8
    assert words.shape == (words_for(count, packing, port_bits), port_bits // 8)
    assert words.shape[0] * per_word > count   # the last word is padded
    assert np.array_equal(words, reference_words(weights.tolist(), packing, port_bits))
    assert np.array_equal(unpack_words(words, packing, port_bits, count), weights)
    padded = unpack_words(words, packing, port_bits)
    assert len(padded) == words.shape[0] * per_word
    assert np.array_equal(padded[:count], weights) and not padded[count:].any()
    codes, invalid = decode_words(words, packing, port_bits)
    assert codes.dtype == np.uint8 and codes.shape == (len(words), per_word)
    assert np.array_equal(codes.reshape(-1), encode_lane_codes(padded))
    assert invalid.dtype == np.bool_ and invalid.shape == (len(words),)
    assert not invalid.any()


@pytest.mark.parametrize("count", [1, 5, 7, 24, 80, 513])
def test_base3_word_is_pack_trits(count):
    weights = np.random.default_rng(count).integers(-1, 2, count)
    beat = pack_trits(weights)
    assert np.array_equal(pack_words(weights, BASE3, 8 * packed_length(count)), beat[None])
    # on a fixed port the bytes run on in the same order, padded with zero weights
    words = pack_words(weights, BASE3, 128).reshape(-1)
    assert np.array_equal(words[:len(beat)], beat)
    assert np.array_equal(words[len(beat):], pack_trits(np.zeros(5 * (len(words) -
                                                                      len(beat)))))


@pytest.mark.parametrize("packing", [BASE3, TRITS3_IN5])
def test_invalid_group_values(packing):
    port_bits = 24
    groups = port_bits // group_bits(packing)
    word, group = 1, groups - 1   # 3in5: group 3 at bits 15..19 straddles two bytes
    codes = codes_per_group(packing)
    weights = np.random.default_rng(3).integers(-1, 2, 3 * codes_per_word(packing, port_bits))
    words = pack_words(weights, packing, port_bits)
    name = "byte" if packing == BASE3 else "group"
    for value in range(LIMIT[packing], 1 << group_bits(packing)):
        bad = set_group(words, word, group, value, packing, port_bits)
        first = group * codes
        with pytest.raises(ValueError, match=rf"invalid {packing} {name} value {value} .*"
                                             rf"at word {word}, {name} {group} \(bits "
                                             rf"{group * group_bits(packing)}\.\..*codes "
                                             rf"{first}\.\.{first + codes - 1}\)"):
            unpack_words(bad, packing, port_bits)
        expected = weights.copy()
        index = word * codes_per_word(packing, port_bits) + first
        expected[index:index + codes] = 0
        assert np.array_equal(unpack_words(bad, packing, port_bits, strict=False), expected)
        lanes, invalid = decode_words(bad, packing, port_bits)
        assert invalid.tolist() == [False, True, False]
        assert np.array_equal(lanes.reshape(-1), encode_lane_codes(expected))
    # the message names the first invalid group in word order
    bad = set_group(set_group(words, 2, 0, LIMIT[packing], packing, port_bits),
                    1, 1, LIMIT[packing] + 1, packing, port_bits)
    with pytest.raises(ValueError, match=rf"value {LIMIT[packing] + 1} .*at word 1, {name} 1 "):
        unpack_words(bad, packing, port_bits)


def test_invalid_2bit_code_passes_through():
    port_bits, word, code = 16, 1, 5
    weights = np.random.default_rng(4).integers(-1, 2, 3 * 8)
    words = pack_words(weights, CODES2, port_bits)
    bad = set_group(words, word, code, CODE_INVALID, CODES2, port_bits)
    with pytest.raises(ValueError, match=r"invalid lane code 0b10 at word 1, code 5 "
                                         r"\(bits 10\.\.11\)"):
        unpack_words(bad, CODES2, port_bits)
    expected = weights.copy()
    expected[word * 8 + code] = 0
    assert np.array_equal(unpack_words(bad, CODES2, port_bits, strict=False), expected)
    lanes, invalid = decode_words(bad, CODES2, port_bits)
    assert lanes[word, code] == CODE_INVALID
    lanes[word, code] = CODE_ZERO
    assert np.array_equal(lanes.reshape(-1), encode_lane_codes(expected))
    assert not invalid.any()


@pytest.mark.parametrize("port_bits", [8, 16, 24, 64, 128])
def test_3in5_top_bits_are_ignored(port_bits):
    used = 5 * (port_bits // 5)
    assert port_bits - used == port_bits % 5 > 0
    weights = np.random.default_rng(port_bits).integers(-1, 2, 5 * codes_per_word(
        TRITS3_IN5, port_bits))
    words = pack_words(weights, TRITS3_IN5, port_bits)
    assert all(word_int(w) >> used == 0 for w in words)   # written as 0
    for pattern in range(1, 1 << (port_bits - used)):   # every nonzero top-bit pattern
        noisy = np.array([int_word(word_int(w) | pattern << used, port_bits) for w in words])
        assert not np.array_equal(noisy, words)
        assert np.array_equal(unpack_words(noisy, TRITS3_IN5, port_bits), weights)
        lanes, invalid = decode_words(noisy, TRITS3_IN5, port_bits)
        assert np.array_equal(lanes, decode_words(words, TRITS3_IN5, port_bits)[0])
        assert not invalid.any()


def test_bad_arguments():
    with pytest.raises(ValueError, match="packing must be one of base3, 3in5, 2bit, not "
                                         "'base-3'"):
        check_packing("base-3")
    with pytest.raises(ValueError, match="packing must be one of"):
        pack_words([0], None, 8)
    for bad in (0, -8, 12, 4):
        with pytest.raises(ValueError, match=f"multiple of 8, not {bad}"):
            check_port_bits(bad)
    for bad in (True, 8.0, "8"):
        with pytest.raises(TypeError, match="port_bits must be a positive integer"):
            codes_per_word(BASE3, bad)
    assert check_port_bits(np.int64(16)) == 16
    with pytest.raises(ValueError, match=r"ternary .* found 2 at index \(1,\)"):
        pack_words([0, 2], TRITS3_IN5, 8)
    with pytest.raises(ValueError, match=r"weights must be 1-D, not shape \(2, 2\)"):
        pack_words(np.zeros((2, 2)), CODES2, 8)
    with pytest.raises(ValueError, match="count must be a non-negative integer"):
        words_for(-1, BASE3, 8)
    words = pack_words([1, 0, -1], BASE3, 16)
    with pytest.raises(ValueError, match=r"16-bit port must have shape \(words, 2\), not "
                                         r"\(2,\)"):
        unpack_words(words[0], BASE3, 16)
    with pytest.raises(ValueError, match=r"shape \(words, 1\), not \(1, 2\)"):
        decode_words(words, BASE3, 8)
    with pytest.raises(ValueError, match="word bytes must be in 0..255"):
        decode_words([[256, 0]], BASE3, 16)
    with pytest.raises(ValueError, match=r"count must be an integer in 0\.\.10, not 11"):
        unpack_words(words, BASE3, 16, 11)


# RTL word decoder ---------------------------------------------------------------------

def exhaustive_words(packing, port_bits):
    """Every group value at every group position, beside every pattern of the ignored
    top bits: word k holds ``(k + g) % values`` in group g and ``k // values`` on top."""
    size = group_bits(packing)
    values, groups = 1 << size, port_bits // size
    spare = port_bits - groups * size
    words = []
    for k in range(values << spare):
        x = sum(((k + g) % values) << (g * size) for g in range(groups))
        words.append(int_word(x | (k // values) << (groups * size), port_bits))
    return np.array(words, dtype=np.uint8)


def test_tables_come_from_the_model():
    assert group_table(BASE3) == rom_table()
    weights = unpack_trits(np.arange(243))
    assert np.array_equal(pack_words(weights, BASE3, 8).reshape(-1), np.arange(243))
    table = group_table(TRITS3_IN5)
    assert len(table) == 32 and table[0] == 0b111111 and table[2] == 0b111101
    assert all(entry == 1 << 6 for entry in table[27:])


@pytest.mark.parametrize("packing, decoder, port_bits", [
    (BASE3, "rom", 8), (BASE3, "rom", 128), (BASE3, "mulshift", 24),
    (TRITS3_IN5, "rom", 8), (TRITS3_IN5, "rom", 16), (TRITS3_IN5, "rom", 128),
    (CODES2, "rom", 8), (CODES2, "rom", 128)])
def test_word_decoder_every_group_value(packing, decoder, port_bits):
    dut = WordDecoder(packing=packing, port_bits=port_bits, decoder=decoder)
    words = exhaustive_words(packing, port_bits)
    expected_codes, expected_invalid = decode_words(words, packing, port_bits)
    # the expectation itself covers the corners: invalid flags, passed-through codes
    if packing == CODES2:
        assert (expected_codes == CODE_INVALID).any() and not expected_invalid.any()
    else:
        assert expected_invalid.any() and not expected_invalid.all()
    got_codes, got_invalid, cycles = [], [], []
    idle = itertools.cycle([0, 0, 1, 0, 2])            # producer pauses
    ready = itertools.cycle([1, 1, 0, 1, 0, 0, 1])     # consumer backpressure
    junk = np.random.default_rng(5).integers(0, 256, (len(words), port_bits // 8))

    async def producer(ctx):
        for word, pause, noise in zip(words, idle, junk):
            ctx.set(dut.i.valid, 0)
            ctx.set(dut.i.payload, [int(b) for b in noise])   # never transferred
            for _ in range(pause):
                await ctx.tick()
            ctx.set(dut.i.payload, [int(b) for b in word])
            ctx.set(dut.i.valid, 1)
            await ctx.tick().until(dut.i.ready)
        ctx.set(dut.i.valid, 0)

    async def consumer(ctx):
        for _ in range(8 * len(words)):
            ctx.set(dut.o.ready, next(ready))
            *_, i_valid, i_ready, o_valid, o_ready, i_payload, o_payload, invalid = \
                await ctx.tick().sample(dut.i.valid, dut.i.ready, dut.o.valid, dut.o.ready,
                                        dut.i.payload, dut.o.payload, dut.invalid)
            cycles.append((i_valid, o_valid, i_ready, o_ready,
                           [int(b) for b in i_payload], int(invalid)))
            if o_valid and o_ready:
                got_codes.append([int(c) for c in o_payload])
                got_invalid.append(int(invalid))
                if len(got_codes) == len(words):
                    return

    m = Module()
    m.submodules.dut = dut
    m.domains.sync = ClockDomain()   # the decoder is combinational: a clock for the benches
    sim = Simulator(m)
    sim.add_clock(1e-8)
    sim.add_testbench(producer)
    sim.add_testbench(consumer)
    sim.run()
    assert len(got_codes) == len(words)
    assert np.array_equal(np.array(got_codes), expected_codes)
    assert got_invalid == expected_invalid.astype(int).tolist()
    assert all(i_valid == o_valid and i_ready == o_ready
               for i_valid, o_valid, i_ready, o_ready, *_ in cycles)
    # both sides stalled on some cycles, and invalid follows the payload, valid or not
    assert any(not v for v, *_ in cycles) and any(not r for *_, r, _, _ in cycles)
    flags = decode_words(np.array([c[4] for c in cycles]), packing, port_bits)[1]
    assert [c[5] for c in cycles] == flags.astype(int).tolist()


def test_word_decoder_ports_and_errors():
    for packing, per_word in zip(PACKINGS, (80, 75, 64)):
        dut = WordDecoder(packing=packing, port_bits=128)
        assert dut.codes_per_word == per_word and dut.packing == packing
        assert dut.port_bits == 128 and dut.decoder == "rom"
        assert dut.i.payload.shape().size == 128
        assert dut.o.payload.shape().size == 2 * per_word
    with pytest.raises(ValueError, match="packing must be one of base3, 3in5, 2bit"):
        WordDecoder(packing="tq1", port_bits=8)
    with pytest.raises(ValueError, match="multiple of 8, not 20"):
        WordDecoder(packing=BASE3, port_bits=20)
    with pytest.raises(TypeError, match="port_bits must be a positive integer"):
        WordDecoder(packing=BASE3, port_bits="128")
    with pytest.raises(ValueError, match="decoder must be one of mulshift, rom"):
        WordDecoder(packing=BASE3, port_bits=8, decoder="divide")
    for packing in (TRITS3_IN5, CODES2):
        with pytest.raises(ValueError, match=f"decodes base3 bytes; {packing} has one "
                                             "decoder, 'rom'"):
            WordDecoder(packing=packing, port_bits=8, decoder="mulshift")
    with pytest.raises(ValueError, match="2bit packing has no table"):
        group_table(CODES2)
