"""A small WSGI app wrapped in SessionMiddleware, for tests that run real servers.

Servers import it as ``tests.serverapp:app`` (with the repository root on
``PYTHONPATH``). It is configured from the environment:

``WSGISESSION_TEST_STORE``
    the store URL (``sqlite:////abs/path.db``, ``file:///abs/dir``, ``redis://...``).
``WSGISESSION_TEST_SECRET``
    the signing secret.
``WSGISESSION_TEST_MARKDIR``
    optional: a directory where each process that loads this module drops
    ``ready-<pid>`` (so a test can wait for every gunicorn worker), and where
    ``/set`` and ``/slow`` drop ``<mark>`` once they have loaded the session
    (so a test knows a request is in flight before it races it).

Every response names the worker process in ``X-Worker-Pid``. Routes (every
value a query parameter):

=================  =============================================================
``GET /ping``      200 ``pong``; never touches the session (readiness probe)
``POST /login``    ``?user=NAME``: regenerate the session, store the user
``GET /whoami``    ``[?sleep=S]``: 200 with the user, or 401
``POST /logout``   destroy the session
``POST /incr``     increment ``n`` and return its new value
``POST /set``      ``?key=K&sleep=S[&mark=NAME]``: load the session, sleep, set ``K``
                   to true; ``X-Loaded-Size`` says how many keys it loaded
``GET /slow``      the same as a GET (the destroy-wins test's in-flight request)
``GET /dump``      the whole session as JSON
=================  =============================================================
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from wsgisession import SessionMiddleware, get_session

#: The longest sleep a request may ask for: keeps every request bounded.
MAX_SLEEP = 5.0
_MARK_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")

StartResponse = Callable[..., Any]


def _reply(
    start_response: StartResponse,
    status: str,
    body: str,
    content_type: str = "text/plain",
    extra: list[tuple[str, str]] | None = None,
) -> list[bytes]:
    data = body.encode("utf-8")
    headers = [
        ("Content-Type", f"{content_type}; charset=utf-8"),
        ("Content-Length", str(len(data))),
        # Which worker process answered: lets a test prove two workers shared a session.
        ("X-Worker-Pid", str(os.getpid())),
        *(extra or []),
    ]
    start_response(status, headers)
    return [data]


def _sleep(params: dict[str, list[str]]) -> None:
    seconds = float(params.get("sleep", ["0"])[0])
    time.sleep(min(max(seconds, 0.0), MAX_SLEEP))


def _mark(params: dict[str, list[str]]) -> None:
    directory = os.environ.get("WSGISESSION_TEST_MARKDIR")
    name = params.get("mark", [""])[0]
    if directory and _MARK_NAME.fullmatch(name):
        (Path(directory) / name).touch()


def inner_app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    """The application behind the middleware."""
    method = environ["REQUEST_METHOD"]
    path = environ.get("PATH_INFO", "")
    params = parse_qs(environ.get("QUERY_STRING", ""))
    route = (method, path)

    if route == ("GET", "/ping"):
        return _reply(start_response, "200 OK", "pong")

    session = get_session(environ)
    if route == ("POST", "/login"):
        user = params.get("user", [""])[0]
        if not user:
            return _reply(start_response, "400 Bad Request", "user missing")
        session.regenerate()
        session["user"] = user
        return _reply(start_response, "200 OK", f"welcome {user}")
    if route == ("GET", "/whoami"):
        user = session.get("user")
        _sleep(params)
        if user is None:
            return _reply(start_response, "401 Unauthorized", "not logged in")
        return _reply(start_response, "200 OK", str(user))
    if route == ("POST", "/logout"):
        session.destroy()
        return _reply(start_response, "200 OK", "bye")
    if route == ("POST", "/incr"):
        n = session.get("n", 0) + 1
        session["n"] = n
        return _reply(start_response, "200 OK", str(n))
    if route in (("POST", "/set"), ("GET", "/slow")):
        key = params.get("key", [""])[0]
        if not key:
            return _reply(start_response, "400 Bad Request", "key missing")
        # Load the session first, then wait: the window between load and save
        # is what concurrent requests race in.
        size = len(session)
        _mark(params)
        _sleep(params)
        session[key] = True
        # How many keys the session had when this request loaded it: two requests
        # reporting the same size loaded the same state, so they really raced.
        return _reply(start_response, "200 OK", key, extra=[("X-Loaded-Size", str(size))])
    if route == ("GET", "/dump"):
        return _reply(start_response, "200 OK", json.dumps(dict(session), sort_keys=True), "application/json")
    return _reply(start_response, "404 Not Found", "no such route")


def make_app() -> SessionMiddleware:
    """The middleware-wrapped app, configured from the environment."""
    store = os.environ.get("WSGISESSION_TEST_STORE")
    if not store:
        raise RuntimeError("set WSGISESSION_TEST_STORE to a store URL (e.g. sqlite:////tmp/sessions.db)")
    secret = os.environ.get("WSGISESSION_TEST_SECRET")
    if not secret:
        raise RuntimeError("set WSGISESSION_TEST_SECRET")
    return SessionMiddleware(inner_app, secret=secret, store=store)


app = make_app()

# Tell a waiting test that this process has loaded the app (each gunicorn worker
# imports it after the fork): /ping alone only proves that one worker is up.
if os.environ.get("WSGISESSION_TEST_MARKDIR"):
    (Path(os.environ["WSGISESSION_TEST_MARKDIR"]) / f"ready-{os.getpid()}").touch()
