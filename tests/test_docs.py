"""The documentation site (docs/): it builds, its examples run, and its generated pages match the code.

The builds need the ``docs`` extra (Sphinx, furo, myst-parser, matplotlib)
and graphviz's ``dot``; without them those tests skip and say why (they
fail under ``WSGISESSION_REQUIRE_ALL=1``). The checks of the pages against
the code need neither.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from wsgisession import State
from wsgisession.stores.base import Store, UserIndex

from . import servers

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
sys.path.insert(0, str(DOCS / "examples"))
sys.path.insert(0, str(DOCS / "_ext"))

# -- the store of "Writing a store"
from dict_store import DictStore  # noqa: E402

from wsgisession.testing import SessionLifecycle, StoreContract  # noqa: E402


class TestDictStore(StoreContract):
    """The store conformance suite."""

    @pytest.fixture
    def store(self) -> Iterator[Store]:
        store = DictStore()
        yield store
        store.close()


class DictStoreLifecycle(SessionLifecycle):
    """The whole lifecycle, through the real middleware, against the reference model."""

    def make_store(self) -> Store:
        return DictStore()


TestDictStoreLifecycle = DictStoreLifecycle.TestCase
TestDictStoreLifecycle.settings = settings(
    max_examples=25, stateful_step_count=30, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
# -- end of the store of "Writing a store"

from wsgisession_checks import (  # noqa: E402
    LIFECYCLE_DOT,
    cli_commands,
    cli_help,
    diagram_states,
    middleware_options,
    option_problems,
    state_problems,
)


def test_the_dict_store_has_the_user_index() -> None:
    assert isinstance(DictStore(), UserIndex)


# -- the pages generated from the code -------------------------------------------------------


def _documented_options() -> list[str]:
    """The terms of the definition list inside ``.. wsgisession-options::`` on the Options page."""
    text = (DOCS / "options.rst").read_text()
    block = text.split(".. wsgisession-options::", 1)[1]
    names = []
    for line in block.splitlines()[1:]:
        if line and not line.startswith(" "):
            break  # the directive's content ended
        match = re.fullmatch(r"   ([A-Za-z_]\w*)", line)
        if match:
            names.append(match.group(1))
    return names


def test_the_options_page_describes_every_option_and_no_other() -> None:
    documented = _documented_options()
    assert "secret" in documented and "trust_proxy" in documented
    assert option_problems(documented, middleware_options()) == []


def test_the_option_check_names_what_drifted() -> None:
    code = list(middleware_options())
    assert option_problems(code[:-1], code) == [f"option {code[-1]!r} of SessionMiddleware is not documented"]
    assert option_problems([*code, "resave"], code) == [
        "documented option 'resave' is not a parameter of SessionMiddleware"
    ]
    assert option_problems([*code, code[0]], code) == [f"option {code[0]!r} is documented twice"]


def test_the_lifecycle_diagram_draws_exactly_the_states() -> None:
    drawn = diagram_states(LIFECYCLE_DOT.read_text())
    assert drawn == set(State.__members__)
    assert state_problems(drawn, State.__members__) == []


def test_the_state_check_names_what_drifted() -> None:
    dot = 'digraph g { rankdir=LR; start [shape=point]; NEW -> LIVE [label="SAVED -> X"]; }'
    assert diagram_states(dot) == {"NEW", "LIVE"}
    assert state_problems({"NEW", "LIVE"}, State.__members__) == ["lifecycle.dot does not draw State.UNLOADED"]
    assert state_problems({"NEW", "LIVE", "UNLOADED", "GONE"}, State.__members__) == [
        "lifecycle.dot draws GONE, which is not a member of wsgisession.State"
    ]


def test_the_cli_page_has_the_help_of_every_command() -> None:
    top = cli_help()
    assert top.startswith("usage: wsgisession")
    commands = cli_commands(top)
    assert {"prune", "count", "list", "end", "check"} <= set(commands)
    for command in commands:
        assert cli_help(command).startswith(f"usage: wsgisession {command}")


# -- the plots -------------------------------------------------------------------------------------------


def _plots():  # type: ignore[no-untyped-def]
    import importlib.util

    spec = importlib.util.spec_from_file_location("plots_under_test", ROOT / "benchmarks" / "plots.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_benchmark_plots_are_drawn_from_the_results(tmp_path: Path) -> None:
    servers.require_module("matplotlib", "pip install -e '.[docs]'")
    plots = _plots()
    latest = plots.load_results(ROOT / "benchmarks" / "results")
    written = plots.render(ROOT / "benchmarks" / "results", tmp_path)
    stores = [entry["store"] for entry in latest["compare"]["results"]]
    assert {p.name for p in written} >= {f"compare-{store}.png" for store in stores}
    for path in written:
        assert path.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    # Every peer of every store is drawn, baselines aside.
    workloads, series = plots.compare_series(latest["compare"]["results"][0])
    assert workloads and "wsgisession" in series and "bare" not in series
    assert next(iter(series)) == "wsgisession"


# -- the builds -----------------------------------------------------------------------------------------------


def _require_sphinx() -> None:
    for name in ("sphinx", "furo", "myst_parser", "matplotlib"):
        servers.require_module(name, "pip install -e '.[docs]'")
    if shutil.which("dot") is None:
        servers.unavailable("graphviz's dot is not installed (apt-get install graphviz)")


def _sphinx(builder: str, out: Path) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", builder]
    command += ["-d", str(out / "doctrees"), str(DOCS), str(out / builder)]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300, env=os.environ.copy())


def test_the_site_builds_with_warnings_as_errors(tmp_path: Path) -> None:
    _require_sphinx()
    result = _sphinx("html", tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    html = tmp_path / "html"
    options = (html / "options.html").read_text()
    for name in middleware_options():
        assert f'id="option-{name}"' in options, name
    cli = (html / "cli.html").read_text()
    assert "usage: wsgisession prune" in cli and "usage: wsgisession check" in cli
    assert list((html / "_images").glob("graphviz-*.svg")), "the lifecycle diagram was not drawn"
    assert (html / "_images" / "compare-sqlite.png").exists()
    for page in ("quickstart", "lifecycle", "stores", "frameworks", "deploying", "security", "writing-a-store"):
        assert (html / f"{page}.html").exists(), page
    assert "Threat model" in (html / "security.html").read_text()


def test_every_example_in_the_docs_runs(tmp_path: Path) -> None:
    _require_sphinx()
    result = _sphinx("doctest", tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    report = (tmp_path / "doctest" / "output.txt").read_text()
    assert re.search(r"\b0 failures in tests", report), report
    assert not re.search(r"[1-9]\d* failures? in setup code", report), report
