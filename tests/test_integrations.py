"""The Bottle adapter, and the core importing no framework.

A framework that is not installed skips its tests; with
``WSGISESSION_REQUIRE_ALL=1`` (CI) a missing framework fails them instead.
"""

from __future__ import annotations

import json
import subprocess
import sys
from types import ModuleType
from typing import Any

import pytest
import webtest

from wsgisession import MemoryStore, SessionMiddleware, get_session
from wsgisession.session import Session, SessionSettings

from .conftest import SECRET
from .servers import require_module


def new_session() -> Session:
    return Session(SessionSettings(MemoryStore()))


def test_the_core_imports_no_framework() -> None:
    code = (
        "import json, sys, wsgisession, wsgisession.integrations, wsgisession.cli;"
        "frameworks = {'bottle', 'flask', 'pyramid', 'webob', 'zope'};"
        "print(json.dumps(sorted(frameworks & {m.split('.')[0] for m in sys.modules})))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert json.loads(out) == []


# -- Bottle ----------------------------------------------------------------------------------------


@pytest.fixture
def bottle() -> ModuleType:
    return require_module("bottle")


def test_bottle_session_helper_returns_the_request_session(bottle: ModuleType) -> None:
    from wsgisession.integrations.bottle import session

    web = bottle.Bottle()

    @web.get("/incr")
    def incr() -> dict[str, Any]:
        s = session()
        assert s is get_session(bottle.request.environ)
        s["n"] = s.get("n", 0) + 1
        return {"n": s["n"]}

    client = webtest.TestApp(SessionMiddleware(web, secret=SECRET, store=MemoryStore()))
    assert client.get("/incr").json == {"n": 1}
    assert client.get("/incr").json == {"n": 2}


def test_bottle_session_helper_without_middleware_says_so(bottle: ModuleType) -> None:
    from wsgisession.integrations.bottle import session

    web = bottle.Bottle()
    web.config["catchall"] = False

    @web.get("/")
    def index() -> str:
        session()
        return "unreachable"

    with pytest.raises(RuntimeError, match="SessionMiddleware"):
        webtest.TestApp(web).get("/")


def test_bottle_plugin_injects_the_session_where_asked(bottle: ModuleType) -> None:
    from wsgisession.integrations.bottle import SessionPlugin

    web = bottle.Bottle()
    web.install(SessionPlugin())
    seen: dict[str, Any] = {}

    @web.get("/with/<name>")
    def with_session(name: str, session: Session) -> str:
        seen["session"] = session
        session["name"] = name
        return name

    @web.get("/without")
    def without() -> str:
        return "plain"

    client = webtest.TestApp(SessionMiddleware(web, secret=SECRET, store=MemoryStore()))
    assert client.get("/with/ada").text == "ada"
    assert isinstance(seen["session"], Session)
    assert client.get("/without").text == "plain"
    assert "session" in client.cookies


def test_bottle_plugin_keyword_is_configurable(bottle: ModuleType) -> None:
    from wsgisession.integrations.bottle import SessionPlugin

    web = bottle.Bottle()
    web.install(SessionPlugin(keyword="sess"))

    @web.get("/")
    def index(sess: Session) -> str:
        return str(sess.is_new)

    client = webtest.TestApp(SessionMiddleware(web, secret=SECRET, store=MemoryStore()))
    assert client.get("/").text == "True"
