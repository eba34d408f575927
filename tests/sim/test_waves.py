"""Waveforms of an engine session: a traced build of its own, the dump kept, the outputs
unchanged."""

import numpy as np
import pytest

from ternary_accel.model.arith import matmul_int
from ternary_accel.sim.build import BENCHES
from ternary_accel.hw.params import EngineParams
from ternary_accel.sim.session import EngineSession

TINY_ENGINE = EngineParams(lanes=4, rows=2, max_beats=2, output_stage=False)


@pytest.mark.verilator
def test_waves_must_be_a_bool():
    with pytest.raises(TypeError, match="waves must be True or False"):
        EngineSession(TINY_ENGINE, waves="yes")


@pytest.mark.verilator
@pytest.mark.parametrize("bench", BENCHES)
def test_session_records_waveforms(tmp_path, bench):
    w = np.array([[1, -1, 0, 1], [0, 0, -1, -1]])
    x = np.array([[5, -7, 127, -128], [-1, 2, -3, 4]])
    with EngineSession(TINY_ENGINE, build_root=tmp_path, bench=bench, waves=True) as session:
        run = session.run(w, x)
        dump = session.waves_file
    assert np.array_equal(run.outputs, matmul_int(w, x)) and run.error == 0
    assert run.cycles == run.predicted
    # kept after the session closed, in the build folder of the traced design
    assert dump.is_file() and dump.parent.parent.name.endswith("_waves")
    text = dump.read_text(errors="replace")
    assert text.startswith("$") and "$enddefinitions" in text
    assert "$var" in text and ("act__valid" in text or "act_valid" in text)
