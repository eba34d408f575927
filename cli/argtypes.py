"""``argparse`` types shared by the subcommands of ``ternary-accel``: each parses one
value or raises ``argparse.ArgumentTypeError`` with a message naming what was wrong, which
argparse turns into a usage error naming the flag (exit status 2)."""

import argparse
import math
import re
from pathlib import Path

__all__ = ["positive_int", "non_negative_int", "positive_float", "probability",
           "finite_float", "FORMATS", "add_format", "output_dir", "output_file",
           "flag_names", "name_flags", "FlagErrors", "given", "refuse_unless"]

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


def sparsity_ratio(text):
    """A sparsity ratio in [0, 1) (Top-K: the fraction of the entries zeroed)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be a sparsity ratio in [0, 1), not {text}")
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


def flag_names(parser, **renamed):
    """``{parameter: flag}`` of ``parser``'s options: each option's destination
    (``output_rows``) to its long flag (``--output-rows``); ``renamed`` adds or overrides
    pairs where a library parameter has another flag (``tokens="--reuse"``)."""
    names = {}
    for action in parser._actions:
        longs = [s for s in action.option_strings if s.startswith("--")]
        if longs and action.dest not in ("help", "version"):
            names[action.dest] = max(longs, key=len) if action.dest.replace("_", "-") \
                not in (s[2:] for s in longs) else "--" + action.dest.replace("_", "-")
    names.update(renamed)
    return names


def name_flags(message, flags):
    """``message`` of a library error with its parameter names as flags.

    ``name=True`` becomes the flag (``output_stage=True``: ``--output-stage``),
    ``name=False`` its ``--no-`` form, ``name=value`` the flag and the value, a name with
    an underscore the flag anywhere, and a one-word name the flag where the message starts
    with it ("tokens must be at most 256" from ``--reuse 1000``: "--reuse must be at most
    256") or where its value follows in parentheses ("must divide rows (8)"); other
    words are left alone ("a layer of 8 rows").
    """
    for name in sorted(flags, key=len, reverse=True):
        flag, word = flags[name], rf"(?<![\w-]){re.escape(name)}"
        message = re.sub(rf"{word}=True\b", flag, message)
        message = re.sub(rf"{word}=False\b", "--no-" + flag[2:], message)
        message = re.sub(rf"{word}=(?=\S)", flag + " ", message)
        if "_" in name:
            message = re.sub(rf"{word}(?![\w-])", flag, message)
        else:
            if re.match(rf"{re.escape(name)}(?![\w-])", message):
                message = flag + message[len(name):]
            message = re.sub(rf"{word} (?=\([^)]*\))", flag + " ", message)
    return message


class FlagErrors:
    """A stand-in for ``parser`` whose :meth:`error` names flags, not parameters: pass it
    to code that reports a library's ``ValueError`` through ``parser.error``."""

    def __init__(self, parser, **renamed):
        self._parser = parser
        self.flags = flag_names(parser, **renamed)

    def error(self, message):
        self._parser.error(name_flags(str(message), self.flags))

    def __getattr__(self, name):
        return getattr(self._parser, name)


def given(parser, args, *dests):
    """The flags among ``dests`` whose values differ from ``parser``'s defaults, as the
    user spells them (``--gate-zeros``)."""
    flags = flag_names(parser)
    return [flags.get(dest, "--" + dest.replace("_", "-")) for dest in dests
            if hasattr(args, dest) and getattr(args, dest) != parser.get_default(dest)]


def refuse_unless(parser, args, condition, when, *dests):
    """A usage error if ``condition`` is false and a flag of ``dests`` was given:
    "--layer applies only with --checkpoint" (``when`` is "with --checkpoint")."""
    if not condition:
        flags = given(parser, args, *dests)
        if flags:
            parser.error(f"{flags[0]} applies only {when}")
