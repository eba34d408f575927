"""The accounting at the hardware numerics' widths (Precisions.hardware) and the derived
integer energies it is charged with."""

import pytest

from ternary_accel.energy.ops import OP_ENERGY_PJ, op_energy
from ternary_accel.hw.perf.accounting import Precisions, account
from ternary_accel.model.config import BITNET_2B4T
from ternary_accel.model.hwnum import DEFAULT


def test_hardware_precisions_follow_the_widths():
    p = Precisions.hardware()
    assert (p.vector, p.attention, p.head) == (f"int{DEFAULT.resid_bits}", "int8", "int8")
    assert (p.kv_bits, p.head_bits, p.norm_bits) == (8, 8, DEFAULT.gain_bits)
    trits = Precisions.hardware(DEFAULT.replace(head="trit5"))
    assert trits.head_bits == 8                        # five trits a byte


def test_hardware_numerics_halve_the_head_and_cache_bytes():
    glue = account(BITNET_2B4T, tokens=1, context=128)
    hw = account(BITNET_2B4T, tokens=1, context=128, precisions=Precisions.hardware())
    c = BITNET_2B4T
    assert glue.bytes()["head_weights"] == c.vocab * c.hidden * 2            # bf16
    assert hw.bytes()["head_weights"] == c.vocab * (c.hidden + 3)        # int8 + u16 scale, exponent
    assert hw.bytes()["kv_cache"] * 2 == glue.bytes()["kv_cache"]
    assert hw.bytes()["ternary_weights"] == glue.bytes()["ternary_weights"]


@pytest.mark.parametrize("node", ["45nm", "7nm"])
def test_derived_integer_energies(node):
    int8 = OP_ENERGY_PJ[node]["int8"]
    assert op_energy(node, "int24", "add") == pytest.approx(int8["add"] * 3)
    assert op_energy(node, "int24", "mul") == pytest.approx(int8["mul"] * 9)
    assert op_energy("45nm", "int32", "add") == OP_ENERGY_PJ["45nm"]["int32"]["add"]  # sourced
    with pytest.raises(ValueError):
        op_energy(node, "int4", "mul")                 # narrower than int8: not derived
    with pytest.raises(ValueError):
        op_energy(node, "bf13", "add")


def test_perf_cli_numerics_hw(cli):
    out = cli("perf", "--numerics", "hw")
    assert out.returncode == 0 and "Precisions: vector int24" in out.stdout
    assert "KV cache 39,488 bytes a position" in out.stdout     # 2B4T: 30 x 5 x 263.25
    import json
    report = json.loads(cli("perf", "--numerics", "hw", "--format", "json").stdout)
    budget = report["hardware_numerics"]
    assert budget["kv_bytes_at_context"] == 39487.5 * report["context"]
    assert budget["table_bytes"]["RoPE"] == 4096 * 128 * 2
