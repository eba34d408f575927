"""Energy model: the paper's Table 1, the 71.4x, counting by hand, options, CLI."""

import json

import pytest

from cli_runner import invoke

from ternary_accel.energy.count import BITNET, TRANSFORMER, CountOptions, count_ops, energy_joules, products
from ternary_accel.energy.ops import OP_ENERGY_PJ, memory_pj_per_bit, op_energy
from ternary_accel.energy.report import PAPER_TABLE1_6_7B, b158_ratio, sweep_rows, table1_rows, traffic_rows
from ternary_accel.model.shapes import FFN_CLASSIC, TransformerShape, get_model


def _row(kind, bits):
    rows = table1_rows(["bitnet-6.7b"])
    return next(r for r in rows if r[1] == kind and r[2] == bits)[3:]


@pytest.mark.parametrize("label, kind, bits", [("Transformer FP32", "Transformer", 32),
                                               ("Transformer FP16", "Transformer", 16)])
def test_table1_transformer_rows_match_paper(label, kind, bits):
    cells = [round(v, 2) for v in _row(kind, bits)]
    assert cells == list(PAPER_TABLE1_6_7B[label])


def test_table1_bitnet_row():
    cells = [round(v, 2) for v in _row("BitNet", 1)]
    paper = PAPER_TABLE1_6_7B["BitNet"]
    # MUL 7nm, MUL 45nm and ADD 45nm match the paper; ADD 7nm is 0.034 J (prints 0.03)
    # where the paper prints 0.04: no consistent reading gives 0.04 together with the
    # 45nm ADD cell (see README, Energy).
    assert (cells[0], cells[2], cells[3]) == (paper[0], paper[2], paper[3])
    assert cells[1] == 0.03


def test_b158_ratio():
    assert round(b158_ratio("7nm"), 1) == 71.4


def tiny():
    # 2 layers, hidden 4, 2 heads of 2, classic FFN of 8, vocabulary 10.
    return TransformerShape("tiny", 4, 8, 2, 2, ffn_kind=FFN_CLASSIC, vocab=10)


def test_counts_by_hand():
    shape, n = tiny(), 3
    # per layer: q,k,v,o: 4 products (3x4)@(4x4): adds 3*3*4 = 36, muls 3*4*4 = 48 each
    # up (3x4)@(4x8): adds 3*3*8 = 72, muls 96; down (3x8)@(8x4): adds 3*7*4 = 84, muls 96
    # attention per head: scores (3x2)@(2x3): adds 3*1*3 = 9, muls 18;
    #                     values (3x3)@(3x2): adds 3*2*2 = 12, muls 18
    weight_adds = 2 * (4 * 36 + 72 + 84)
    weight_muls = 2 * (4 * 48 + 96 + 96)
    attn_adds = 2 * 2 * (9 + 12)
    attn_muls = 2 * 2 * (18 + 18)
    counts = count_ops(shape, n, TRANSFORMER, "fp32")
    assert counts == {"fp32": {"add": weight_adds + attn_adds, "mul": weight_muls + attn_muls}}
    # BitNet: rescale multiplies m*p + m*n per weight product: q..o 3*4+3*4 = 24 each,
    # up 3*8 + 3*4 = 36, down 3*4 + 3*8 = 36.
    bitnet = count_ops(shape, n, BITNET)
    assert bitnet["int8"] == {"add": weight_adds, "mul": 0}
    assert bitnet["fp16"] == {"add": attn_adds, "mul": 2 * (4 * 24 + 36 + 36) + attn_muls}


def test_energy_joules_by_hand():
    counts = {"fp16": {"add": 10**12, "mul": 2 * 10**12}}
    assert energy_joules(counts, "7nm") == pytest.approx({"add": 0.16, "mul": 0.68})


def test_option_switches():
    shape = tiny()
    names = lambda **kw: [p.name for p in products(shape, 3, CountOptions(**kw))]
    assert names() == ["q", "k", "v", "o", "up", "down", "scores", "values"]
    assert "scores" not in names(attention=False)
    assert names(lm_head=True)[-1] == "lm_head"
    assert names(projections=False, attention=False) == ["up", "down"]
    fp32 = count_ops(shape, 3, BITNET, options=CountOptions(bitnet_attention="fp32"))
    assert fp32["fp32"]["mul"] == 2 * 2 * 36
    with pytest.raises(ValueError, match="bitnet_attention"):
        CountOptions(bitnet_attention="fp8")


def test_gated_ffn_and_gqa():
    shape = get_model("llama-70b")
    proj = {p.name: (p.out_features, p.in_features) for p in shape.projections()}
    assert proj["k"] == (1024, 8192) and proj["gate"] == (28672, 8192)
    assert [p.name for p in get_model("b1.58-2b4t").projections()] == \
        ["q", "k", "v", "o", "gate", "up", "down"]


def test_sweep_and_traffic():
    rows = sweep_rows()
    assert all(r["saving"] > 10 for r in rows)
    traffic = traffic_rows()
    r = traffic[0]
    assert r["dram-low ternary base-3"] == pytest.approx(r["dram-low fp16"] * 1.6 / 16)
    assert memory_pj_per_bit("dram-low") == pytest.approx(1300 / 64)


def test_op_table_is_data():
    assert op_energy("45nm", "int8", "add") == 0.03
    assert all("source" in v for node in OP_ENERGY_PJ.values() for v in node.values())
    with pytest.raises(ValueError, match="no add energy"):
        op_energy("3nm", "fp16", "add")


def energy_cli(*args):
    return invoke("energy", *args)


def test_cli_table1_formats():
    md = energy_cli("table1")
    assert md.returncode == 0 and "| Transformer bitnet-6.7b | 32 | 4.41 | 1.28 | 12.46 | 3.03 |" \
        in md.stdout
    data = json.loads(energy_cli("table1", "--format", "json").stdout)
    assert data[0]["MUL 7nm (J)"] == "4.41"
    csv = energy_cli("table1", "--format", "csv").stdout.splitlines()
    assert csv[1] == "Transformer bitnet-6.7b,32,4.41,1.28,12.46,3.03"
    assert "71.4x" in energy_cli("b158").stdout


@pytest.mark.parametrize("args, message", [
    (["sweep", "--model", "gpt-5"], "unknown model 'gpt-5'"),
    (["model", "--hidden", "-4", "--ffn", "8", "--layers", "2", "--heads", "2"],
     "hidden must be a positive integer"),
    (["model", "--hidden", "64", "--ffn", "8", "--layers", "2", "--heads", "5"],
     "--heads (5) must divide --hidden"),
    (["model", "--hidden", "64", "--ffn", "8", "--layers", "2", "--heads", "4",
      "--kv-heads", "3"], "--kv-heads (3) must divide --heads"),
    (["model", "--hidden", "64"], "needs --ffn"),
    (["table1", "--format", "xml"], "invalid choice"),
    (["frob"], "invalid choice"),
])
def test_cli_errors(args, message):
    result = energy_cli(*args)
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr


def test_cli_report(tmp_path):
    result = energy_cli("report", "--outdir", str(tmp_path))
    assert result.returncode == 0, result.stderr
    for name in ("table1.md", "sweep.md", "sweep.png"):
        assert (tmp_path / name).stat().st_size > 0
    assert "weight traffic" in (tmp_path / "sweep.md").read_text()


def test_token_view_per_model():
    result = energy_cli("token", "--model", "b1.58-2b4t", "--context", "0", "--format", "json")
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    designs = {(r["Design"], r["Node"]): float(r["Total (J/token)"]) for r in rows}
    assert len(designs) == 4
    for node in ("45nm", "7nm"):
        assert designs[("FP16 reference", node)] > designs[("BitNet b1.58, this accelerator",
                                                            node)]
    for args, message in ((["--model", "bitnet-6.7b"], "gated FFN"),
                          (["--context", "-1"], "--context")):
        result = energy_cli("token", *args)
        assert result.returncode == 2 and message in result.stderr
