"""The middleware under real servers over real sockets, and its PEP 3333 conformance.

The ``server``-marked tests start gunicorn (two sync workers), waitress and
``wsgiref.simple_server`` in subprocesses serving :mod:`tests.serverapp` with a
SQLite store, and talk to them with ``http.client`` and a hand-kept cookie jar.
The rest run the middleware in-process between two ``wsgiref.validate``
validators.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from wsgiref.util import setup_testing_defaults
from wsgiref.validate import validator

import pytest
import webtest

from tests import liveserver, servers
from wsgisession import MemoryStore, SessionMiddleware, get_session
from wsgisession.ids import store_key
from wsgisession.stores.sqlite import SQLiteStore

SECRET = "pep3333-test-secret-0123456789abcdefghijklmnop"

# -- real servers -----------------------------------------------------------------------------

SERVERS = [
    pytest.param(("gunicorn", {"workers": 2, "worker_class": "sync"}), id="gunicorn-sync-2"),
    pytest.param(("waitress", {}), id="waitress"),
    pytest.param(("wsgiref", {}), id="wsgiref"),
]


class Live:
    """A running server, the SQLite store it uses (opened in this process too), and clients."""

    def __init__(self, server: liveserver.LiveServer, store: SQLiteStore) -> None:
        self.server = server
        self.store = store

    def client(self) -> liveserver.Client:
        return liveserver.Client(self.server)

    def has_record(self, session_id: str) -> bool:
        return self.store.load(store_key(session_id)) is not None


@pytest.fixture(scope="module", params=SERVERS)
def live(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    kind, options = request.param
    servers.require_module(liveserver.SERVER_MODULES[kind], f"cannot run the {kind} server tests")
    directory = tmp_path_factory.mktemp(kind)
    db = directory / "sessions.db"
    url = f"sqlite:///{db}"  # db is absolute: four slashes in all
    assert url.startswith("sqlite:////")
    store = SQLiteStore.from_url(url)
    try:
        with liveserver.running(kind, url, directory, **options) as server:
            yield Live(server, store)
    finally:
        store.close()


def _the_cookie(response: liveserver.Response) -> liveserver.SetCookie:
    cookies = response.set_cookies()
    assert len(cookies) == 1, f"expected one session Set-Cookie, got {response.header_values('Set-Cookie')}"
    return cookies[0]


@pytest.mark.server
def test_login_whoami_logout_and_replay(live: Live) -> None:
    browser = live.client()
    assert browser.get("/whoami").status == 401

    login = browser.post("/login?user=alice")
    assert login.status == 200, login.text
    logged_in = _the_cookie(login)
    assert not logged_in.deletes
    assert browser.cookie == logged_in.value

    for _ in range(3):
        whoami = browser.get("/whoami")
        assert (whoami.status, whoami.text) == (200, "alice")
    assert live.has_record(logged_in.session_id)

    logout = browser.post("/logout")
    assert logout.status == 200, logout.text
    assert _the_cookie(logout).deletes
    assert browser.cookie is None

    assert browser.get("/whoami").status == 401
    replay = browser.get("/whoami", cookie=logged_in.value)
    assert replay.status == 401, "the cookie from before logout still works"
    assert not live.has_record(logged_in.session_id)


@pytest.mark.server
def test_cookie_attributes_and_caching_headers(live: Live) -> None:
    response = live.client().post("/incr")
    assert (response.status, response.text) == (200, "1")
    cookie = _the_cookie(response)
    assert {"httponly"} <= cookie.flags
    assert "secure" not in cookie.flags  # plain http, secure="auto"
    assert cookie.attributes.get("samesite") == "Lax"
    assert cookie.attributes.get("path") == "/"
    assert cookie.attributes.get("max-age") == "86400"
    assert "Cookie" in ", ".join(response.header_values("Vary"))
    assert "private" in ", ".join(response.header_values("Cache-Control"))


@pytest.mark.server
def test_login_changes_the_session_id_and_kills_the_old_one(live: Live) -> None:
    browser = live.client()
    assert browser.post("/incr").text == "1"
    before = browser.cookie
    assert before is not None
    before_id = before.partition(".")[0]

    login = browser.post("/login?user=bob")
    after = _the_cookie(login)
    assert after.session_id != before_id, "login did not regenerate the session ID"
    assert browser.get("/dump").text == json.dumps({"n": 1, "user": "bob"}, sort_keys=True)

    # The pre-login ID (a planted cookie, in a fixation attack) is dead.
    stale = browser.get("/whoami", cookie=before)
    assert stale.status == 401
    assert browser.get("/dump", cookie=before).text == "{}"
    assert not live.has_record(before_id)
    assert live.has_record(after.session_id)


@pytest.mark.server
def test_untouched_and_unchanged_requests_set_no_cookie(live: Live) -> None:
    browser = live.client()
    ping = browser.get("/ping")
    assert ping.status == 200
    assert ping.header_values("Set-Cookie") == []
    assert ping.header_values("Vary") == []

    anonymous = browser.get("/whoami")  # reads a new, empty session: nothing to save
    assert anonymous.status == 401
    assert anonymous.header_values("Set-Cookie") == []
    assert "Cookie" in ", ".join(anonymous.header_values("Vary"))

    browser.post("/login?user=carol")
    read = browser.get("/whoami")
    assert read.status == 200
    assert read.header_values("Set-Cookie") == []


@pytest.mark.server
def test_tampered_cookie_is_no_session(live: Live) -> None:
    browser = live.client()
    browser.post("/login?user=dave")
    assert browser.cookie is not None
    session_id, _, signature = browser.cookie.partition(".")
    forged = f"{session_id}.{signature[:-2]}{'AA' if not signature.endswith('AA') else 'BB'}"
    assert browser.get("/whoami", cookie=forged).status == 401
    assert browser.get("/whoami").status == 200


@pytest.mark.server
def test_gunicorn_workers_share_the_session(tmp_path: Path) -> None:
    """Two gunicorn workers both see a session the other one wrote."""
    servers.require_module("gunicorn", "cannot run the gunicorn tests")
    url = f"sqlite:///{tmp_path / 'sessions.db'}"
    with liveserver.running("gunicorn", url, tmp_path, workers=2, worker_class="sync") as server:
        browser = liveserver.Client(server)
        assert browser.post("/login?user=erin").status == 200
        cookie = browser.cookie
        # Four requests that each hold a worker for a while force both workers to answer.
        with ThreadPoolExecutor(4) as pool:
            responses = list(pool.map(lambda _: browser.get("/whoami?sleep=0.4", cookie=cookie), range(4)))
        assert [(r.status, r.text) for r in responses] == [(200, "erin")] * 4
        pids = {r.header_values("X-Worker-Pid")[0] for r in responses}
        assert len(pids) == 2, f"all requests went to worker(s) {pids}"


@pytest.mark.server
def test_memory_store_warns_under_multiprocess_gunicorn(tmp_path: Path) -> None:
    """MemoryStore under several worker processes loses sessions: the middleware says so."""
    servers.require_module("gunicorn", "cannot run the gunicorn tests")
    with liveserver.running("gunicorn", "memory://", tmp_path, workers=2, worker_class="sync") as server:
        assert liveserver.Client(server).post("/incr").status == 200
        message = "MemoryStore keeps sessions in one process, but this server runs several"
        deadline = time.monotonic() + 10
        while message not in server.output() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert message in server.output(), server.describe()


# -- PEP 3333 -----------------------------------------------------------------------------------


class ClosingIterable:
    """A response iterable with ``close()``, counting the calls."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self.chunks = list(chunks)
        self.closed = 0

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.chunks)

    def close(self) -> None:
        self.closed += 1


def _headers(body: bytes) -> list[tuple[str, str]]:
    return [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))]


def pep3333_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """Exercises every way an app may use the session and produce a response."""
    session = get_session(environ)
    path = environ["PATH_INFO"]
    if path == "/new" or path == "/write":
        session["n"] = session.get("n", 0) + 1
        body = str(session["n"]).encode()
    elif path == "/read":
        body = json.dumps(dict(session), sort_keys=True).encode()
    elif path == "/destroy":
        session.destroy()
        body = b"destroyed"
    elif path == "/error":
        session["n"] = -1  # a 500 response saves nothing
        body = b"failed"
        start_response("500 Internal Server Error", _headers(body))
        return [body]
    elif path == "/exc_info":
        session["n"] = -2
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            body = b"crashed"
            start_response("500 Internal Server Error", _headers(body), sys.exc_info())
        return [body]
    elif path == "/generator":
        return _generator_response(session, start_response)
    elif path == "/write_callable":
        session["via_write"] = True
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"written ")
        write(b"directly")
        return []
    else:
        raise AssertionError(path)
    start_response("200 OK", _headers(body))
    return [body]


def _generator_response(session: Any, start_response: Callable[..., Any]) -> Iterator[bytes]:
    # start_response is called lazily, from inside the iteration, as PEP 3333 allows.
    session["gen"] = True
    start_response("200 OK", [("Content-Type", "text/plain")])
    yield b"chunk1 "
    yield b"chunk2"


@pytest.fixture
def validated() -> webtest.TestApp:
    """The middleware between two PEP 3333 validators (and WebTest's own lint)."""
    middleware = SessionMiddleware(validator(pep3333_app), secret=SECRET, store=MemoryStore())
    return webtest.TestApp(validator(middleware))


def _set_cookies(response: webtest.TestResponse) -> list[liveserver.SetCookie]:
    cookies = [liveserver.SetCookie.parse(v) for v in response.headers.getall("Set-Cookie")]
    return [c for c in cookies if c.name == "session"]


def _start(app: webtest.TestApp) -> str:
    response = app.get("/new")
    assert response.text == "1"
    (cookie,) = _set_cookies(response)
    return cookie.value


def test_pep3333_new_session(validated: webtest.TestApp) -> None:
    response = validated.get("/new")
    assert response.status_int == 200
    (cookie,) = _set_cookies(response)
    assert not cookie.deletes
    assert "Cookie" in response.headers["Vary"]


def test_pep3333_read_only(validated: webtest.TestApp) -> None:
    _start(validated)
    response = validated.get("/read")
    assert response.text == '{"n": 1}'
    assert _set_cookies(response) == []
    assert "Cookie" in response.headers["Vary"]


def test_pep3333_write(validated: webtest.TestApp) -> None:
    first = _start(validated)
    response = validated.get("/write")
    assert response.text == "2"
    (cookie,) = _set_cookies(response)
    assert cookie.value == first


def test_pep3333_destroy(validated: webtest.TestApp) -> None:
    _start(validated)
    response = validated.get("/destroy")
    (cookie,) = _set_cookies(response)
    assert cookie.deletes
    assert validated.get("/read").text == "{}"


@pytest.mark.parametrize("path", ["/error", "/exc_info"])
def test_pep3333_server_error_saves_nothing(validated: webtest.TestApp, path: str) -> None:
    _start(validated)
    response = validated.get(path, status=500)
    assert _set_cookies(response) == []
    assert validated.get("/read").text == '{"n": 1}'


def test_pep3333_generator_app(validated: webtest.TestApp) -> None:
    response = validated.get("/generator")
    assert response.text == "chunk1 chunk2"
    (cookie,) = _set_cookies(response)
    assert not cookie.deletes
    assert validated.get("/read").text == '{"gen": true}'


def test_pep3333_write_callable(validated: webtest.TestApp) -> None:
    response = validated.get("/write_callable")
    assert response.text == "written directly"
    (cookie,) = _set_cookies(response)
    assert not cookie.deletes
    assert validated.get("/read").text == '{"via_write": true}'


def _call(app: Callable[..., Iterable[bytes]], *, consume: bool = True) -> tuple[list[str], bytes]:
    environ: dict[str, Any] = {}
    setup_testing_defaults(environ)
    environ["QUERY_STRING"] = ""
    statuses: list[str] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Callable[[bytes], None]:
        statuses.append(status)
        return lambda data: None

    result = app(environ, start_response)
    body = b""
    try:
        for chunk in result:
            body += chunk
            if not consume:
                break  # the client went away
    finally:
        close = getattr(result, "close", None)
        if close is not None:
            close()
    return statuses, body


@pytest.mark.parametrize("uses_session", [True, False], ids=["session-written", "session-unused"])
@pytest.mark.parametrize("consume", [True, False], ids=["consumed", "abandoned"])
def test_response_close_is_called(uses_session: bool, consume: bool) -> None:
    iterables: list[ClosingIterable] = []

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if uses_session:
            get_session(environ)["k"] = "v"
        start_response("200 OK", [("Content-Type", "text/plain")])
        iterable = ClosingIterable([b"a", b"b"])
        iterables.append(iterable)
        return iterable

    middleware = SessionMiddleware(app, secret=SECRET, store=MemoryStore())
    statuses, body = _call(middleware, consume=consume)
    assert statuses == ["200 OK"]
    assert body == (b"ab" if consume else b"a")
    assert [i.closed for i in iterables] == [1]

    # And through the validators, which check close() is called on their side too.
    iterables.clear()
    statuses, _ = _call(validator(SessionMiddleware(validator(app), secret=SECRET, store=MemoryStore())))
    assert statuses == ["200 OK"]
    assert [i.closed for i in iterables] == [1]
