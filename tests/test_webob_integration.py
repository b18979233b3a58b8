"""wsgisession.integrations.webob: request.session on a WebOb request."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest
import webob
import webob.dec
import webtest
from webob import Response

from wsgisession import MemoryStore, Session, SessionMiddleware, get_session
from wsgisession.integrations.webob import SessionRequest, wsgify

from .conftest import SECRET


@wsgify
def counter(request: SessionRequest) -> Response:
    assert isinstance(request, SessionRequest)
    session = request.session
    assert session is get_session(request.environ)
    if request.path_info == "/login":
        session.login("alice")
        return Response("in")
    if request.path_info == "/logout":
        if not request.check_csrf():
            return Response("forbidden", status=403)
        session.destroy()
        return Response("out")
    session["visits"] = session.get("visits", 0) + 1
    return Response(f"visits={session['visits']} user={request.user_id} token={session.csrf_token}")


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore()


@pytest.fixture
def client(store: MemoryStore) -> webtest.TestApp:
    return webtest.TestApp(SessionMiddleware(counter, secret=SECRET, store=store))


def test_request_session_is_the_middlewares_session(client: webtest.TestApp, store: MemoryStore) -> None:
    assert client.get("/").text.startswith("visits=1 user=None")
    assert client.get("/").text.startswith("visits=2 user=None")
    assert store.count() == 1


def test_user_id_follows_login(client: webtest.TestApp) -> None:
    client.get("/login")
    assert "user=alice" in client.get("/").text


def test_check_csrf_reads_the_form_field_or_the_header(client: webtest.TestApp) -> None:
    token = client.get("/").text.rsplit("token=", 1)[1]
    client.post("/logout", status=403)
    client.post("/logout", {"csrf_token": "forged"}, status=403)
    client.post("/logout", headers={"X-CSRF-Token": "forged"}, status=403)
    client.get("/logout", headers={"X-CSRF-Token": token}, status=200)
    assert client.get("/").text.startswith("visits=1"), "the session was destroyed: a new one"
    token = client.get("/").text.rsplit("token=", 1)[1]
    assert client.post("/logout", {"csrf_token": token}).text == "out"


def test_webobs_own_wsgify_takes_the_request_class(store: MemoryStore) -> None:
    @webob.dec.wsgify(RequestClass=SessionRequest)
    def app(request: SessionRequest) -> Response:
        request.session["seen"] = True
        return Response(type(request).__name__)

    client = webtest.TestApp(SessionMiddleware(app, secret=SECRET, store=store))
    assert client.get("/").text == "SessionRequest"
    assert store.count() == 1


def test_a_request_made_by_hand(store: MemoryStore) -> None:
    seen: list[Session] = []

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        request = SessionRequest(environ)
        seen.append(request.session)
        return Response("ok")(environ, start_response)

    webtest.TestApp(SessionMiddleware(app, secret=SECRET, store=store)).get("/")
    assert isinstance(seen[0], Session)


def test_without_the_middleware_the_error_says_what_to_do() -> None:
    request = SessionRequest.blank("/")
    with pytest.raises(RuntimeError, match=r"wrap the application in wsgisession\.SessionMiddleware"):
        _ = request.session
    with pytest.raises(RuntimeError, match="SessionMiddleware"):
        webtest.TestApp(counter).get("/")


def test_importing_wsgisession_imports_no_webob() -> None:
    code = (
        "import json, sys, wsgisession, wsgisession.integrations, wsgisession.cli;"
        "before = 'webob' in sys.modules;"
        "import wsgisession.integrations.webob;"
        "print(json.dumps([before, 'webob' in sys.modules]))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert json.loads(out) == [False, True]
