"""The token program (hw.program): its golden run equals the decoder in hardware
numerics token for token (every logit), for both head formats and both weight ports;
instruction words round-trip; what the program cannot express is refused clearly."""

import numpy as np
import pytest

from ternary_accel.hw import program as P
from ternary_accel.model import hwnum as H
from ternary_accel.model.config import TINY
from ternary_accel.model.hwdecoder import HwDecoder
from ternary_accel.model.weights import MasterWeights, random_master_weights

PROMPT = [1, 5, 9, 200, 33, 7]


@pytest.fixture(scope="module")
def weights():
    return MasterWeights(TINY, random_master_weights(TINY, seed=3))


@pytest.mark.parametrize("numerics", [H.DEFAULT, H.GROUPED_HEAD], ids=["int8", "grouped"])
@pytest.mark.parametrize("port", [None, 32], ids=["whole-beats", "port32"])
def test_golden_program_is_the_decoder(weights, numerics, port):
    decoder = HwDecoder(weights, numerics=numerics)
    params = P.token_engine(8, 8 if port is None else 4, hidden=TINY.hidden, ffn=TINY.ffn,
                            weight_port_bits=port)
    program = P.make_program(decoder, params, positions=len(PROMPT))
    golden = P.GoldenToken(program)
    cache = decoder.new_cache()
    for position, token in enumerate(PROMPT):
        following, logits = golden.run(token, position)
        expected = decoder.forward([token], cache)[0].astype(np.float64) * numerics.one
        assert np.array_equal(logits, np.rint(expected).astype(np.int64))
        assert following == int(np.argmax(logits))


def test_instruction_words_round_trip():
    rng = np.random.default_rng(1)
    for _ in range(200):
        fields = {}
        for name, bits, signed in P.INSTRUCTION:
            low, high = P._field_limits(bits, signed)
            fields[name] = int(rng.integers(low, high, endpoint=True))
        assert P.decode_instruction(P.encode_instruction(**fields)) == fields


def test_fields_that_do_not_fit_are_refused():
    with pytest.raises(P.ProgramError, match="MATMUL field n = 65536 does not fit 16 bits"):
        P.encode_instruction(op=P.MATMUL, n=1 << 16)
    with pytest.raises(P.ProgramError, match="unknown instruction field 'size'"):
        P.encode_instruction(op=P.END, size=1)


def test_what_the_program_cannot_run_is_refused(weights):
    with pytest.raises(P.ProgramError, match="a8 activations"):
        P.make_program(HwDecoder(weights, activations="a4.8"))
    with pytest.raises(P.ProgramError, match="KV codes"):
        P.make_program(HwDecoder(weights, kv_bits=4))
    with pytest.raises(P.ProgramError, match="not a multiple of the engine's lanes"):
        P.make_program(HwDecoder(weights), P.token_engine(48, 8, hidden=64, ffn=128))
    with pytest.raises(P.ProgramError, match="positions must be"):
        P.make_program(HwDecoder(weights), positions=0)
    golden = P.GoldenToken(P.make_program(HwDecoder(weights), positions=4))
    with pytest.raises(P.ProgramError, match="position 4 is outside the KV region"):
        golden.run(1, 4)


def test_the_kv_word_is_what_the_accounting_charges():
    from ternary_accel.hw.rtl.attention import KV_LAYOUT, kv_code_bits
    from ternary_accel.hw.rtl.scalar import EXP_WIDTH
    for numerics in (H.DEFAULT, H.WIDE):
        word = KV_LAYOUT(16, numerics).size
        assert word == 16 * kv_code_bits(numerics) + H.kv_factor_bits(numerics)
    assert H.FACTOR_EXP_BITS == EXP_WIDTH + 2        # the factors AbsmaxQuant makes


def test_the_documented_instruction_word_is_the_code():
    import re
    from pathlib import Path
    text = (Path(__file__).parents[2] / "docs" / "accelerator.md").read_text()
    rows = re.findall(r"^\| (\w+) \| (\d+)( \(signed\))? \|", text, re.M)
    assert [(name, int(bits), bool(s)) for name, bits, s in rows] == list(P.INSTRUCTION)
    assert f"one {P.instruction_bits()}-bit word" in text
