"""The reference checkpoints (data only): :mod:`ternary_accel.model.reference`."""
