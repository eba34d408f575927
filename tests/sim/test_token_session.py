"""The token core under Verilator with its memories in the harness
(:class:`sim.token_session.TokenSession`): whole tokens of the one-layer ``MICRO`` model
bit-exact to the golden program with stalls on every channel, a second run continuing
the positions on the KV cache of the first, and the cycles without stalls equal to the
``amaranth.sim`` bench's (:class:`sim.token.TokenBench`), operation by operation."""

import time

import numpy as np
import pytest

from ternary_accel.hw import program as P
from ternary_accel.model import hwnum as H
from token_models import PROMPT, micro_decoder

# Both tests run one build: on one xdist worker.
pytestmark = [pytest.mark.verilator, pytest.mark.xdist_group("token-micro")]

#: Positions of the program: the prompt, then a second run.
POSITIONS = 8


@pytest.fixture(scope="module")
def program():
    return P.make_program(micro_decoder(H.GROUPED_HEAD),
                          P.token_engine(8, 4, hidden=32, ffn=64), positions=POSITIONS)


def test_tokens_with_stalls_are_the_golden_model(program):
    from ternary_accel.sim.token_session import TokenSession
    started = time.monotonic()
    golden = P.GoldenToken(program)
    with TokenSession(program, idle=0.3, seed=1) as session:
        run = session.run(PROMPT, 0)
        assert run.logits.shape == (len(PROMPT), program.config.vocab)
        assert run.logits.dtype == np.int64
        for position, token in enumerate(PROMPT):
            expected_token, expected = golden.run(token, position)
            assert np.array_equal(run.logits[position], expected), f"position {position}"
            assert run.tokens[position] == expected_token
        assert run.errors == [0] * len(PROMPT)
        assert all(sum(ops) == cycles for ops, cycles in zip(run.op_cycles, run.cycles))
        # the next positions, on the KV cache the first run wrote
        more = [run.tokens[-1], 11]
        tokens, logits, cycles, op_cycles, errors = session.run(more, len(PROMPT))
        for k, token in enumerate(more):
            expected_token, expected = golden.run(token, len(PROMPT) + k)
            assert np.array_equal(logits[k], expected), f"position {len(PROMPT) + k}"
            assert tokens[k] == expected_token
        assert errors == [0, 0] and len(cycles) == len(op_cycles) == 2
        assert session.load_seconds is not None
    assert time.monotonic() - started < 240       # about 60 s with a cold build


def test_cycles_without_stalls_are_the_amaranth_bench_s(program):
    from ternary_accel.sim.token import TokenBench
    from ternary_accel.sim.token_session import TokenSession
    with TokenSession(program, idle=0.0, seed=1) as session:    # the build above
        run = session.run(PROMPT)
    bench = TokenBench(program)
    tokens, logits = bench.run(PROMPT)
    assert run.tokens == tokens and np.array_equal(run.logits, logits)
    assert run.cycles == bench.cycles
    assert run.op_cycles == bench.op_cycles


def test_a_memory_in_banks_is_the_golden_model(program, monkeypatch):
    """A memory larger than a Verilator leaf (2B4T's ``vec``) is split into banks at
    whole embedding rows (here forced: three banks of ``vec``); the tokens are the
    same, and so are the cycles without stalls."""
    from ternary_accel.sim import token_harness
    from ternary_accel.sim.token_session import TokenSession
    monkeypatch.setattr(token_harness, "MAX_PARTS", 700)
    widths = token_harness.token_images(program, words=False).widths
    banks = token_harness.memory_banks(program, widths)
    assert [b for b, c, _, _ in banks if c == "vec"] == ["vec", "vec_1", "vec_2"]
    assert [(start, stop) for _, c, start, stop in banks if c == "vec"] == \
        [(0, 672), (672, 1344), (1344, 1728)]
    golden = P.GoldenToken(program)
    with TokenSession(program, idle=0.3, seed=2) as session:
        run = session.run(PROMPT, 0)
        assert session.load_channels.keys() == {b for b, _, _, _ in banks}
    for position, token in enumerate(PROMPT):
        expected_token, expected = golden.run(token, position)
        assert np.array_equal(run.logits[position], expected), f"position {position}"
        assert run.tokens[position] == expected_token
    assert run.errors == [0] * len(PROMPT)
    with TokenSession(program, idle=0.0, seed=2) as session:
        cycles = session.run(PROMPT).op_cycles
    model = [P.token_cycles(program.config, program.params, program.numerics, position,
                            positions=POSITIONS, head_rows=program.head_rows)
             for position in range(len(PROMPT))]
    assert cycles == [list(m.values()) for m in model]
