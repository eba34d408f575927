"""``argparse`` types shared by the subcommands of ``ternary-accel``: each parses one
value or raises ``argparse.ArgumentTypeError`` with a message naming what was wrong, which
argparse turns into a usage error naming the flag (exit status 2)."""

import argparse
import math
from pathlib import Path

__all__ = ["positive_int", "non_negative_int", "positive_float", "probability",
           "finite_float", "FORMATS", "add_format", "output_dir", "output_file"]

#: Table formats of every command that prints a table.
FORMATS = ("markdown", "csv", "json")


def _int(text):
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None


def positive_int(text):
    """An integer >= 1."""
    value = _int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, not {value}")
    return value


def non_negative_int(text):
    """An integer >= 0 (a seed)."""
    value = _int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be non-negative, not {value}")
    return value


def finite_float(text):
    """A finite number (``nan`` and ``inf`` are refused)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, not {text}")
    return value


def positive_float(text):
    """A finite number > 0."""
    value = finite_float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, not {text}")
    return value


def probability(text):
    """A probability or share in [0, 1)."""
    value = finite_float(text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), not {text}")
    return value


def _format(text):
    # "md" stays accepted: earlier commands spelled Markdown so
    return "markdown" if text == "md" else text


def add_format(parser, default="markdown"):
    """``--format markdown|csv|json`` (``md`` is taken for ``markdown``)."""
    parser.add_argument("--format", type=_format, choices=FORMATS, default=default,
                        help="table format (default: %(default)s)")


def _writable_dir(path, *, create):
    path = Path(path)
    for parent in [path, *path.parents]:
        if parent.exists():
            if not parent.is_dir():
                raise argparse.ArgumentTypeError(
                    f"cannot create folder {str(path)!r}: {str(parent)!r} is a file")
            break
    return path


def output_dir(text):
    """A folder that can be created (missing parents are made when written): refused
    when a file stands on the path."""
    return _writable_dir(text, create=True)


def output_file(text):
    """A file path whose folder can be created, and which is not itself a folder."""
    path = Path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is a folder, not a file")
    _writable_dir(path.parent, create=True)
    return path
