"""Sphinx configuration: the topic pages are Markdown (MyST), the API pages come from the
numpydoc docstrings of the installed package. ``make docs`` builds with warnings as
errors."""

import importlib.metadata

project = "ternary-accel"
author = "the ternary-accel authors"
release = importlib.metadata.version("ternary-accel")
version = release

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "numpydoc",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build"]
myst_enable_extensions = ["dollarmath", "colon_fence"]
myst_heading_anchors = 3

# API pages: one per module, generated from the package (see api/index.rst).
autosummary_generate = True
autosummary_imported_members = False
autodoc_default_options = {"members": True, "member-order": "bysource"}
autodoc_typehints = "none"
# The cocotb testbenches run inside the simulator; their module-level code reads the
# simulator's environment, so the API pages describe them without importing cocotb's
# runtime objects.
autodoc_mock_imports = []
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False
numpydoc_validation_checks = set()

html_theme = "alabaster"
html_title = "ternary-accel"
nitpicky = False

# The result pages are command output, whose headings start wherever the command's do.
suppress_warnings = ["myst.header"]
