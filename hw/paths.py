"""Where generated files go: ``./build`` of the current directory, or the folder named by
the environment variable ``TERNARY_ACCEL_BUILD``; never inside the installed package.

Every default output folder (Verilator builds, synthesis runs, reports, energy tables,
the design-space sweep) is a child of :func:`build_root`, resolved when it is used, so
that setting the variable moves them all.
"""

import os
from pathlib import Path

__all__ = ["BUILD_ENV", "build_root", "build_path"]

#: The environment variable that moves the build folder.
BUILD_ENV = "TERNARY_ACCEL_BUILD"


def build_root():
    """The build folder: ``$TERNARY_ACCEL_BUILD``, else ``build`` of the current
    directory."""
    return Path(os.environ.get(BUILD_ENV) or "build")


def build_path(*parts):
    """A path under :func:`build_root`, e.g. ``build_path("sim")``."""
    return build_root().joinpath(*parts)
