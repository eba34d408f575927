"""Activation schemes (model.schemes) in the accounting, the energy and the performance
figures: b1.58 unchanged, a4.8's INT4 adds and KV bits, sparse inputs counted by the
sparse dataflow (hw.mapping.SparseTiling), scheme errors, and ``python -m hw
schemes`` / ``hw perf --scheme``."""

import json
from fractions import Fraction

import pytest

from cli_runner import invoke

from ternary_accel.energy.ops import op_energy
from ternary_accel.hw.perf.energy import fp16_reference, pass_energy
from ternary_accel.hw.perf.throughput import model_report, phase_report
from ternary_accel.hw.perf.platforms import get_platform
from ternary_accel.hw.perf.accounting import account, batched
from ternary_accel.model.config import BITNET_2B4T, TINY, model_config
from ternary_accel.hw.mapping import LayerTiling
from ternary_accel.model.schemes import (A48_DENSITY, B158, PROJECTIONS, ActivationScheme, a48, b158,
                           block_q_sparse, get_scheme, q_sparse)
from ternary_accel.model.sparse import MASK
from ternary_accel.hw.mapping import SparseTiling
from ternary_accel.hw.timing import SparseLayerMapping

# TINY on 16 lanes x 8 rows: a dense beat is 128 trits in 26 bytes (1.625 bytes a column
# per tile), a stored column 8 trits in 2 bytes: the sparse layout pays below 0.8125.
TILE = dict(lanes=16, rows=8)
INT4_INPUTS = {"q", "k", "v", "gate", "up"}


def bitlinears(a, layer=0):
    return {c.name: c for c in a.costs if c.kind == "bitlinear" and c.layer == layer}


def test_b158_is_the_accounting_as_before():
    for kwargs in (dict(tokens=1, context=5), dict(tokens=3, context=0)):
        before = account(TINY, **kwargs, **TILE)
        named = account(TINY, **kwargs, **TILE, scheme="b1.58")
        back = account(TINY, **kwargs, **TILE, scheme=a48()).with_scheme(B158)
        for a in (named, back):
            assert a.costs == before.costs
    a = account(BITNET_2B4T, tokens=1, context=0)
    assert a.ops()[("int8", "add")] == 2_084_044_800 and ("int4", "add") not in a.ops()
    assert a.bytes()["ternary_weights"] == 419_251_200          # test_accounting's figure
    assert all(c.kept is None for c in a.costs)


def test_b158_perf_report_is_unchanged():
    kv260 = get_platform("kv260")
    plain = model_report("b1.58-2b4t", kv260, prompt=2, context=16)
    named = model_report("b1.58-2b4t", kv260, prompt=2, context=16, scheme=b158())
    assert plain == named and plain["scheme"]["name"] == "b1.58"


def test_a48_charges_int4_adds_for_exactly_qkv_gate_up():
    t = 2
    a = account(TINY, tokens=t, context=3, **TILE, scheme="a4.8")
    costs = bitlinears(a)
    assert set(costs) == set(PROJECTIONS)
    for name, cost in costs.items():
        adds = {p: n for (p, op), n in cost.ops.items() if op == "add"}
        assert list(adds) == (["int4"] if name in INT4_INPUTS else ["int8"]), name
        m, k = cost.sizes["out_features"], cost.sizes["in_features"]
        if cost.kept is None:                  # dense dataflow: every add, zeros too
            assert adds.popitem()[1] == t * m * k
        else:
            assert adds.popitem()[1] == m * sum(cost.kept)
    # At 16 x 8, densities 0.879/0.88 stay dense (fewer bytes); o 0.5 and down 0.158 go
    # sparse.
    assert {n for n, c in costs.items() if c.kept is not None} == {"o", "down"}
    assert costs["o"].kept == (32,) * t and costs["down"].kept == (20,) * t  # 0.158 x 128
    # 4-bit activations stream half the bytes of the dense tiling's int8.
    q = costs["q"]
    tiling = LayerTiling(64, 64, t, **TILE)
    assert q.bytes["activations"] == tiling.activation_bytes // 2 + t * 64 * 4
    assert op_energy("7nm", "int4", "add") == pytest.approx(0.007 / 2)
    assert op_energy("45nm", "int4", "add") == pytest.approx(0.03 / 2)
    with pytest.raises(ValueError, match="no mul energy for int4"):
        op_energy("7nm", "int4", "mul")


def test_density_0_2_on_down_is_the_sparse_tiling():
    scheme = b158().with_density({"down": 0.2})
    t = 3
    a = account(TINY, tokens=t, context=0, **TILE, scheme=scheme)
    down = bitlinears(a)["down"]
    kept = 25                                           # floor(0.2 x 128)
    tiling = SparseTiling(64, 128, (kept,) * t, **TILE)
    assert down.kept == (kept,) * t
    assert down.bytes["ternary_weights"] == tiling.weight_bytes == 8 * 3 * kept * 2
    assert down.beats == tiling.beats
    assert down.bytes["column_indices"] == tiling.index_bytes
    assert down.ops[("int8", "add")] == 64 * t * kept
    others = {n: c for n, c in bitlinears(a).items() if n != "down"}
    dense = bitlinears(account(TINY, tokens=t, context=0, **TILE))
    assert all(c == dense[n] for n, c in others.items())
    # The engine's cycles are the sparse cycle model (beats + latency).
    platform = get_platform("ecp5-ddr3")
    a32 = account(TINY, tokens=t, context=0, scheme=scheme)      # the 16 x 32 engine
    report = phase_report(a32, platform, 50.0, "prefill")
    cycles = next(k.cycles for k in report.kernels if k.label == "bitlinear down")
    mapping = SparseLayerMapping(64, 128, (kept,) * t, 32, 16)
    assert cycles == TINY.layers * mapping.cycles
    # Batching repeats every token's kept columns.
    four = batched(a32, 4)
    assert bitlinears(four)["down"].kept == (kept,) * (4 * t)


def test_dataflow_choice():
    def down(density, dataflow="auto"):
        scheme = b158().with_density({"down": density})
        return bitlinears(account(TINY, **TILE, scheme=scheme, dataflow=dataflow))["down"]
    dense_bytes = LayerTiling(64, 128, 1, **TILE).weight_bytes
    assert down(0.85).kept is None and down(0.85).bytes["ternary_weights"] == dense_bytes
    assert down(0.75).kept == (96,)
    assert down(0.85, "sparse").kept == (108,)
    assert down(0.2, "dense").kept is None
    assert down(0.2, "dense").ops[("int8", "add")] == 64 * 128
    with pytest.raises(ValueError, match="dataflow"):
        account(TINY, **TILE, dataflow="diagonal")


def test_a48_kv_cache_bits_and_bos():
    # TINY: kv width 2 x 2 heads x 16 = 64 an element row.
    decode = account(TINY, tokens=1, context=5, **TILE, scheme="a4.8")
    # writes 1 x 64 at 3 bits; reads 5 x 64 at 3 bits plus 1 bit more for position 0
    assert decode.bytes()["kv_cache"] == 2 * ((64 * 3) // 8 + (5 * 64 * 3 + 64) // 8)
    prefill = account(TINY, tokens=3, context=0, **TILE, scheme="a4.8")
    assert prefill.bytes()["kv_cache"] == 2 * (3 * 64 * 3 + 64) // 8
    four = account(TINY, tokens=1, context=5, **TILE, scheme=a48(kv_bits=4))
    assert four.bytes()["kv_cache"] == 2 * (64 + 5 * 64) * 4 // 8
    assert account(TINY, tokens=1, context=5, **TILE, scheme="q-sparse").bytes()[
        "kv_cache"] == 2 * (64 + 5 * 64) * 2                            # bf16


def test_a48_densities_give_the_papers_overall_sparsity():
    # With up's gate-first rows counted as skipped columns (0.88 x 0.325), a4.8's
    # densities at 7B give the paper's 44.5 % of BitLinear weights not needed.
    scheme = a48(density={"up": 0.88 * (1 - 0.675)})
    a = account(model_config("llama-7b"), scheme=scheme, dataflow="sparse")
    dense = account(model_config("llama-7b"))
    kept = sum(n for (p, op), n in a.ops("engine").items() if op == "add")
    assert 1 - kept / dense.ops()[("int8", "add")] == pytest.approx(0.445, abs=0.002)
    assert A48_DENSITY["up"] == A48_DENSITY["gate"] == pytest.approx(0.88)


def test_q_sparse_keeps_the_official_k():
    assert q_sparse().kept("q", 2560) == 992             # int(0.3875 x 2560), exactly
    assert q_sparse(0.9).kept("down", 10) == 1           # float error would give 0
    assert q_sparse(0.5).density_of("o") == Fraction(1, 2)
    block = block_q_sparse()
    assert block.schedule == MASK and block.kept("down", 6912) == 3456
    a = account(TINY, **TILE, scheme=q_sparse(0.5))
    assert all(c.kept == (32 if c.name != "down" else 64,)
               for c in bitlinears(a).values())


def test_fp16_reference_is_the_dense_one():
    kv260 = get_platform("kv260")
    plain = model_report("b1.58-2b4t", kv260, prompt=2, context=16)
    a48_report = model_report("b1.58-2b4t", kv260, prompt=2, context=16, scheme="a4.8")
    assert a48_report["fp16_joules_per_token"] == plain["fp16_joules_per_token"]
    assert a48_report["bytes_per_token"] < plain["bytes_per_token"]
    assert a48_report["decode_tokens_per_s"] > plain["decode_tokens_per_s"]
    a = account(TINY, **TILE, scheme="q-sparse")
    assert pass_energy(fp16_reference(a.with_scheme(B158))).total == \
        pass_energy(fp16_reference(account(TINY, **TILE))).total


@pytest.mark.parametrize("make, message", [
    (lambda: ActivationScheme("x", bits={"qkv": 5}), "bits of qkv must be one of"),
    (lambda: ActivationScheme("x", bits={"q": 4}), "bits are given per input"),
    (lambda: ActivationScheme("x", density={"o": 1.5}), r"density of o must be a fraction"),
    (lambda: ActivationScheme("x", density={"lm_head": 0.5}), "density is given per"),
    (lambda: ActivationScheme("x", density={"o": True}), "density of o"),
    (lambda: ActivationScheme("x", kv_bits=0), "kv_bits"),
    (lambda: ActivationScheme("x", schedule="random"), "schedule"),
    (lambda: ActivationScheme(""), "name"),
    (lambda: b158().with_density({"head": 0.5}), "density is given per"),
    (lambda: b158().kept("lm_head", 10), "unknown projection"),
    (lambda: a48(kv_bits=2), "kv_bits must be one of"),
    (lambda: q_sparse(1.0), "sparsity ratio"), (lambda: q_sparse(-0.1), "sparsity ratio"),
    (lambda: block_q_sparse(33, 32), "N <= M"), (lambda: block_q_sparse(0, 32), "n must"),
    (lambda: get_scheme("a8"), "unknown activation scheme 'a8'.*b1.58, a4.8"),
    (lambda: get_scheme("b1.58", sparsity=0.5), "takes no parameter sparsity"),
    (lambda: account(TINY, **TILE, scheme="zz"), "unknown activation scheme"),
    (lambda: account(TINY, **TILE, scheme=0.5), "scheme must be"),
    (lambda: batched(account(TINY, **TILE), 2).with_scheme("a4.8"), "before batching"),
])
def test_scheme_errors(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def hw(*args):
    return invoke(*args)


def test_cli_schemes_table():
    result = hw("schemes", "--model", "b1.58-2b4t", "--model", "b1.58-1.3b")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("## BitNet b1.58 vs a4.8 vs Q-Sparse")
    rows = [line for line in lines if line.startswith("| b1.58-2b4t |")]
    assert [r.split(" | ")[1] for r in rows] == ["b1.58", "a4.8", "q-sparse",
                                                 "block-q-sparse"]
    assert "| b1.58-2b4t | b1.58 | 2,084 | 0% |" in result.stdout
    assert "Left out: b1.58-1.3b" in result.stdout
    data = json.loads(hw("schemes", "--model", "b1.58-2b4t", "--scheme", "q-sparse",
                         "--sparsity", "0.4", "--format", "json").stdout)
    (row,) = data["rows"]
    assert row["scheme"] == "q-sparse" and data["schemes"][0]["density"]["q"] == 0.6
    assert set(row["tokens_per_s"]) == {"ecp5-ddr3", "kv260", "hbm2"}
    perf = hw("perf", "--prompt", "2", "--scheme", "a4.8", "--density", "down=0.2")
    assert perf.returncode == 0, perf.stderr
    assert "Activations: BitNet a4.8" in perf.stdout and "down 0.2;" in perf.stdout


@pytest.mark.parametrize("args, message", [
    (["schemes", "--scheme", "a8"], "invalid choice"),
    (["schemes", "--model", "gpt-5"], "unknown model"),
    (["schemes", "--context", "-1"], "--context"),
    (["schemes", "--scheme", "a4.8", "--sparsity", "0.5"], "--sparsity goes with"),
    (["schemes", "--sparsity", "1.0", "--model", "b1.58-2b4t"], "argument --sparsity: must be in [0, 1)"),
    (["schemes", "--model", "b1.58-1.3b"], "no model runs"),
    (["schemes", "--format", "xml"], "invalid choice"),
    (["perf", "--scheme", "a8"], "invalid choice"),
    (["perf", "--sparsity", "0.5"], "--sparsity goes with --scheme q-sparse"),
    (["perf", "--density", "down=2"], "density of down"),
    (["perf", "--density", "head=0.5"], "density is given per"),
    (["perf", "--density", "down"], "PROJECTION=FRACTION"),
    (["perf", "--density", "down=lots"], "not a number"),
])
def test_cli_bad_scheme_flags_exit_2(args, message):
    result = hw(*args)
    assert result.returncode == 2, result.stdout
    assert message in result.stderr and "Traceback" not in result.stderr
