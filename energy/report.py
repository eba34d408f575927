"""Tables and the figure of the energy model: Table 1, the b1.58 ratio, the size sweep,
and the weight-traffic columns that go beyond the paper."""

import csv
import io
import json

from ternary_accel.model.shapes import get_model

from ternary_accel.energy.count import BITNET, TRANSFORMER, CountOptions, count_ops, energy_joules, products
from ternary_accel.energy.ops import memory_pj_per_bit, op_energy

__all__ = ["TABLE1_MODELS", "SWEEP_MODELS", "PAPER_TABLE1_6_7B", "table1_rows",
           "b158_ratio", "sweep_rows", "traffic_rows", "render", "plot_sweep",
           "STORAGE_BITS", "TRAFFIC_MEMORIES"]

SEQ_LEN = 512
TABLE1_MODELS = ("bitnet-6.7b", "bitnet-13b", "bitnet-30b")
SWEEP_MODELS = ("b1.58-700m", "b1.58-1.3b", "b1.58-3b", "b1.58-2b4t", "llama-7b",
                "llama-13b", "llama-30b", "llama-70b")

#: The paper's printed 6.7B row (J, 512 tokens): the regression target.
PAPER_TABLE1_6_7B = {
    "Transformer FP32": (4.41, 1.28, 12.46, 3.03),
    "Transformer FP16": (1.14, 0.54, 3.70, 1.35),
    "BitNet": (0.02, 0.04, 0.08, 0.13),
}
TABLE1_COLUMNS = ("MUL 7nm (J)", "ADD 7nm (J)", "MUL 45nm (J)", "ADD 45nm (J)")

#: Storage formats of the weight-traffic columns, in bits per weight.
STORAGE_BITS = {"fp16": 16, "int8": 8, "ternary 2-bit": 2, "ternary base-3": 1.6}
#: Memories of the weight-traffic columns (Horowitz 45 nm, per 64-bit read).
TRAFFIC_MEMORIES = ("dram-low", "sram-1mb")


def _cells(counts):
    e7, e45 = energy_joules(counts, "7nm"), energy_joules(counts, "45nm")
    return (e7["mul"], e7["add"], e45["mul"], e45["add"])


def table1_rows(models=TABLE1_MODELS, seq_len=SEQ_LEN, options=CountOptions()):
    """Rows of Table 1: ``(model, kind, bits, MUL 7nm, ADD 7nm, MUL 45nm, ADD 45nm)``."""
    rows = []
    for name in models:
        shape = get_model(name) if isinstance(name, str) else name
        label = shape.name
        for kind, bits, arch, dtype in (("Transformer", 32, TRANSFORMER, "fp32"),
                                        ("Transformer", 16, TRANSFORMER, "fp16"),
                                        ("BitNet", 1, BITNET, "fp16")):
            counts = count_ops(shape, seq_len, arch, dtype, options)
            rows.append((label, kind, bits) + _cells(counts))
    return rows


def b158_ratio(node="7nm"):
    """Energy of an FP16 MAC (add + multiply) over a ternary MAC (one INT8 add)."""
    fp16 = op_energy(node, "fp16", "add") + op_energy(node, "fp16", "mul")
    return fp16 / op_energy(node, "int8", "add")


def sweep_rows(models=SWEEP_MODELS, seq_len=SEQ_LEN, node="7nm", options=CountOptions()):
    """Per model: FP16 and BitNet b1.58 MUL/ADD energy (J) and the saving factor."""
    rows = []
    for name in models:
        shape = get_model(name) if isinstance(name, str) else name
        fp16 = energy_joules(count_ops(shape, seq_len, TRANSFORMER, "fp16", options), node)
        b158 = energy_joules(count_ops(shape, seq_len, BITNET, "fp16", options), node)
        total_fp16 = fp16["mul"] + fp16["add"]
        total_b158 = b158["mul"] + b158["add"]
        rows.append({
            "model": shape.name, "linear_weights": _weights(shape, options),
            "fp16_mul": fp16["mul"], "fp16_add": fp16["add"], "fp16_total": total_fp16,
            "b158_mul": b158["mul"], "b158_add": b158["add"], "b158_total": total_b158,
            "saving": total_fp16 / total_b158,
        })
    return rows


def _weights(shape, options):
    return sum(p.n * p.p * p.count for p in products(shape, 1, options) if p.weighted)


def traffic_rows(models=SWEEP_MODELS, options=CountOptions()):
    """Energy (J) of reading every counted weight once per forward pass, per storage
    format and memory (Horowitz 45 nm per-bit energies): not part of the paper."""
    rows = []
    for name in models:
        shape = get_model(name) if isinstance(name, str) else name
        weights = _weights(shape, options)
        row = {"model": shape.name, "linear_weights": weights}
        for memory in TRAFFIC_MEMORIES:
            for fmt, bits in STORAGE_BITS.items():
                row[f"{memory} {fmt}"] = weights * bits * memory_pj_per_bit(memory) * 1e-12
        rows.append(row)
    return rows


def _markdown(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def render(header, rows, fmt):
    """Render ``rows`` (lists of formatted cells) as markdown, csv or json."""
    if fmt == "markdown":
        return _markdown(header, rows)
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
        return out.getvalue().rstrip("\n")
    if fmt == "json":
        return json.dumps([dict(zip(header, row)) for row in rows], indent=2)
    raise ValueError(f"unknown format {fmt!r}")


def table1_table(rows):
    header = ("Model", "Bits") + TABLE1_COLUMNS
    body = [(f"{kind} {model}", bits) + tuple(f"{v:.2f}" for v in cells)
            for model, kind, bits, *cells in rows]
    return header, body


def sweep_table(rows):
    header = ("Model", "Linear weights", "FP16 MUL (J)", "FP16 ADD (J)", "FP16 total (J)",
              "b1.58 MUL (J)", "b1.58 ADD (J)", "b1.58 total (J)", "Saving (x)")
    body = [(r["model"], f"{r['linear_weights'] / 1e9:.2f} G", f"{r['fp16_mul']:.3f}",
             f"{r['fp16_add']:.3f}", f"{r['fp16_total']:.3f}", f"{r['b158_mul']:.4f}",
             f"{r['b158_add']:.4f}", f"{r['b158_total']:.4f}", f"{r['saving']:.1f}")
            for r in rows]
    return header, body


def traffic_table(rows):
    keys = [k for k in rows[0] if k not in ("model", "linear_weights")]
    header = ("Model", "Linear weights") + tuple(f"{k} (J)" for k in keys)
    body = [(r["model"], f"{r['linear_weights'] / 1e9:.2f} G") +
            tuple(f"{r[k]:.3f}" for k in keys) for r in rows]
    return header, body


def plot_sweep(rows, path, node="7nm", seq_len=SEQ_LEN):
    """Stacked MUL/ADD bars of FP16 vs b1.58 per model, and the saving factor."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    names = [r["model"] for r in rows]
    x = np.arange(len(rows))
    width = 0.38
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(11, 8), sharex=True,
                                      gridspec_kw={"height_ratios": [3, 2]})
    for offset, prefix, label, colors in ((-width / 2, "fp16", "FP16", ("#c0392b", "#f1948a")),
                                          (width / 2, "b158", "b1.58", ("#1f618d", "#85c1e9"))):
        mul = np.array([r[f"{prefix}_mul"] for r in rows])
        add = np.array([r[f"{prefix}_add"] for r in rows])
        top.bar(x + offset, mul, width, color=colors[0], label=f"{label} MUL")
        top.bar(x + offset, add, width, bottom=mul, color=colors[1], label=f"{label} ADD")
    top.set_yscale("log")
    smallest = min(min(r["fp16_mul"], r["b158_mul"], r["b158_add"]) for r in rows)
    top.set_ylim(bottom=smallest / 3)
    top.set_ylabel("matmul energy per forward pass (J, log)")
    top.set_title(f"Matrix-multiplication energy at {node}, {seq_len} tokens: "
                  "FP16 LLaMA-style vs BitNet b1.58 of the same shape")
    top.legend(ncol=4, loc="upper left")
    top.grid(axis="y", which="both", alpha=0.3)
    saving = [r["saving"] for r in rows]
    bars = bottom.bar(x, saving, 0.6, color="#7d3c98")
    bottom.bar_label(bars, labels=[f"{s:.0f}x" for s in saving], padding=2)
    bottom.set_ylabel("FP16 / b1.58 energy (x)")
    bottom.set_ylim(0, max(saving) * 1.2)
    bottom.set_xticks(x, names, rotation=20)
    bottom.set_xlabel("model (linear-layer shapes from the model's configuration)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
