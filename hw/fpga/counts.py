"""How the flow's reports count area, in a module without Amaranth (the performance model
reads placed engines' figures through it)."""

__all__ = ["LUTRAM_LUT4", "lut4_equivalent"]

#: LUT4 sites one ECP5 ``TRELLIS_DPR16X4`` takes: two slices in RAM mode and the slice
#: of its write port.
LUTRAM_LUT4 = 6


def lut4_equivalent(result):
    """LUT4s, plus two per carry cell (a CCU2C / SB_CARRY slice holds two LUT4s), plus
    :data:`LUTRAM_LUT4` per LUT RAM block; ``result`` has ``lut4``, ``carry`` and
    (optionally) ``lutram``."""
    return result.lut4 + 2 * result.carry + LUTRAM_LUT4 * getattr(result, "lutram", 0)
