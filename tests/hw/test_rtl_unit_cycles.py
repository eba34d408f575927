"""The numerics units' cycle models (hw.timing) against simulation without stalls: the
cycles from the edge that takes a row's first beat to the edge that gives its last."""

import numpy as np
import pytest

from streams import simulate, stream_put

from ternary_accel.hw.rtl.attention import Scores, Values
from ternary_accel.hw.rtl.rope import Rope
from ternary_accel.hw.timing import attention_product_cycles, rope_cycles
from ternary_accel.model import hwnum as H

N = H.DEFAULT


def _measure(dut, beats, i, o):
    """Edges from the first beat taken on ``i`` to the last beat given on ``o``."""
    log = []

    async def producer(ctx):
        for beat in beats:
            await stream_put(ctx, i, beat)

    async def watch(ctx):
        ctx.set(o.ready, 1)
        async for _, _, iv, ir, ov in ctx.tick().sample(i.valid, i.ready, o.valid):
            log.append((iv and ir, ov))

    simulate(dut, producer, processes=[watch], cycles=20 * len(beats) + 50)
    first = next(k for k, (taken, _) in enumerate(log) if taken)
    last = [k for k, (_, given) in enumerate(log) if given][-1]
    return last - first + 1


@pytest.mark.parametrize("head_dim", [2, 8, 16])
def test_rope(head_dim):
    dut = Rope(head_dim, 4, 10000.0, N)
    beats = [int(v) for v in np.arange(head_dim) * 1000 - 3000]
    assert _measure(dut, beats, dut.i, dut.o) == rope_cycles(head_dim)


@pytest.mark.parametrize("positions", [1, 3, 9])
def test_scores(positions):
    dut = Scores(4, N)
    beats = [{"codes": [1, -2, 3, 4], "mant": 1 << N.scale_bits, "exp": -20,
              "last": int(j == positions - 1)} for j in range(positions)]
    assert _measure(dut, beats, dut.keys, dut.o) == attention_product_cycles(positions)


@pytest.mark.parametrize("positions", [1, 3, 9])
def test_values(positions):
    dut = Values(4, 16, N)
    beats = [{"weight": 1 << (N.prob_bits - 2), "codes": [1, -2, 3, 4],
              "mant": 1 << N.scale_bits, "exp": -20, "last": int(j == positions - 1)}
             for j in range(positions)]
    assert _measure(dut, beats, dut.i, dut.o) == attention_product_cycles(positions)


def test_bad_sizes_are_refused():
    with pytest.raises(ValueError, match="even"):
        rope_cycles(7)
    with pytest.raises(ValueError, match="positions"):
        attention_product_cycles(0)
