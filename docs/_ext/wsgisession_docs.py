"""Pages generated from the code, so they cannot drift from it.

* ``.. wsgisession-options::`` renders the table of
  :class:`~wsgisession.SessionMiddleware`'s options from its signature (name
  and default), with the meaning of each taken from the directive's content,
  a definition list. An option the code has and the page does not describe,
  or one the page describes that the code no longer has, is a build warning
  (an error under ``-W``).
* ``.. wsgisession-cli::`` renders ``wsgisession --help`` and then one section
  per command with that command's ``--help``, as the installed command line
  prints them.
* The lifecycle diagram (``lifecycle.dot``) is checked against
  :class:`wsgisession.State`: its upper-case nodes must be exactly the
  members of ``State``.
* The benchmark plots are drawn by ``benchmarks/plots.py`` from
  ``benchmarks/results/*.json`` into ``docs/_generated/`` before any page is read.
"""

from __future__ import annotations

import importlib.util
import inspect
from pathlib import Path
from types import ModuleType
from typing import Any

from docutils import nodes
from docutils.parsers.rst import directives
from sphinx.application import Sphinx
from sphinx.util import logging
from sphinx.util.docutils import SphinxDirective
from wsgisession_checks import (
    LIFECYCLE_DOT,
    cli_commands,
    cli_help,
    diagram_states,
    middleware_options,
    option_problems,
    state_problems,
)

DOCS = Path(__file__).resolve().parent.parent
ROOT = DOCS.parent
GENERATED = DOCS / "_generated"

logger = logging.getLogger(__name__)


# -- the options table --------------------------------------------------------------------


def _cell(*children: nodes.Node) -> nodes.entry:
    entry = nodes.entry()
    entry.extend(children)
    return entry


class OptionsDirective(SphinxDirective):
    """The option table of SessionMiddleware: names and defaults from the code, meanings from the page."""

    has_content = True
    option_spec = {"required": directives.unchanged}

    def run(self) -> list[nodes.Node]:
        holder = nodes.container()
        self.state.nested_parse(self.content, self.content_offset, holder)
        lists = [child for child in holder.children if isinstance(child, nodes.definition_list)]
        if len(lists) != 1 or len(holder.children) != 1:
            return [
                self.state.document.reporter.warning(
                    "wsgisession-options: the content must be one definition list", line=self.lineno
                )
            ]
        described: dict[str, list[nodes.Node]] = {}
        names: list[str] = []
        for item in lists[0].children:
            term = item.next_node(nodes.term).astext().strip().strip("`")
            names.append(term)
            described[term] = list(item.next_node(nodes.definition).children)
        code = middleware_options()
        for problem in option_problems(names, code):
            logger.warning(problem, location=(self.env.docname, self.lineno))
        required = set((self.options.get("required") or "").split())

        table = nodes.table(classes=["wsgisession-options"])
        group = nodes.tgroup(cols=3)
        table += group
        for width in (22, 16, 62):
            group += nodes.colspec(colwidth=width)
        head = nodes.thead()
        group += head
        head += nodes.row("", *(_cell(nodes.paragraph(text=t)) for t in ("option", "default", "meaning")))
        body = nodes.tbody()
        group += body
        for name, parameter in code.items():
            if name in required or parameter.default is inspect.Parameter.empty:
                default: nodes.Node = nodes.emphasis(text="required")
            else:
                default = nodes.literal(text=repr(parameter.default))
            target_id = f"option-{name}"
            name_cell = nodes.paragraph("", "", nodes.literal(text=name), ids=[target_id])
            meaning = described.get(name) or [nodes.paragraph(text="(undocumented)")]
            body += nodes.row("", _cell(name_cell), _cell(nodes.paragraph("", "", default)), _cell(*meaning))
        return [table]


# -- content for a module that may not be there yet ------------------------------------------


class IfModuleDirective(SphinxDirective):
    """Its content, if the module named is importable; nothing (and an info line) otherwise."""

    has_content = True
    required_arguments = 1

    def run(self) -> list[nodes.Node]:
        name = self.arguments[0]
        try:
            found = importlib.util.find_spec(name) is not None
        except ImportError:
            found = False
        if not found:
            logger.info(f"{self.env.docname}: {name} is not importable: its section is left out")
            return []
        holder = nodes.container()
        self.state.nested_parse(self.content, self.content_offset, holder)
        return list(holder.children)


# -- the command line ----------------------------------------------------------------------------


class CliDirective(SphinxDirective):
    """``wsgisession --help``, then a section per command with its own ``--help``."""

    def run(self) -> list[nodes.Node]:
        top = cli_help()
        result: list[nodes.Node] = [nodes.literal_block(top, top, language="text")]
        commands = cli_commands(top)
        if not commands:
            logger.warning("wsgisession --help lists no command", location=(self.env.docname, self.lineno))
        for command in commands:
            text = cli_help(command)
            section = nodes.section(ids=[f"command-{command}"], names=[f"wsgisession {command}"])
            section += nodes.title(text=f"wsgisession {command}")
            section += nodes.literal_block(text, text, language="text")
            self.state.document.note_implicit_target(section)
            result.append(section)
        return result


# -- the lifecycle diagram -------------------------------------------------------------------------


def _check_lifecycle(app: Sphinx) -> None:
    from wsgisession import State

    for problem in state_problems(diagram_states(LIFECYCLE_DOT.read_text()), State.__members__):
        logger.warning(f"{LIFECYCLE_DOT}: {problem}")


# -- the benchmark plots -------------------------------------------------------------------------------


def _load_plots() -> ModuleType:
    spec = importlib.util.spec_from_file_location("wsgisession_bench_plots", ROOT / "benchmarks" / "plots.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _draw_plots(app: Sphinx) -> None:
    try:
        plots = _load_plots()
        written = plots.render(ROOT / "benchmarks" / "results", GENERATED)
    except ImportError as exc:
        logger.warning(f"benchmark plots not drawn: {exc} (pip install -e '.[docs]')")
        return
    logger.info(f"benchmark plots: {len(written)} drawn into {GENERATED}")


def setup(app: Sphinx) -> dict[str, Any]:
    app.add_directive("wsgisession-options", OptionsDirective)
    app.add_directive("wsgisession-cli", CliDirective)
    app.add_directive("wsgisession-if-module", IfModuleDirective)
    app.connect("builder-inited", _check_lifecycle)
    app.connect("builder-inited", _draw_plots)
    return {"parallel_read_safe": True, "parallel_write_safe": True, "version": "1"}
