"""``python -m ternary_accel.cli``: the same as the ``ternary-accel`` console script."""

from ternary_accel.cli.main import run

if __name__ == "__main__":
    run()
