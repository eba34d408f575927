"""The token core (hw.rtl.token) under amaranth.sim: whole tokens from the program,
every logit and the argmax equal to the golden run of the program and to the decoder in
hardware numerics, with idle cycles on every memory channel and backpressure on the
logits and the KV writes; a prefill of several positions (the cache growing); a bad
opcode stops the program with its error flag, without a hang."""

import numpy as np
import pytest

from ternary_accel.hw import program as P
from ternary_accel.model import hwnum as H
from ternary_accel.sim.token import TokenBench
from token_models import PROMPT
from token_models import micro_decoder as _decoder


# Slow (seconds a token): the fast loop runs whole tokens through the core in
# test_token_cycles (the cycle counters) and test_a_bad_opcode_stops_the_program_with_its_flag.
@pytest.mark.parametrize("numerics,idle", [
    pytest.param(H.DEFAULT, 0.0, id="int8-head", marks=pytest.mark.slow),
    pytest.param(H.GROUPED_HEAD, 0.3, id="grouped-head-stalls", marks=pytest.mark.slow)])
def test_tokens_are_the_golden_model(numerics, idle):
    decoder = _decoder(numerics)
    program = P.make_program(decoder, P.token_engine(8, 4, hidden=32, ffn=64),
                             positions=len(PROMPT))
    bench = TokenBench(program, idle=idle, seed=3)
    tokens, logits = bench.run(PROMPT)
    golden = P.GoldenToken(program)
    cache = decoder.new_cache()
    for position, token in enumerate(PROMPT):
        expected_token, expected = golden.run(token, position)
        assert np.array_equal(logits[position], expected), f"position {position}"
        assert tokens[position] == expected_token
        ints = decoder.forward([token], cache)[0].astype(np.float64) * numerics.one
        assert np.array_equal(logits[position], np.rint(ints).astype(np.int64))
    assert bench.errors == [0] * len(PROMPT)


def test_a_bad_opcode_stops_the_program_with_its_flag():
    program = P.make_program(_decoder(H.DEFAULT), P.token_engine(8, 4, hidden=32, ffn=64),
                             positions=2)
    program.image.prog[1] = P.encode_instruction(op=15)
    bench = TokenBench(program)
    with pytest.raises(AssertionError, match="0 logits, expected 48"):
        bench.run([1], cycles=2000)
    assert bench.errors == [1]          # TokenErrors.opcode, the lowest bit
