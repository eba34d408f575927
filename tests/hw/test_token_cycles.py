"""The token core's cycle model (hw.program.token_cycles) equals its cycle counters in
simulation without stalls, operation by operation, on engines whose tiles are longer and
shorter than their rows, whole beats and a port, both head formats, at the first
position and deep into the context (the attention unit's heads bound by the query's
quantizer or by the softmax row), the attention unit at 4, 8 and all of a head's codes a
cycle."""

import pytest

from ternary_accel.hw import program as P
from ternary_accel.model import hwnum as H
from ternary_accel.model.config import ModelConfig
from ternary_accel.model.hwdecoder import HwDecoder
from ternary_accel.model.shapes import TransformerShape
from ternary_accel.model.weights import MasterWeights, random_master_weights
from ternary_accel.sim.token import TokenBench


def _config(hidden, ffn, heads, kv_heads, vocab):
    return ModelConfig(TransformerShape("m", hidden, ffn, 1, heads, kv_heads=kv_heads,
                                        vocab=vocab),
                       rope_theta=10000.0, rms_norm_eps=1e-5, max_position_embeddings=64,
                       tie_word_embeddings=True, bos_token_id=1, eos_token_id=2)


CASES = {
    "tiles-longer-than-rows": (_config(32, 64, 2, 1, 48), 8, 4, None, H.DEFAULT, (0, 5)),
    "tiles-shorter-than-rows": (_config(32, 64, 4, 2, 48), 16, 8, None, H.GROUPED_HEAD,
                                (0, 40)),
    "port-words": (_config(64, 96, 2, 2, 40), 8, 4, 32, H.DEFAULT, (3,)),
    "wide-port": (_config(64, 128, 1, 1, 64), 32, 16, 128, H.GROUPED_HEAD, (60,)),
}
#: The LM head unit's rows where they differ from the engine's.
HEAD_ROWS = {"wide-port": 2, "port-words": 8}
#: The attention unit's lanes where they are not the default (8, or the head's size).
ATTENTION_LANES = {"port-words": 4, "wide-port": 64}


@pytest.mark.parametrize("case", [
    pytest.param(name, marks=[] if name == "tiles-longer-than-rows" else pytest.mark.slow)
    for name in CASES])
def test_cycle_model_equals_simulation(case):
    config, lanes, rows, port, numerics, positions = CASES[case]
    decoder = HwDecoder(MasterWeights(config, random_master_weights(config, seed=5)),
                        numerics=numerics)
    params = P.token_engine(lanes, rows, hidden=config.hidden, ffn=config.ffn,
                            weight_port_bits=port)
    head_rows, lanes = HEAD_ROWS.get(case), ATTENTION_LANES.get(case)
    program = P.make_program(decoder, params, positions=64, head_rows=head_rows,
                             attention_lanes=lanes)
    for position in positions:
        bench = TokenBench(program)
        bench.run([3], start=position)
        simulated = dict(zip(P.COUNTERS, bench.op_cycles[0]))
        assert simulated == P.token_cycles(config, params, numerics, position, positions=64,
                                           head_rows=head_rows, attention_lanes=lanes)
        assert sum(simulated.values()) == bench.cycles[0]
