"""Energy from gates: a cell netlist's per-pin energies (from the cell library, at each
pin's load and slew) multiplied by the toggles a gate-level simulation counted, split the
way OpenSTA's ``report_power`` splits power: sequential and combinational cells,
internal, switching and leakage.

The arithmetic is ``report_power``'s (its per-pin activity model): an output pin that
toggles ``n`` times costs ``n`` times its internal energy per transition plus ``n`` times
its switching energy ``C V^2 / 2``; an input pin with its own internal-power table (a
flip-flop's data and clock pins) costs its energy per transition of that pin; a running
clock makes two transitions a cycle at every clock pin; each cell leaks all the time.

What this covers and what it does not: the cells' own energy and the energy of charging
their input pins. Not wires (no placement, no routing: no wire capacitance), not a clock
tree (the clock is ideal: the flip-flops' clock pins are counted, the buffers that would
drive them are not), not memories (the unit's operands arrive on its ports), and not
glitches (the simulation is zero-delay).

For other process nodes the measured 180 nm energies are scaled by a stated rule
(:data:`NODE_SCALING`); the results are labelled "scaled", never measured.
"""

from dataclasses import asdict, dataclass

from ternary_accel.energy.ops import op_energy
from ternary_accel.model.quant import ACT_WIDTH, INT8, TERNARY

__all__ = ["GROUPS", "KINDS", "EnergyBreakdown", "gate_energy", "MEASURED_NODE",
           "NODE_SCALING", "SCALING_RULE", "scale_factor", "op_reference_pj"]

#: Cell groups of the breakdown, as OpenSTA names them.
GROUPS = ("sequential", "combinational")
#: Kinds of energy.
KINDS = ("internal", "switching", "leakage")

#: The node of the cell library the flow measures.
MEASURED_NODE = "180nm"
#: Nominal supply voltage and feature size of each node for the scaling rule.
NODE_SCALING = {
    "180nm": {"nm": 180, "volt": 1.8,
              "volt_source": "the OSU 180 nm library's nom_voltage (osu018_stdcells.lib)"},
    "45nm": {"nm": 45, "volt": 0.9,
             "volt_source": "Horowitz, ISSCC 2014: the 45 nm energies are at 0.9 V"},
    "7nm": {"nm": 7, "volt": 0.7,
            "volt_source": "an assumed 0.7 V nominal supply (no 7 nm library here)"},
}
#: How a measured energy is moved to another node.
SCALING_RULE = ("switching energy C V^2 with the capacitance proportional to the "
                "feature size (classical constant-field scaling, Dennard et al., IEEE "
                "JSSC 1974): E(node) = E(180 nm) x (L / 180 nm) x (V / 1.8 V)^2; "
                "Stillmaker & Baas (Integration 58, 2017) show such classical rules can "
                "be off by large factors below 45 nm, so the 7 nm figure is an order of "
                "magnitude, and leakage is not scaled (it is left out of scaled figures)")


def scale_factor(node, source=MEASURED_NODE):
    """Factor from ``source`` to ``node`` by :data:`SCALING_RULE`.

    Raises
    ------
    ValueError
        On a node the rule has no figures for.
    """
    for n in (node, source):
        if n not in NODE_SCALING:
            raise ValueError(f"no scaling figures for {n!r}; known: "
                             f"{', '.join(NODE_SCALING)}")
    a, b = NODE_SCALING[node], NODE_SCALING[source]
    return (a["nm"] / b["nm"]) * (a["volt"] / b["volt"]) ** 2


def op_reference_pj(node, weight_mode=TERNARY, act_width=ACT_WIDTH):
    """The per-operation model's energy of one MAC at ``node`` (:mod:`energy.ops`): a
    ternary MAC is one add at the activation width (the BitNet b1.58 reading: an INT8
    add, INT4 for 4-bit activations); an int8-weight MAC is an INT8 multiply plus an
    INT8 add."""
    if weight_mode == INT8:
        return op_energy(node, "int8", "mul") + op_energy(node, "int8", "add")
    return op_energy(node, "int4" if act_width == 4 else "int8", "add")


@dataclass
class EnergyBreakdown:
    """Energy per cycle of a design on one workload, in joules.

    Attributes
    ----------
    energy : dict
        ``{group: {kind: J per cycle}}`` over :data:`GROUPS` and :data:`KINDS`.
    cycles : int
        Cycles the toggles were counted over.
    macs_per_cycle : int
        Multiply-accumulates the design does per cycle (0: not a datapath).
    period_ns : float
        The clock period the leakage is charged over.
    """

    energy: dict
    cycles: int
    macs_per_cycle: int = 0
    period_ns: float = 10.0

    def total(self, kind=None, group=None):
        """J per cycle, of one kind and/or group (None: all)."""
        return sum(v for g, kinds in self.energy.items() if group in (None, g)
                   for k, v in kinds.items() if kind in (None, k))

    @property
    def dynamic(self):
        """J per cycle without leakage."""
        return self.total() - self.total("leakage")

    def per_mac_pj(self, kind=None, group=None, dynamic=False):
        """pJ per MAC (of one kind/group, or the dynamic part)."""
        if not self.macs_per_cycle:
            return float("nan")
        joules = self.dynamic if dynamic else self.total(kind, group)
        return joules / self.macs_per_cycle * 1e12

    def power_w(self):
        """Average power at the clock of :attr:`period_ns`."""
        return self.total() / (self.period_ns * 1e-9)

    def to_dict(self):
        d = asdict(self)
        d.update(total_j=self.total(), pj_per_mac=self.per_mac_pj(),
                 dynamic_pj_per_mac=self.per_mac_pj(dynamic=True))
        return d


def gate_energy(pin_energy, leakage_w, pins, types, toggles, *, cycles, period_ns,
                sequential, clock_net=("clk", 0), clock_running=True, macs_per_cycle=0,
                internal="internal"):
    """Energy per cycle of a netlist from its per-pin energies and simulated toggles.

    Parameters
    ----------
    pin_energy : dict
        ``{(instance, pin): {"internal": J, "switching": J}}`` per transition.
    leakage_w : dict
        ``{instance: W}``.
    pins : dict
        ``{(instance, pin): (net, bit) or None}``: the net on each pin (None: constant).
    types : dict
        ``{instance: cell type}``.
    toggles : dict
        ``{(net, bit): transitions}`` over ``cycles`` cycles.
    cycles : int
    period_ns : float
    sequential : collection of str
        Cell types counted as sequential.
    clock_net : (str, int)
        The clock's net: its pins make two transitions a cycle while the clock runs.
    clock_running : bool
        False: a gated (stopped) clock, no clock-pin energy.
    macs_per_cycle : int
    internal : str
        The key of ``pin_energy`` holding the internal energy (``"sta_internal"``:
        OpenSTA 2.0.17's own per-transition figure, which adds the rising and falling
        table entries; used to check the sums against its ``report_power``).

    Returns
    -------
    EnergyBreakdown

    Raises
    ------
    ValueError
        If ``cycles`` is not positive or a pin's net was not observed.
    """
    if cycles < 1:
        raise ValueError(f"cycles must be positive, not {cycles}")
    energy = {g: {k: 0.0 for k in KINDS} for g in GROUPS}
    missing = []
    for (instance, pin), figures in pin_energy.items():
        group = "sequential" if types.get(instance) in sequential else "combinational"
        net = pins.get((instance, pin))
        if net is None:
            continue                      # tied to a constant: never toggles
        if net == tuple(clock_net):
            count = 2 * cycles if clock_running else 0
        elif net in toggles:
            count = toggles[net]
        else:
            missing.append(f"{instance}/{pin} ({net[0]}[{net[1]}])")
            continue
        energy[group]["internal"] += figures.get(internal, 0.0) * count / cycles
        energy[group]["switching"] += figures.get("switching", 0.0) * count / cycles
    if missing:
        raise ValueError(f"{len(missing)} pins on nets the simulation did not record, "
                         f"e.g. {missing[0]}")
    for instance, watts in leakage_w.items():
        group = "sequential" if types.get(instance) in sequential else "combinational"
        energy[group]["leakage"] += watts * period_ns * 1e-9
    return EnergyBreakdown(energy=energy, cycles=cycles, macs_per_cycle=macs_per_cycle,
                           period_ns=period_ns)
