"""Parameter checks shared by every component of ``hw``."""

from ternary_accel.model.quant import HW_WEIGHT_MODES

__all__ = ["check_positive_int", "check_bool", "check_weight_mode"]


def check_positive_int(name, value, *, minimum=1):
    """Return ``value`` if it is an ``int`` >= ``minimum``.

    Raises
    ------
    TypeError
        If ``value`` is not an integer (``bool`` is refused too).
    ValueError
        If ``value`` is below ``minimum``.
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be a positive integer, not {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, not {value}")
    return value


def check_bool(name, value):
    """Return ``value`` if it is a ``bool``; raise ``TypeError`` otherwise."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, not {value!r}")
    return value


def check_weight_mode(value):
    """Return ``value`` if it names a hardware weight mode of :mod:`model.quant`."""
    if not isinstance(value, str):
        raise TypeError(f"weight_mode must be a string, not {value!r}")
    if value not in HW_WEIGHT_MODES:
        raise ValueError(
            f"weight_mode must be one of {', '.join(HW_WEIGHT_MODES)}, not {value!r}")
    return value
