"""Many clients, many worker processes, one store: nothing lost, nothing revived.

Each store runs behind a real gunicorn with four worker processes, once with
sync workers and once with gthread workers (four threads each), serving
:mod:`tests.serverapp`. A store whose module cannot be imported or whose
server cannot be reached is skipped with the reason, or fails the run when
``WSGISESSION_REQUIRE_ALL=1``. Redis and PostgreSQL are found as
:mod:`tests.servers` says; each gunicorn gets its own key prefix or table,
removed afterwards. To add a store, add a :class:`StoreKind`.
"""

from __future__ import annotations

import importlib
import json
import multiprocessing
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import pytest

from tests import liveserver, servers
from tests.redis_cluster import LoopbackCluster, redis_cluster_fixture  # noqa: F401 (the redis_cluster fixture)
from wsgisession.ids import new_id, store_key
from wsgisession.stores import from_url
from wsgisession.stores.base import Store, Update

pytestmark = [pytest.mark.server, pytest.mark.timeout(120)]

WORKERS = 4
THREADS = 4
#: Bound on how long a whole batch of concurrent requests may take.
BATCH_TIMEOUT = 60.0

T = TypeVar("T")


# -- stores -------------------------------------------------------------------------------


def _with_query(url: str, name: str, value: str) -> str:
    parts = urlsplit(url)
    query = f"{parts.query}&{name}={value}" if parts.query else f"{name}={value}"
    return urlunsplit(parts._replace(query=query))


def _redis_cleanup(base_url: str, unique: str) -> None:
    import redis

    client = redis.Redis.from_url(base_url, socket_connect_timeout=3, socket_timeout=10)
    try:
        keys = list(client.scan_iter(match=f"{unique}*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


def _postgres_cleanup(base_url: str, unique: str) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(base_url, connect_timeout=3, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {} CASCADE").format(sql.Identifier(unique)))


def _cluster_cleanup(base_url: str, unique: str) -> None:
    from redis.cluster import ClusterNode, RedisCluster

    hosts = urlsplit(base_url).netloc.split(",")
    nodes = [ClusterNode(host, int(port)) for host, port in (h.rsplit(":", 1) for h in hosts)]
    client = RedisCluster(startup_nodes=nodes, socket_timeout=5.0, socket_connect_timeout=5.0)
    try:
        for name in list(client.scan_iter(match=f"{unique}*", count=1000)):  # every primary
            client.delete(name)
    finally:
        client.close()


def _mysql_cleanup(base_url: str, unique: str) -> None:
    conn = servers.mysql_connect(base_url)
    try:
        conn.cursor().execute(f"DROP TABLE IF EXISTS `{unique}`")
    finally:
        conn.close()


@dataclass(frozen=True)
class StoreKind:
    """How to point the test app at one kind of store, find its server, and clean up after it."""

    name: str
    module: str
    #: (directory for files, unique name, server URL) -> the store URL.
    make_url: Callable[[Path, str, str], str]
    #: The server's URL; skips (fails under WSGISESSION_REQUIRE_ALL=1) if it is unreachable.
    require: Callable[[], str] = lambda: ""
    #: (server URL, unique name): remove what the test left on the server.
    cleanup: Callable[[str, str], None] = lambda base_url, unique: None
    #: How many fresh stores the first-burst test tries: cheap stores, and racy ones, try more.
    burst_trials: int = 5


STORES = [
    StoreKind(
        "sqlite",
        "wsgisession.stores.sqlite",
        lambda d, u, base: f"sqlite:///{d / 'sessions.db'}",
        # Before SQLiteStore retried its switch to WAL, one trial in ten or twenty
        # failed on two cores ("database is locked" at once, for all but one of the
        # connections racing to switch a new file to WAL): this many trials catch that.
        burst_trials=60,
    ),
    StoreKind("file", "wsgisession.stores.file", lambda d, u, base: f"file://{d / 'sessions'}", burst_trials=10),
    StoreKind(
        "redis",
        "wsgisession.stores.redis",
        lambda d, u, base: _with_query(base, "prefix", f"{u}:"),
        servers.require_redis,
        _redis_cleanup,
    ),
    StoreKind(
        "postgres",
        "wsgisession.stores.postgres",
        lambda d, u, base: _with_query(base, "table", u),
        servers.require_postgres,
        _postgres_cleanup,
    ),
    StoreKind(
        "redis-cluster",
        "wsgisession.stores.redis",
        lambda d, u, base: _with_query(base, "prefix", f"{u}:"),
        cleanup=_cluster_cleanup,
    ),
    StoreKind(
        "mysql",
        "wsgisession.stores.mysql",
        lambda d, u, base: _with_query(base, "table", u),
        servers.require_mysql,
        _mysql_cleanup,
    ),
]
WORKER_CLASSES = ["sync", "gthread"]


@dataclass
class Served:
    """A gunicorn serving the test app on one store; the same store opened in this process."""

    server: liveserver.LiveServer
    store: Store

    def client(self) -> liveserver.Client:
        return liveserver.Client(self.server)


@pytest.fixture(
    scope="module",
    params=[
        pytest.param((kind, worker_class), id=f"{kind.name}-{worker_class}")
        for kind in STORES
        for worker_class in WORKER_CLASSES
    ],
)
def served(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    kind, worker_class = request.param
    servers.require_module("gunicorn", "cannot run the multi-process tests")
    try:
        importlib.import_module(kind.module)
    except ImportError as exc:
        servers.unavailable(f"{kind.module} cannot be imported: {exc}")
    base_url = _server_url(kind, request)

    directory = tmp_path_factory.mktemp(f"{kind.name}-{worker_class}")
    (directory / "sessions").mkdir()
    unique = servers.unique_name("wsgisession_concurrency")
    url = kind.make_url(directory, unique, base_url)
    try:
        with liveserver.running(
            "gunicorn",
            url,
            directory,
            workers=WORKERS,
            worker_class=worker_class,
            threads=THREADS,
        ) as server:
            store = from_url(url)
            try:
                yield Served(server, store)
            finally:
                store.close()
    finally:
        kind.cleanup(base_url, unique)


def _server_url(kind: StoreKind, request: pytest.FixtureRequest) -> str:
    """The server a kind of store runs on (the test session's Redis Cluster, started on first use)."""
    if kind.name == "redis-cluster":
        cluster: LoopbackCluster = request.getfixturevalue("redis_cluster")
        return cluster.url
    return kind.require()


def _concurrently(count: int, task: Callable[[int], T]) -> list[T]:
    """Run ``task(0) ... task(count - 1)`` in *count* threads released together; return the results."""
    barrier = threading.Barrier(count, timeout=BATCH_TIMEOUT)

    def run(i: int) -> T:
        barrier.wait()
        return task(i)

    with ThreadPoolExecutor(count) as pool:
        futures = [pool.submit(run, i) for i in range(count)]
        deadline = time.monotonic() + BATCH_TIMEOUT
        return [f.result(timeout=max(0.0, deadline - time.monotonic())) for f in futures]


# -- (a) many sessions -------------------------------------------------------------------------

CLIENTS = 20
INCREMENTS = 15


def test_many_clients_each_count_exactly(served: Served) -> None:
    def one_client(_: int) -> tuple[list[str], str | None, set[str]]:
        browser = served.client()
        responses = [browser.post("/incr") for _ in range(INCREMENTS)]
        seen = [r.text for r in responses]
        pids = {r.header_values("X-Worker-Pid")[0] for r in responses}
        dump = browser.get("/dump")
        assert dump.status == 200, dump.text
        assert json.loads(dump.text) == {"n": INCREMENTS}, f"final session {dump.text}"
        return seen, browser.cookie, pids

    results = _concurrently(CLIENTS, one_client)
    expected = [str(i) for i in range(1, INCREMENTS + 1)]
    for seen, _, _ in results:
        assert seen == expected
    cookies = {cookie for _, cookie, _ in results}
    assert None not in cookies
    assert len(cookies) == CLIENTS, "two clients were given the same session"
    assert len(set().union(*(pids for _, _, pids in results))) >= 2, "only one worker process answered"


# -- (b) one session, many concurrent writers ------------------------------------------------------

WRITERS = 24


def test_concurrent_writes_to_one_session_all_land(served: Served) -> None:
    browser = served.client()
    assert browser.post("/incr").text == "1"
    cookie = browser.cookie
    assert cookie is not None
    session_id = cookie.partition(".")[0]

    responses = _concurrently(WRITERS, lambda i: browser.post(f"/set?key=k{i}&sleep=0.2", cookie=cookie))
    assert [r.status for r in responses] == [200] * WRITERS, [r.text for r in responses if r.status != 200]
    for response in responses:
        assert {c.session_id for c in response.set_cookies()} <= {session_id}, "a write changed the session ID"
    loaded_sizes = [int(r.header_values("X-Loaded-Size")[0]) for r in responses]
    assert len(set(loaded_sizes)) < WRITERS, f"the writes never overlapped (loaded sizes {sorted(loaded_sizes)})"

    dump = json.loads(browser.get("/dump").text)
    expected = {"n": 1, **{f"k{i}": True for i in range(WRITERS)}}
    missing = sorted(set(expected) - set(dump), key=lambda k: (len(k), k))
    assert dump == expected, f"lost keys: {missing}"


# -- (c) destroy wins -------------------------------------------------------------------------------


def test_logout_is_not_undone_by_a_request_in_flight(served: Served) -> None:
    browser = served.client()
    assert browser.post("/login?user=mallory").status == 200
    old_cookie = browser.cookie
    assert old_cookie is not None
    old_id = old_cookie.partition(".")[0]
    assert served.store.load(store_key(old_id)) is not None

    mark = uuid.uuid4().hex
    slow_result: dict[str, Any] = {}

    def slow() -> None:
        try:
            slow_result["response"] = browser.get(f"/slow?sleep=1&key=late&mark={mark}", cookie=old_cookie)
        except BaseException as exc:
            slow_result["error"] = exc

    in_flight = threading.Thread(target=slow)
    in_flight.start()
    try:
        served.server.wait_for_mark(mark)  # the slow request has loaded the session
        logout = browser.post("/logout")
        assert logout.status == 200
        assert [c.deletes for c in logout.set_cookies()] == [True]
    finally:
        in_flight.join(liveserver.REQUEST_TIMEOUT + 5)
    assert not in_flight.is_alive()
    if "error" in slow_result:
        raise slow_result["error"]
    late: liveserver.Response = slow_result["response"]
    assert late.status == 200, late.text
    revived = [c for c in late.set_cookies() if not c.deletes]
    assert [c for c in revived if c.session_id == old_id] == [], "the in-flight request re-issued the old session"
    for cookie in revived:  # a new session, if any, must not carry the logged-out user
        assert "user" not in json.loads(browser.get("/dump", cookie=cookie.value).text)

    assert browser.get("/whoami", cookie=old_cookie).status == 401
    assert json.loads(browser.get("/dump", cookie=old_cookie).text) == {}
    assert served.store.load(store_key(old_id)) is None, "the destroyed session is back in the store"


# -- a fresh store's first burst ---------------------------------------------------------------------

BURST_PROCESSES = 8
BURST_THREADS = 4
#: The first-burst test stops trying new stores after this many seconds.
BURST_BUDGET = 25.0


def _first_burst(url: str, barrier: Any) -> list[str]:
    """In a forked process, as a gunicorn worker: open the store, then save and load from several threads at once."""
    store = from_url(url)
    errors: list[str] = []

    def one() -> None:
        try:
            barrier.wait()
            key = store_key(new_id())
            now = time.time()
            store.save(key, Update(set={"n": 1}, expires_at=now + 60, created_at=now))
            record = store.load(key)
            if record is None or record.data != {"n": 1}:
                errors.append(f"saved {{'n': 1}}, loaded {record!r}")
        except Exception as exc:
            errors.append(f"{type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=one) for _ in range(BURST_THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(BATCH_TIMEOUT)
    store.close()
    return errors


@pytest.mark.parametrize(
    "kind",
    [pytest.param(kind, id=kind.name) for kind in STORES],
)
def test_fresh_store_survives_its_first_burst(kind: StoreKind, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """Workers that all open a brand-new store at once (a deploy's first traffic) all succeed."""
    try:
        importlib.import_module(kind.module)
    except ImportError as exc:
        servers.unavailable(f"{kind.module} cannot be imported: {exc}")
    base_url = _server_url(kind, request)
    deadline = time.monotonic() + BURST_BUDGET
    for trial in range(kind.burst_trials):
        if time.monotonic() > deadline:
            break
        directory = tmp_path / str(trial)
        (directory / "sessions").mkdir(parents=True)
        unique = servers.unique_name("wsgisession_burst")
        url = kind.make_url(directory, unique, base_url)
        barrier = multiprocessing.get_context("fork").Barrier(BURST_PROCESSES * BURST_THREADS, timeout=BATCH_TIMEOUT)
        try:
            results = servers.run_in_processes(_first_burst, [(url, barrier)] * BURST_PROCESSES)
        finally:
            kind.cleanup(base_url, unique)
        errors = [error for result in results for error in result]
        assert errors == [], f"trial {trial}: {len(errors)} of {BURST_PROCESSES * BURST_THREADS} failed: {errors[0]}"
