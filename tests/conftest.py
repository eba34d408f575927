"""Shared fixtures and helpers of the test suite."""

import pytest

from cli_runner import invoke


@pytest.fixture
def cli():
    """Run ``ternary-accel`` in this process: ``cli("perf", "--format", "json")`` returns
    a result with ``returncode``, ``stdout`` and ``stderr``."""
    return invoke
