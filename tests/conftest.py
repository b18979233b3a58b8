from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import pytest
import webtest
from hypothesis import HealthCheck, settings

from wsgisession import MemoryStore, SessionMiddleware, SQLiteStore, get_session
from wsgisession.stores.base import Store
from wsgisession.testing import Clock

SECRET = "test-secret-" + "x" * 32

# Hypothesis: CI (HYPOTHESIS_PROFILE=ci) runs 10,000 examples per fuzz target
# (fewer where each example writes files or makes round trips to a server, as each test says);
# a developer's run is quick.
settings.register_profile("ci", max_examples=10_000, deadline=None, suppress_health_check=list(HealthCheck))
settings.register_profile("dev", max_examples=300, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))


def demo_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    """A small app whose routes exercise the session API."""
    session = get_session(environ)
    path = environ["PATH_INFO"]
    query = dict(parse_qsl(environ.get("QUERY_STRING", "")))
    status = "200 OK"
    body: Any = None
    if path == "/nothing":
        body = "untouched"
    elif path == "/read":
        body = session.get("n")
    elif path == "/incr":
        session["n"] = session.get("n", 0) + 1
        body = session["n"]
    elif path == "/set":
        session[query["key"]] = json.loads(query.get("value", "true"))
        body = "ok"
    elif path == "/append":
        session.setdefault("cart", [])
        session["cart"].append(query.get("item", "x"))
        body = session["cart"]
    elif path == "/nested":
        session["prefs"]["theme"] = query.get("theme", "dark")
        body = session["prefs"]
    elif path == "/dump":
        body = dict(session)
    elif path == "/id":
        body = session.id
    elif path == "/login":
        session.regenerate()
        session["user"] = query.get("user", "alice")
        body = session.id
    elif path == "/logout":
        session.destroy()
        body = "bye"
    elif path == "/logout-flash":
        session.destroy()
        session["flash"] = "Logged out"
        body = "bye"
    elif path == "/delete":
        del session[query["key"]]
        body = "ok"
    elif path == "/touch":
        session.touch()
        body = "ok"
    elif path == "/bad":
        session["obj"] = object()
    elif path == "/bad-nested":
        session["list"] = []
        session["list"].append({1, 2})
        body = "ok"
    elif path == "/fail":
        session["n"] = 999
        status = "500 Internal Server Error"
        body = "fail"
    elif path == "/raise":
        session["n"] = 999
        raise RuntimeError("boom")
    else:
        status = "404 Not Found"
    payload = json.dumps(body).encode()
    start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(payload)))])
    return [payload]


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    """Time that tests can move forward."""
    from wsgisession import _clock

    c = Clock()
    monkeypatch.setattr(_clock, "now", c)
    return c


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[Store]:
    """Each built-in embedded store in turn."""
    s: Store = MemoryStore() if request.param == "memory" else SQLiteStore(tmp_path / "sessions.db")
    yield s
    s.close()


@pytest.fixture
def make_app(store: Store) -> Callable[..., webtest.TestApp]:
    """Build a WebTest app around demo_app with the given middleware options."""

    def make(app: Any = demo_app, **options: Any) -> webtest.TestApp:
        options.setdefault("secret", SECRET)
        options.setdefault("store", store)
        return webtest.TestApp(SessionMiddleware(app, **options))

    return make


STORE_KINDS = ["memory", "sqlite", "file", "redis", "postgres", "mysql"]


@contextlib.contextmanager
def open_store(kind: str, tmp_path: Path) -> Iterator[Store]:
    """A fresh, empty store of *kind*, removed afterwards (server stores skip if unreachable)."""
    from . import servers

    if kind == "memory":
        store: Store = MemoryStore()
    elif kind == "sqlite":
        store = SQLiteStore(tmp_path / "sessions.db")
    elif kind == "file":
        from wsgisession.stores.file import FileStore

        store = FileStore(tmp_path / "sessions")
    elif kind == "redis":
        from wsgisession.stores.redis import RedisStore

        prefix = servers.unique_name("wsgisession_test") + ":"
        store = RedisStore(servers.require_redis(), prefix=prefix)
    elif kind == "postgres":
        from wsgisession.stores.postgres import PostgresStore

        table = servers.unique_name("wsgisession_test")
        store = PostgresStore(servers.require_postgres(), table=table)
    elif kind == "mysql":
        from wsgisession.stores.mysql import MySQLStore

        table = servers.unique_name("wsgisession_test")
        store = MySQLStore.from_url(f"{servers.require_mysql()}?table={table}")
    else:
        raise ValueError(kind)
    try:
        yield store
    finally:
        store.close()
        if kind == "redis":
            import redis

            client = redis.Redis.from_url(servers.require_redis())
            keys = list(client.scan_iter(match=prefix + "*"))
            if keys:
                client.delete(*keys)
            client.close()
        elif kind == "postgres":
            import psycopg

            with psycopg.connect(servers.require_postgres(), autocommit=True) as conn:
                conn.execute(f"DROP TABLE IF EXISTS {table}")
        elif kind == "mysql":
            with contextlib.closing(servers.mysql_connect()) as conn:
                conn.cursor().execute(f"DROP TABLE IF EXISTS `{table}`")


@pytest.fixture(params=STORE_KINDS)
def every_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """Each store in turn, the server-backed ones against the real servers."""
    with open_store(request.param, tmp_path) as s:
        yield s
