"""The trit unpacker, exhaustively: all 256 byte values through the RTL."""

import numpy as np
import pytest
from amaranth.sim import Simulator

from ternary_accel.hw.rtl.unpack import TritUnpacker
from ternary_accel.model.encoding import decode_lane_codes, unpack_byte_mulshift, unpack_trits


def test_mulshift_rule_matches_base3_for_every_byte():
    weights, valid = unpack_byte_mulshift(np.arange(256))
    assert valid.tolist() == [True] * 243 + [False] * 13
    assert np.array_equal(weights[:243].reshape(-1), unpack_trits(np.arange(243)))
    assert not weights[243:].any()


@pytest.mark.parametrize("decoder", ["mulshift", "rom"])
def test_unpacker_all_256_bytes(decoder):
    per_beat = 4
    dut = TritUnpacker(bytes_per_beat=per_beat, decoder=decoder)
    beats = np.arange(256).reshape(-1, per_beat)  # 64 beats, every byte value once
    got, flags = [], []

    async def bench(ctx):
        ctx.set(dut.o.ready, 1)
        for beat in beats:
            ctx.set(dut.i.payload, [int(b) for b in beat])
            ctx.set(dut.i.valid, 1)
            got.append([int(c) for c in ctx.get(dut.o.payload)])
            assert ctx.get(dut.o.valid) == 1 and ctx.get(dut.i.ready) == 1
            await ctx.tick()
            flags.append(ctx.get(dut.invalid))

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    weights = decode_lane_codes(np.array(got).reshape(256, 5))
    expected, valid = unpack_byte_mulshift(np.arange(256))
    assert np.array_equal(weights, expected)
    assert np.array_equal(weights[:243].reshape(-1), unpack_trits(np.arange(243)))
    # the sticky flag rises with the first beat holding byte 243 (beat 60) and stays
    first_bad = 243 // per_beat
    assert flags[:first_bad] == [0] * first_bad
    assert all(flags[first_bad:])


def test_unpacker_parameter_errors():
    with pytest.raises(ValueError, match="decoder must be one of mulshift, rom"):
        TritUnpacker(bytes_per_beat=1, decoder="divide")
    with pytest.raises(ValueError, match="bytes_per_beat"):
        TritUnpacker(bytes_per_beat=0)
