"""The checks behind the generated pages, free of Sphinx so the tests can run them alone.

Each compares what a page shows with what the code has: the options of
:class:`~wsgisession.SessionMiddleware`, the commands of the command line,
the states of :class:`~wsgisession.State`.
"""

from __future__ import annotations

import contextlib
import inspect
import io
import os
import re
from collections.abc import Iterable
from pathlib import Path

DOCS = Path(__file__).resolve().parent.parent
LIFECYCLE_DOT = DOCS / "lifecycle.dot"
#: The width argparse formats the help for (it reads COLUMNS): fixed, so a build
#: does not depend on the terminal it runs in.
HELP_COLUMNS = "88"


def middleware_options() -> dict[str, inspect.Parameter]:
    """SessionMiddleware's options, in signature order (everything but ``app``)."""
    from wsgisession import SessionMiddleware

    parameters = inspect.signature(SessionMiddleware).parameters
    return {name: p for name, p in parameters.items() if name != "app"}


def option_problems(documented: Iterable[str], in_code: Iterable[str]) -> list[str]:
    """What is wrong between the options a page describes and those the code has."""
    documented, in_code = list(documented), list(in_code)
    problems = [f"option {name!r} of SessionMiddleware is not documented" for name in in_code if name not in documented]
    problems += [
        f"documented option {name!r} is not a parameter of SessionMiddleware"
        for name in documented
        if name not in in_code
    ]
    problems += [
        f"option {name!r} is documented twice" for name in sorted(set(documented)) if documented.count(name) > 1
    ]
    return problems


def cli_help(*argv: str) -> str:
    """What ``wsgisession ARGV... --help`` prints, at a fixed width."""
    from wsgisession import cli

    out = io.StringIO()
    saved = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = HELP_COLUMNS
    try:
        with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
            cli.main([*argv, "--help"])
    finally:
        if saved is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = saved
    return out.getvalue().rstrip()


def cli_commands(top_help: str) -> list[str]:
    """The command names ``wsgisession --help`` lists under COMMAND."""
    block = top_help.split("positional arguments:", 1)[-1].split("\n\n", 1)[0]
    return re.findall(r"^    ([a-z][a-z0-9-]*)\s", block, flags=re.MULTILINE)


def diagram_states(dot: str) -> set[str]:
    """The upper-case node names of a DOT graph: the session states it draws."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', dot)  # labels may say anything
    text = re.sub(r"//[^\n]*|/\*.*?\*/", "", text, flags=re.DOTALL)
    text = re.sub(r"[A-Za-z_]\w*\s*=\s*[^,;\]\s]+", "", text)  # attributes: rankdir=LR, shape=box
    names = set(re.findall(r"\b([A-Za-z_][A-Za-z0-9_]*)\s*(?:\[|->|;)", text))
    names |= set(re.findall(r"->\s*([A-Za-z_][A-Za-z0-9_]*)", text))
    return {name for name in names if name.isupper()}


def state_problems(drawn: set[str], states: Iterable[str]) -> list[str]:
    """What is wrong between the states a diagram draws and the members of State."""
    members = set(states)
    problems = [f"lifecycle.dot does not draw State.{name}" for name in sorted(members - drawn)]
    problems += [
        f"lifecycle.dot draws {name}, which is not a member of wsgisession.State" for name in sorted(drawn - members)
    ]
    return problems
