"""The token core's memory images packed by NumPy (:func:`sim.token.memory_arrays`,
:func:`sim.token.write_memory_file`: what :class:`sim.token_session.TokenSession` loads,
in blocks, however large the model) are :func:`sim.token.memory_words` packed word by
word by :func:`sim.token.pack`, and the files are ``sim.harness.memory_image``'s bytes
(amaranth only, no simulator)."""

import numpy as np
import pytest
from amaranth.hdl import signed, unsigned
from amaranth.lib import data

from ternary_accel.hw import program as P
from ternary_accel.hw.rtl.token import TokenCore
from ternary_accel.model import hwnum as H
from ternary_accel.sim.harness import memory_image
from ternary_accel.sim.token import (memory_arrays, memory_chunks, memory_depths,
                                     memory_words, pack, pack_array, write_memory_file)
from token_models import micro_decoder


@pytest.mark.parametrize("numerics", [H.GROUPED_HEAD, H.DEFAULT], ids=["grouped", "int8"])
@pytest.mark.parametrize("head_rows", [4, 3])
def test_numpy_images_are_the_packed_words(numerics, head_rows, tmp_path):
    program = P.make_program(micro_decoder(numerics), P.token_engine(8, 4, hidden=32, ffn=64),
                             positions=8, head_rows=head_rows)
    core = TokenCore(program)
    words = memory_words(program, core)
    assert memory_depths(program) == {name: len(w) for name, w in words.items()}
    for name, expected in words.items():
        width = core.word_bits[name]
        arrays = memory_arrays(program, core, name)
        assert arrays.dtype == np.uint8 and arrays.shape == (len(expected), -(-width // 8))
        assert [int.from_bytes(row.tobytes(), "little") for row in arrays] == expected, name
        # in blocks of 5 words (the last one short), to the leaf memory's file
        path = tmp_path / f"{name}.bin"
        parts = write_memory_file(path, memory_chunks(program, core, name, words=5), width)
        assert path.read_bytes() == memory_image(expected, width), name
        assert parts * 8 == path.stat().st_size
    core._MustUse__used = True


def test_pack_array_is_pack_on_unaligned_fields():
    layout = data.StructLayout({"a": signed(3), "b": data.ArrayLayout(
        data.StructLayout({"m": unsigned(5), "e": signed(7)}), 3), "c": unsigned(1)})
    rng = np.random.default_rng(0)
    count = 20
    a = rng.integers(-4, 4, count)
    m, e = rng.integers(0, 32, (count, 3)), rng.integers(-64, 64, (count, 3))
    got = pack_array(layout, {"a": a, "b": {"m": m, "e": e}}, count)   # "c" missing: 0
    for k in range(count):
        value = {"a": int(a[k]), "b": [{"m": int(m[k, j]), "e": int(e[k, j])}
                                        for j in range(3)]}
        assert int.from_bytes(got[k].tobytes(), "little") == pack(layout, value)
