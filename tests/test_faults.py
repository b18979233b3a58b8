"""A store that fails mid-run, seen through the middleware as a WSGI server would see it."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import webtest

from wsgisession import SessionMiddleware, StoreError

from . import servers
from .conftest import SECRET, demo_app


def server_like(app: Any) -> Any:
    """What a WSGI server does with an exception before headers are sent: a bare 500."""

    def wrapper(environ: dict[str, Any], start_response: Any) -> Any:
        try:
            return app(environ, start_response)
        except StoreError:
            start_response("500 Internal Server Error", [("Content-Type", "text/plain")], sys.exc_info())
            return [b"store down"]

    return wrapper


def test_redis_down_fails_fast_keeps_the_cookie_and_recovers(tmp_path: Path) -> None:
    from wsgisession.stores.redis import RedisStore

    with servers.ThrowawayRedis(tmp_path) as server:
        store = RedisStore(server.url, socket_timeout=1.0, connect_timeout=1.0)
        app = webtest.TestApp(server_like(SessionMiddleware(demo_app, SECRET, store)))
        assert app.get("/incr").json == 1
        cookie = app.cookies["session"]

        server.kill()
        for path in ("/read", "/incr"):
            started = time.monotonic()
            res = app.get(path, status=500)
            assert time.monotonic() - started < 5, "no hang: the store's timeouts are finite"
            assert "Set-Cookie" not in res.headers, "the user's good cookie is not overwritten"
        assert app.cookies["session"] == cookie

        server.start()  # on the same port; this throwaway server starts empty
        res = app.get("/incr")
        assert res.json == 1, "requests work again without restarting the app"
        store.close()


def test_postgres_connections_killed_mid_run_are_replaced(tmp_path: Path) -> None:
    import psycopg

    from wsgisession.stores.postgres import PostgresStore

    url = servers.require_postgres()
    table = servers.unique_name("wsgisession_faults")
    name = servers.unique_name("faults")
    store = PostgresStore(f"{url}?application_name={name}", table=table)
    app = webtest.TestApp(SessionMiddleware(demo_app, SECRET, store))
    try:
        assert app.get("/incr").json == 1
        with psycopg.connect(url, autocommit=True) as admin:
            killed = admin.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = %s", [name]
            ).fetchone()
            assert killed is not None
            assert killed[0] >= 1
        assert app.get("/incr").json == 2, "the next request reconnects"
        assert app.get("/read").json == 2
    finally:
        store.close()
        with psycopg.connect(url, autocommit=True) as admin:
            admin.execute(f"DROP TABLE IF EXISTS {table}")


def test_redis_cluster_primary_killed_fails_fast_and_the_replica_takes_over(tmp_path: Path) -> None:
    """A cluster of its own (the session's shared one stays whole), with a one-second node timeout."""
    from redis.cluster import key_slot

    from tests.redis_cluster import start_cluster
    from wsgisession.ids import store_key
    from wsgisession.stores.redis import RedisStore

    cluster = start_cluster(tmp_path, "--cluster-node-timeout", "1000", "--cluster-replica-validity-factor", "0")
    try:
        store = RedisStore.from_url(f"{cluster.url}?prefix=faults:&socket_timeout=1&socket_connect_timeout=1")
        app = webtest.TestApp(server_like(SessionMiddleware(demo_app, SECRET, store)))
        assert app.get("/incr").json == 1
        assert app.get("/incr").json == 2
        cookie = app.cookies["session"]
        # The primary that holds this session's hash, once its replica has the writes
        # (replication is asynchronous, and a new replica's first sync waits a few seconds).
        name = f"faults:{store_key(cookie.split('.', 1)[0])}"
        client = cluster.client()
        primary = client.get_node_from_key(name)
        assert primary.port == client.nodes_manager.get_node_from_slot(key_slot(name.encode())).port
        deadline = time.monotonic() + 30
        while True:
            info = client.info("replication", target_nodes=primary)
            replicas = [v for k, v in info.items() if k.startswith("slave") and isinstance(v, dict)]
            if replicas and all(r["state"] == "online" and r["offset"] >= info["master_repl_offset"] for r in replicas):
                break
            assert time.monotonic() < deadline, f"the replica never caught up: {info}"
            time.sleep(0.1)
        client.close()
        os.kill(cluster.pids.pop(primary.port), signal.SIGKILL)

        outcomes = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            started = time.monotonic()
            res = app.get("/read", expect_errors=True)
            assert time.monotonic() - started < 6, "no hang: the store's timeouts are finite"
            outcomes.append(res.status_int)
            if res.status_int == 200:
                break
            assert res.status_int == 500 and "Set-Cookie" not in res.headers, "a failure keeps the user's cookie"
            time.sleep(0.2)
        assert outcomes[-1] == 200, f"the replica never took over: {outcomes}"
        assert app.cookies["session"] == cookie
        assert res.json == 2, "the session survived the failover on its replica"
        assert app.get("/incr").json == 3, "writes work again, on the promoted replica"
        store.close()
    finally:
        cluster.stop()
