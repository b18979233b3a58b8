"""Sphinx configuration for the wsgisession documentation.

Build: ``python -m sphinx -W --keep-going -b html docs docs/_build`` (and
``-b doctest docs docs/_build/doctest`` to run the examples). Everything is
local: no intersphinx, no downloads. The benchmark plots are drawn at build
time into ``docs/_generated/``; the lifecycle diagram is drawn by graphviz's
``dot``.
"""

from __future__ import annotations

import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(DOCS / "_ext"))
sys.path.insert(0, str(ROOT))

import wsgisession  # noqa: E402

project = "wsgisession"
author = "The wsgisession authors"
copyright = "the wsgisession authors"
release = version = wsgisession.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.doctest",
    "sphinx.ext.graphviz",
    "myst_parser",
    "wsgisession_docs",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build", "_generated/*.txt", "examples", "Thumbs.db", ".DS_Store"]
root_doc = "index"

html_theme = "furo"
html_title = f"wsgisession {release}"
html_static_path: list[str] = []
html_last_updated_fmt = None
pygments_style = "sphinx"
pygments_dark_style = "monokai"

# Autodoc: the documented surface is what each module exports; members in
# source order, as a reader of the module meets them.
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_default_options = {"members": True, "show-inheritance": True}
autoclass_content = "both"

# SVG keeps the diagram sharp at any zoom, and searchable.
graphviz_output_format = "svg"

# MyST: the Markdown files of the repository (SECURITY.md, CHANGELOG.md,
# benchmarks/README.md) are included as they are.
myst_enable_extensions = ["colon_fence"]
myst_heading_anchors = 3

# Every example on these pages runs under ``-b doctest``. A framework that is
# not installed skips the examples of its section (they need the test extras).
doctest_global_setup = f"""
DOCS_DIR = {str(DOCS)!r}
import importlib.util as _util
import os as _os
import secrets as _secrets
_os.environ.setdefault("SESSION_SECRET", _secrets.token_hex(32))
has_flask = _util.find_spec("flask") is not None
has_bottle = _util.find_spec("bottle") is not None
has_pyramid = _util.find_spec("pyramid") is not None
has_redis = _util.find_spec("redis") is not None
has_psycopg = _util.find_spec("psycopg_pool") is not None
has_pymysql = _util.find_spec("pymysql") is not None
has_pytest = _util.find_spec("pytest") is not None
"""
doctest_test_doctest_blocks = ""
