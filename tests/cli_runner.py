"""``ternary-accel`` run in the test's own process: no new interpreter per call, the
same exit status, standard output and standard error as the console script."""

import contextlib
import io
import os
from dataclasses import dataclass

from ternary_accel.cli.main import main

__all__ = ["invoke", "CliResult", "usage_error"]


@dataclass
class CliResult:
    returncode: int
    stdout: str
    stderr: str


def invoke(*args, cwd=None):
    """Run ``ternary-accel ARGS...`` (strings or paths) and return a :class:`CliResult`;
    ``cwd`` runs it from that folder."""
    out, err = io.StringIO(), io.StringIO()
    here = os.getcwd()
    try:
        if cwd is not None:
            os.chdir(cwd)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main([str(arg) for arg in args])
    finally:
        os.chdir(here)
    return CliResult(code, out.getvalue(), err.getvalue())


def usage_error(result, *fragments):
    """Assert ``result`` is a usage error: status 2, one line on stderr naming what is
    wrong (every one of ``fragments``), no traceback, no warning; returns the line."""
    assert result.returncode == 2, (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("ternary-accel") and ": error: " in lines[0], lines[0]
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    assert "Traceback" not in result.stderr and "Warning" not in result.stderr
    return lines[0]
