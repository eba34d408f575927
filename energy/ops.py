"""Per-operation and per-bit energies: the data the energy model multiplies counts by.

To add a process node or a data type, add an entry to :data:`OP_ENERGY_PJ` (and to
:data:`MEMORY_PJ_PER_64BIT` for a memory); nothing else needs to change.
"""

__all__ = ["OP_ENERGY_PJ", "MEMORY_PJ_PER_64BIT", "op_energy", "memory_pj_per_bit",
           "NODES", "DTYPES", "INT4_ADD_SCALE", "DERIVED_INT"]

_HOROWITZ = "Horowitz, 'Computing's energy problem', ISSCC 2014 (45 nm)"
_POKEBNN = "Zhang, Zhang & Lew, 'PokeBNN', CVPR 2022 (7 nm), as quoted by BitNet"
#: No source gives an INT4 add; it is derived from the INT8 add of the same node.
INT4_ADD_SCALE = 4 / 8
_INT4 = ("derived, not sourced: the INT8 add x 4/8 (an adder's energy taken as linear "
         "in its width; Horowitz's 8/16/32-bit adds, 0.03/0.05/0.1 pJ, are about linear); "
         "BitNet a4.8's INT4 activations")

#: Energy of one operation in picojoules: ``{node: {dtype: {"add", "mul", "source"}}}``.
OP_ENERGY_PJ = {
    "45nm": {
        "fp32": {"add": 0.9, "mul": 3.7, "source": _HOROWITZ},
        "fp16": {"add": 0.4, "mul": 1.1, "source": _HOROWITZ},
        "int32": {"add": 0.1, "mul": 3.1, "source": _HOROWITZ},
        "int16": {"add": 0.05, "mul": None, "source": _HOROWITZ},
        "int8": {"add": 0.03, "mul": 0.2, "source": _HOROWITZ},
        "int4": {"add": 0.03 * INT4_ADD_SCALE, "mul": None, "source": _INT4},
    },
    "7nm": {
        "fp32": {"add": 0.38, "mul": 1.31, "source": _POKEBNN},
        "fp16": {"add": 0.16, "mul": 0.34, "source": _POKEBNN},
        "int8": {"add": 0.007, "mul": 0.07, "source": _POKEBNN},
        "int4": {"add": 0.007 * INT4_ADD_SCALE, "mul": None, "source": _INT4},
    },
}

#: Energy of one 64-bit read in picojoules at 45 nm (Horowitz, ISSCC 2014).
MEMORY_PJ_PER_64BIT = {
    "sram-8kb": 10.0,
    "sram-32kb": 20.0,
    "sram-1mb": 100.0,
    "dram-low": 1300.0,
    "dram-high": 2600.0,
}

NODES = tuple(OP_ENERGY_PJ)
DTYPES = tuple(sorted({d for node in OP_ENERGY_PJ.values() for d in node}))


#: Integer widths without a sourced figure are derived from the node's INT8 figure: an
#: add linear in the width, a multiply quadratic (the hardware numerics' 12- to 24-bit
#: fixed point). Horowitz's 45 nm table agrees: int32/int8 is 3.3x for the add (4x
#: derived) and 15.5x for the multiply (16x derived).
DERIVED_INT = ("derived, not sourced: the node's INT8 add x N/8 and multiply x (N/8)^2 "
               "(Horowitz's int8/int32 ratios at 45 nm: 3.3x add, 15.5x multiply)")


def _derived_int(node, dtype, op):
    """``intN`` (N > 8) from the node's int8 entry, or None."""
    if not dtype.startswith("int") or not dtype[3:].isdigit():
        return None
    width = int(dtype[3:])
    base = OP_ENERGY_PJ.get(node, {}).get("int8", {}).get(op)
    if width <= 8 or width > 64 or base is None:
        return None
    return base * (width / 8 if op == "add" else (width / 8) ** 2)


def op_energy(node, dtype, op):
    """Picojoules of one ``op`` ("add" or "mul") on ``dtype`` at ``node``; an integer
    width with no entry is derived from INT8 (:data:`DERIVED_INT`).

    Raises
    ------
    ValueError
        If the table has no such entry and none can be derived.
    """
    try:
        value = OP_ENERGY_PJ[node][dtype].get(op)
        if value is None and dtype != "int8":
            value = _derived_int(node, dtype, op) or value
    except KeyError:
        value = _derived_int(node, dtype, op)
        if value is not None:
            return value
        raise ValueError(f"no {op} energy for {dtype} at {node}; known nodes: "
                         f"{', '.join(NODES)}") from None
    if value is None:
        raise ValueError(f"no {op} energy for {dtype} at {node}")
    return value


def memory_pj_per_bit(memory):
    """Picojoules per bit read from ``memory``: the 64-bit access energy / 64."""
    try:
        return MEMORY_PJ_PER_64BIT[memory] / 64
    except KeyError:
        raise ValueError(f"unknown memory {memory!r}; known: "
                         f"{', '.join(MEMORY_PJ_PER_64BIT)}") from None
