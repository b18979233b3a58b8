"""PostgresStore against a real PostgreSQL: schema, merging, concurrent prunes, lost connections."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import ConnectionPool

from tests import servers
from wsgisession import _clock
from wsgisession.errors import ConfigurationError, StoreError, StoreTimeoutError, StoreUnavailableError
from wsgisession.ids import new_id, store_key
from wsgisession.observe import Pruner
from wsgisession.stores.base import Update
from wsgisession.stores.postgres import PostgresStore
from wsgisession.testing import Clock, StoreContract

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def pg_url() -> str:
    return servers.require_postgres()


@pytest.fixture
def admin(pg_url: str) -> Iterator[psycopg.Connection[Any]]:
    """A connection of the test's own, to inspect and tamper with the table."""
    with psycopg.connect(pg_url, autocommit=True) as conn:
        yield conn


@pytest.fixture
def table(admin: psycopg.Connection[Any]) -> Iterator[str]:
    """A table name of this test's own, dropped afterwards."""
    name = servers.unique_name("wsgisession_test")
    yield name
    admin.execute(f"DROP TABLE IF EXISTS {name}")


@pytest.fixture
def app_name() -> str:
    return servers.unique_name("wsgisession_test")


@pytest.fixture
def store(pg_url: str, table: str, app_name: str) -> Iterator[PostgresStore]:
    s = PostgresStore(_with(pg_url, application_name=app_name), table=table)
    yield s
    s.close()


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    c = Clock()
    monkeypatch.setattr(_clock, "now", c)
    return c


class TestPostgresStoreContract(StoreContract):
    race_rounds = 30

    @pytest.fixture
    def store(self, pg_url: str, table: str) -> Iterator[PostgresStore]:
        s = PostgresStore(pg_url, table=table)
        s.load(_key())  # open the pool and create the table before the test starts
        yield s
        s.close()

    @pytest.fixture
    def twin(self, store: PostgresStore, pg_url: str, table: str) -> Iterator[PostgresStore]:
        other = PostgresStore(pg_url, table=table)  # a pool of its own: the races cross connections
        other.load(_key())
        yield other
        other.close()


def _with(url: str, **params: str) -> str:
    sep = "&" if "?" in url else "?"
    return url + sep + "&".join(f"{k}={v}" for k, v in params.items())


def _key() -> str:
    return store_key(new_id())


def _create(store: PostgresStore, data: dict[str, Any], ttl: float = 600) -> str:
    key = _key()
    now = _clock.now()
    assert store.save(key, Update(set=data, expires_at=now + ttl, created_at=now))
    return key


def _backends(admin: psycopg.Connection[Any], app_name: str) -> int:
    row = admin.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", [app_name]).fetchone()
    assert row is not None
    count: int = row[0]
    return count


def _cli(*args: str, stderr: int = subprocess.PIPE) -> subprocess.CompletedProcess[str]:
    """Run the command line as a user does: in a subprocess."""
    return subprocess.run(
        [sys.executable, "-m", "wsgisession", *args],
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


# -- schema ---------------------------------------------------------------------------


def test_table_and_indexes_are_created_on_first_use(
    store: PostgresStore, admin: psycopg.Connection[Any], table: str
) -> None:
    assert admin.execute("SELECT to_regclass(%s)", [table]).fetchone() == (None,)
    _create(store, {"a": 1})
    columns = dict(
        admin.execute(
            "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = %s", [table]
        ).fetchall()
    )
    assert columns == {
        "key": "text",
        "data": "jsonb",
        "created_at": "double precision",
        "expires_at": "double precision",
        "user_id": "text",
    }
    indexes = {row[0] for row in admin.execute("SELECT indexdef FROM pg_indexes WHERE tablename = %s", [table])}
    assert any("(expires_at)" in d for d in indexes)
    assert any("(user_id)" in d for d in indexes)
    assert any("UNIQUE" in d and "(key)" in d for d in indexes)


def test_no_connection_before_first_use(pg_url: str, table: str, app_name: str, admin: psycopg.Connection[Any]) -> None:
    store = PostgresStore(_with(pg_url, application_name=app_name), table=table)
    try:
        assert _backends(admin, app_name) == 0  # a preforking master that never uses it holds nothing
        store.load(_key())
        assert _backends(admin, app_name) >= 1
    finally:
        store.close()
    deadline = time.monotonic() + 5
    while _backends(admin, app_name) and time.monotonic() < deadline:
        time.sleep(0.02)  # a backend leaves pg_stat_activity a moment after its client hangs up
    assert _backends(admin, app_name) == 0


def test_many_stores_creating_the_table_at_once(pg_url: str, table: str) -> None:
    stores = [PostgresStore(pg_url, table=table, pool_min=0, pool_max=1) for _ in range(8)]
    barrier = threading.Barrier(len(stores))
    errors: list[BaseException] = []

    def first_use(s: PostgresStore) -> None:
        try:
            barrier.wait()
            _create(s, {"a": 1})
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=first_use, args=(s,)) for s in stores]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        for s in stores:
            s.close()
    assert errors == []


def test_schema_qualified_table(pg_url: str, admin: psycopg.Connection[Any]) -> None:
    name = servers.unique_name("wsgisession_test")
    store = PostgresStore(pg_url, table=f"public.{name}")
    try:
        key = _create(store, {"a": 1})
        assert store.load(key) is not None
        assert admin.execute("SELECT to_regclass(%s)", [f"public.{name}"]).fetchone() != (None,)
    finally:
        store.close()
        admin.execute(f"DROP TABLE IF EXISTS public.{name}")


def test_dropped_table_is_created_again(store: PostgresStore, admin: psycopg.Connection[Any], table: str) -> None:
    _create(store, {"a": 1})
    admin.execute(f"DROP TABLE {table}")
    key = _create(store, {"b": 2})
    record = store.load(key)
    assert record is not None and record.data == {"b": 2}


def _exists(admin: psycopg.Connection[Any], table: str) -> bool:
    return admin.execute("SELECT to_regclass(%s)", [table]).fetchone() != (None,)


def test_create_false_never_creates_the_table(pg_url: str, table: str, admin: psycopg.Connection[Any]) -> None:
    store = PostgresStore.from_url(_with(pg_url, table=table), create=False)
    try:
        for use in (lambda: store.load(_key()), lambda: _create(store, {"a": 1}), store.count, store.prune):
            with pytest.raises(StoreUnavailableError, match=f"table '{table}' does not exist") as info:
                use()
            assert "127.0.0.1:5432/test" in str(info.value)
        assert not _exists(admin, table)
    finally:
        store.close()


def test_create_false_uses_a_table_that_exists_and_never_recreates_it(
    pg_url: str, table: str, admin: psycopg.Connection[Any]
) -> None:
    maker = PostgresStore(pg_url, table=table)
    key = _create(maker, {"a": 1})
    maker.close()
    store = PostgresStore(pg_url, table=table, create=False)
    try:
        record = store.load(key)
        assert record is not None and record.data == {"a": 1}
        admin.execute(f"DROP TABLE {table}")
        with pytest.raises(StoreUnavailableError, match=f"table '{table}' does not exist"):
            store.load(key)
        assert not _exists(admin, table)
    finally:
        store.close()


def test_cli_count_of_a_missing_table_exits_2_and_creates_nothing(
    pg_url: str, table: str, admin: psycopg.Connection[Any]
) -> None:
    result = _cli("count", _with(pg_url, table=table))
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1 and f"table '{table}' does not exist" in result.stderr
    assert not _exists(admin, table)


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("x; DROP TABLE users; --", id="statement"),
        pytest.param('a"b', id="quote"),
        pytest.param("1abc", id="digit-first"),
        pytest.param("a.b.c", id="three-parts"),
        pytest.param("", id="empty"),
        pytest.param("x" * 51, id="too-long"),
        pytest.param("sessions ", id="space"),
        pytest.param("séssions", id="non-ascii"),
    ],
)
def test_unsafe_table_names_are_refused(name: str) -> None:
    url = "postgresql://u@db.example/app"
    with pytest.raises(ConfigurationError, match="table"):
        PostgresStore(url, table=name)
    with pytest.raises(ConfigurationError, match="table"):
        PostgresStore.from_url(_with(url, table=quote(name)))


# -- values round-trip exactly --------------------------------------------------------------


def test_values_jsonb_would_change_round_trip(store: PostgresStore) -> None:
    data = {"nul": "a\x00b", "big": 1e16, "huge": 1.5e300, "tiny": 5e-324, "int": 10**16}
    names = {"\x00key": 1, "back\\slash": 2, "\\0": 3, "\\\x00": 4, "\\": 5}
    key = _create(store, {**data, **names})
    assert store.save(key, Update(delete=frozenset({"\\0"}), set={"\\": 6}, expires_at=_clock.now() + 60))
    expected: dict[str, Any] = {**data, **names, "\\": 6}
    del expected["\\0"]
    record = store.load(key)
    assert record is not None and record.data == expected
    assert type(record.data["big"]) is float and type(record.data["int"]) is int


def test_data_column_is_an_object_of_json_texts(
    store: PostgresStore, admin: psycopg.Connection[Any], table: str
) -> None:
    key = _create(store, {"cart": [1, 2], "user": "zoë"})
    row = admin.execute(f"SELECT data FROM {table} WHERE key = %s", [key]).fetchone()
    assert row == ({"cart": "[1,2]", "user": '"zoë"'},)


# -- merging and destroy wins -----------------------------------------------------------------


def _save_many(store: PostgresStore, key: str, worker: int, count: int, expires_at: float) -> int:
    for i in range(count):
        assert store.save(key, Update(set={f"w{worker}-{i}": i}, expires_at=expires_at))
    return count


def test_saves_from_many_processes_all_land(
    store: PostgresStore, admin: psycopg.Connection[Any], app_name: str
) -> None:
    key = _create(store, {"base": True})  # the parent's pool is open before the fork
    expires_at = _clock.now() + 600
    done = servers.run_in_processes(_save_many, [(store, key, w, 25, expires_at) for w in range(8)])
    assert done == [25] * 8
    record = store.load(key)  # the parent's connections survived its children
    assert record is not None
    assert len(record.data) == 8 * 25 + 1
    assert all(record.data[f"w{w}-{i}"] == i for w in range(8) for i in range(25))


def test_update_after_destroy_writes_nothing(store: PostgresStore, admin: psycopg.Connection[Any], table: str) -> None:
    key = _create(store, {"user": "alice"})
    store.destroy(key)
    late = Update(set={"late": True}, delete=frozenset({"user"}), expires_at=_clock.now() + 60)
    assert store.save(key, late) is False
    assert store.touch(key, _clock.now() + 60) is False
    assert admin.execute(f"SELECT count(*) FROM {table} WHERE key = %s", [key]).fetchone() == (0,)


def test_update_of_clock_expired_row_writes_nothing(
    store: PostgresStore, admin: psycopg.Connection[Any], table: str, clock: Clock
) -> None:
    key = _create(store, {"a": 1}, ttl=10)
    before = admin.execute(f"SELECT data, expires_at FROM {table} WHERE key = %s", [key]).fetchone()
    clock.advance(11)
    assert store.save(key, Update(set={"b": 2}, expires_at=clock() + 60)) is False
    assert store.touch(key, clock() + 60) is False
    assert admin.execute(f"SELECT data, expires_at FROM {table} WHERE key = %s", [key]).fetchone() == before


def test_touch_does_not_rewrite_data(store: PostgresStore, admin: psycopg.Connection[Any], table: str) -> None:
    key = _create(store, {"a": 1})
    # Another request's write, landing between this one's load and its touch.
    admin.execute(f"""UPDATE {table} SET data = data || '{{"b": "2"}}' WHERE key = %s""", [key])
    assert store.touch(key, _clock.now() + 900)
    record = store.load(key)
    assert record is not None and record.data == {"a": 1, "b": 2}
    assert record.expires_at == pytest.approx(_clock.now() + 900, abs=1)


# -- corrupt rows ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        pytest.param('{"a": "{not json"}', id="bad-inner-json"),
        pytest.param('{"a": 1}', id="inner-not-text"),
        pytest.param("[1, 2]", id="not-an-object"),
        pytest.param('"text"', id="a-string"),
    ],
)
def test_corrupt_row_is_absent_and_logged(
    store: PostgresStore,
    admin: psycopg.Connection[Any],
    table: str,
    caplog: pytest.LogCaptureFixture,
    data: str,
) -> None:
    key = _create(store, {"a": 1})
    admin.execute(f"UPDATE {table} SET data = %s::jsonb WHERE key = %s", [data, key])
    with caplog.at_level(logging.WARNING, logger="wsgisession.security"):
        assert store.load(key) is None
    messages = [r.getMessage() for r in caplog.records if r.name == "wsgisession.security"]
    assert messages and all(key not in m for m in messages)


# -- prune ------------------------------------------------------------------------------------


def _fill_expired(admin: psycopg.Connection[Any], table: str, count: int) -> None:
    admin.execute(
        f"INSERT INTO {table} (key, data, created_at, expires_at) "
        "SELECT md5(i::text) || md5((-i)::text), '{}', 1, 2 FROM generate_series(1, %s) AS i",
        [count],
    )


def test_prune_in_batches_keeps_live_rows(store: PostgresStore, admin: psycopg.Connection[Any], table: str) -> None:
    live = [_create(store, {"i": i}) for i in range(10)]
    _fill_expired(admin, table, 2_500)
    assert list(store.prune_batches(1000)) == [1000, 1000, 500]
    assert all(store.load(k) is not None for k in live)
    _fill_expired(admin, table, 1_200)
    assert store.prune() == 1_200
    assert list(store.prune_batches(1000)) == []
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="batch_size"):
            store.prune_batches(bad)  # type: ignore[arg-type]


def _prune(store: PostgresStore, batch_size: int) -> int:
    return sum(store.prune_batches(batch_size))


def test_concurrent_prunes_remove_each_row_once(
    store: PostgresStore, admin: psycopg.Connection[Any], table: str
) -> None:
    _create(store, {"live": True})
    _fill_expired(admin, table, 5_000)
    counts = servers.run_in_processes(_prune, [(store, 250)] * 4)
    assert sum(counts) == 5_000
    assert admin.execute(f"SELECT count(*) FROM {table}").fetchone() == (1,)


def test_background_pruner_runs_are_bounded(store: PostgresStore, admin: psycopg.Connection[Any], table: str) -> None:
    live = _create(store, {"live": True})
    _fill_expired(admin, table, 1_000)
    pruner = Pruner(store, 60, batch_size=100, max_batches=3)
    assert pruner.run_once() == 300
    assert admin.execute(f"SELECT count(*) FROM {table}").fetchone() == (701,)
    assert pruner.run_once() == 300
    assert Pruner(store, 60, batch_size=1000, max_batches=1).run_once() == 400
    assert admin.execute(f"SELECT count(*) FROM {table}").fetchone() == (1,)
    assert store.load(live) is not None


def test_cli_prune_works_in_batches_of_the_size_asked(
    store: PostgresStore, admin: psycopg.Connection[Any], table: str, pg_url: str
) -> None:
    _create(store, {"live": True})
    _fill_expired(admin, table, 7)
    # The command line reports each batch on a terminal: give it one for stderr.
    pty = pytest.importorskip("pty")
    master, slave = pty.openpty()
    try:
        result = _cli("prune", _with(pg_url, table=table), "--batch-size", "2", stderr=slave)
    finally:
        os.close(slave)
    progress = b""
    try:
        while chunk := os.read(master, 4096):
            progress += chunk
    except OSError:  # EIO: the terminal's other end is closed and everything has been read
        pass
    finally:
        os.close(master)
    assert result.returncode == 0
    assert result.stdout.strip() == "removed 7 expired sessions"
    assert re.findall(r"pruning: (\d+) removed", progress.decode()) == ["2", "4", "6", "7"]
    assert admin.execute(f"SELECT count(*) FROM {table}").fetchone() == (1,)


# -- construction and URLs ---------------------------------------------------------------------


def test_from_url_takes_our_options_and_passes_the_rest() -> None:
    store = PostgresStore.from_url(
        "postgresql://u:s3cret@db.example:6543/app?table=my_sessions&sslmode=require"
        "&pool_min=2&pool_max=7&statement_timeout_ms=900&application_name=shop"
    )
    params = conninfo_to_dict(store._conninfo)
    assert store.table == "my_sessions"
    assert (store._pool_min, store._pool_max, store.statement_timeout_ms) == (2, 7, 900)
    assert params["sslmode"] == "require" and params["application_name"] == "shop"
    assert params["connect_timeout"] == "5"
    assert "table" not in params and "pool_max" not in params
    assert repr(store) == "<PostgresStore db.example:6543/app table='my_sessions'>"
    assert "s3cret" not in repr(store)
    assert (
        store.create is True and PostgresStore.from_url("postgresql://u@db.example/app", create=False).create is False
    )
    store.close()  # never connected: nothing to close, no error


def test_defaults_added_only_where_missing() -> None:
    store = PostgresStore("host=db.example dbname=app connect_timeout=11")
    params = conninfo_to_dict(store._conninfo)
    assert params["connect_timeout"] == "11" and params["application_name"] == "wsgisession"
    store.close()


@pytest.mark.parametrize(
    "url",
    [
        pytest.param("mysql://u@h/db", id="scheme"),
        pytest.param("postgresql://u:s3cret@h/db?pool_max=ten", id="int-option"),
        pytest.param("postgresql://u:s3cret@h/db?bogus_option=1", id="libpq-option"),
        pytest.param("postgresql://u:s3cret@h/db?table=a.b.c", id="table"),
        pytest.param("postgresql://u:s3cret@h/db?pool_min=5&pool_max=2", id="pool-sizes"),
        pytest.param("postgresql://u:s3cret@h/db?table=a&table=b", id="twice"),
        pytest.param("postgresql://u:s3cret@h/db?statement_timeout_ms=-1", id="negative-timeout"),
    ],
)
def test_bad_url_is_a_configuration_error(url: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        PostgresStore.from_url(url)
    assert "s3cret" not in str(info.value)


def test_bad_arguments_are_configuration_errors() -> None:
    url = "postgresql://u@db.example/app"
    with pytest.raises(ConfigurationError):
        PostgresStore(42)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        PostgresStore(url, connect_timeout=0)
    with pytest.raises(ConfigurationError):
        PostgresStore(url, statement_timeout_ms=-1)
    with pytest.raises(ConfigurationError):
        PostgresStore(url, pool_min=0, pool_max=0)
    with pytest.raises(ConfigurationError):
        PostgresStore.from_url(None)  # type: ignore[arg-type]


def test_a_pool_you_pass_is_used_and_left_open(pg_url: str, table: str) -> None:
    # Not autocommit, unlike the store's own pool: the store must commit anyway.
    with ConnectionPool(pg_url, min_size=1, max_size=2, open=True) as pool:
        store = PostgresStore(pool, table=table)
        key = _create(store, {"a": 1})
        assert store.save(key, Update(set={"b": 2}, expires_at=_clock.now() + 60))
        _fill_expired_via(pool, table)
        assert sum(store.prune_batches(2)) == 3
        store.close()
        assert not pool.closed
        with pool.connection() as conn:
            row = conn.execute(f"SELECT data::text FROM {table} WHERE key = %s", [key]).fetchone()
        assert row is not None and "b" in row[0]
        assert "127.0.0.1:5432/test" in repr(store)


@pytest.mark.parametrize("autocommit", [False, True])
def test_a_pool_you_pass_commits_without_a_statement_timeout(pg_url: str, table: str, autocommit: bool) -> None:
    with ConnectionPool(pg_url, min_size=1, max_size=1, kwargs={"autocommit": autocommit}, open=True) as pool:
        store = PostgresStore(pool, table=table, statement_timeout_ms=0)
        key = _create(store, {"a": 1})
        assert store.save(key, Update(set={"b": 2}, expires_at=_clock.now() + 60))
        with psycopg.connect(pg_url) as other:
            row = other.execute(f"SELECT data::text FROM {table} WHERE key = %s", [key]).fetchone()
        assert row is not None and '"b"' in row[0]
        store.close()


def _fill_expired_via(pool: ConnectionPool[Any], table: str) -> None:
    with pool.connection() as conn:
        for i in range(3):
            conn.execute(f"INSERT INTO {table} VALUES (%s, '{{}}', 1, 2)", [store_key(f"expired{i}")])


def test_closed_store_refuses_use(store: PostgresStore) -> None:
    _create(store, {"a": 1})
    store.close()
    store.close()
    with pytest.raises(StoreUnavailableError, match="closed"):
        store.load(_key())


# -- failures --------------------------------------------------------------------------------


def test_terminated_connections_are_replaced_without_an_error(
    store: PostgresStore, admin: psycopg.Connection[Any], app_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    key = _create(store, {"a": 1})
    # Open several connections at once so the pool holds more than one idle.
    barrier = threading.Barrier(4)

    def hold() -> None:
        barrier.wait()
        store.load(key)

    threads = [threading.Thread(target=hold) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert _backends(admin, app_name) >= 2

    killed = admin.execute(
        "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = %s",
        [app_name],
    ).fetchone()
    assert killed is not None and killed[0] >= 2

    with caplog.at_level(logging.WARNING, logger="wsgisession.store"):
        assert store.save(key, Update(set={"b": 2}, expires_at=_clock.now() + 60))
    assert any("lost a connection" in r.getMessage() for r in caplog.records)
    record = store.load(key)
    assert record is not None and record.data == {"a": 1, "b": 2}

    # No broken connection is left in the pool: a full check finds none to discard.
    pool = store._get_pool()
    lost = pool.get_stats().get("connections_lost", 0)
    pool.check()
    assert pool.get_stats().get("connections_lost", 0) == lost
    assert _backends(admin, app_name) >= 1


def test_unreachable_server_is_unavailable() -> None:
    port = servers.free_port()
    store = PostgresStore(f"postgresql://u:s3cret@127.0.0.1:{port}/test", connect_timeout=1)
    try:
        started = time.monotonic()
        with pytest.raises(StoreUnavailableError) as info:
            store.load(_key())
        assert time.monotonic() - started < 6
        message = str(info.value)
        assert f"127.0.0.1:{port}/test" in message and "s3cret" not in message
    finally:
        store.close()


def test_busy_pool_is_a_timeout(pg_url: str, table: str) -> None:
    store = PostgresStore(pg_url, table=table, pool_min=1, pool_max=1, connect_timeout=0.5)
    try:
        _create(store, {"a": 1})
        pool = store._get_pool()
        held = pool.getconn()
        try:
            with pytest.raises(StoreTimeoutError, match="busy"):
                store.load(_key())
        finally:
            pool.putconn(held)
        assert store.load(_key()) is None
    finally:
        store.close()


def test_statement_timeout_is_a_timeout_and_writes_nothing(pg_url: str, table: str) -> None:
    store = PostgresStore(pg_url, table=table, statement_timeout_ms=300)
    try:
        key = _create(store, {"a": 1})
        with psycopg.connect(pg_url) as locker:  # a transaction that holds the row
            locker.execute(f"SELECT 1 FROM {table} WHERE key = %s FOR UPDATE", [key])
            started = time.monotonic()
            with pytest.raises(StoreTimeoutError, match="statement_timeout=300 ms") as info:
                store.save(key, Update(set={"a": 2, "b": 3}, expires_at=_clock.now() + 60))
            assert time.monotonic() - started < 3
            assert key not in str(info.value)
            locker.rollback()
        record = store.load(key)
        assert record is not None and record.data == {"a": 1}
        assert store.save(key, Update(set={"a": 2}, expires_at=_clock.now() + 60))
    finally:
        store.close()


@pytest.mark.parametrize("autocommit", [False, True])
def test_statement_timeout_applies_on_a_pool_you_pass(pg_url: str, table: str, autocommit: bool) -> None:
    # The pool's own connections wait for a lock as long as the server lets them.
    with ConnectionPool(pg_url, min_size=1, max_size=2, kwargs={"autocommit": autocommit}, open=True) as pool:
        with pool.connection() as conn:
            theirs = conn.execute("SHOW statement_timeout").fetchone()
        store = PostgresStore(pool, table=table, statement_timeout_ms=300)
        key = _create(store, {"a": 1})
        with psycopg.connect(pg_url) as locker:
            locker.execute(f"SELECT 1 FROM {table} WHERE key = %s FOR UPDATE", [key])
            started = time.monotonic()
            with pytest.raises(StoreTimeoutError, match="statement_timeout=300 ms"):
                store.save(key, Update(set={"a": 2}, expires_at=_clock.now() + 60))
            assert time.monotonic() - started < 3
            locker.rollback()
        assert store.save(key, Update(set={"a": 2}, expires_at=_clock.now() + 60))
        record = store.load(key)
        assert record is not None and record.data == {"a": 2}
        for _ in range(2):  # every connection of the pool, not only the one that timed out
            with pool.connection() as conn:
                assert conn.execute("SHOW statement_timeout").fetchone() == theirs, "the pool keeps its settings"
        store.close()


def test_pool_sizes_with_a_pool_you_pass_are_a_warning(pg_url: str) -> None:
    with ConnectionPool(pg_url, min_size=0, max_size=1, open=False) as pool:
        with pytest.warns(UserWarning, match="pool_max"):
            PostgresStore(pool, pool_max=4)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            PostgresStore(pool)


def _counting_attempts(store: PostgresStore, monkeypatch: pytest.MonkeyPatch, first: Callable[[], Any]) -> list[int]:
    """Count each attempt _run() makes of an operation; *first* runs before the first one."""
    attempts: list[int] = []
    run = store._run

    def counted(op: Any) -> Any:
        def attempt(conn: psycopg.Connection[Any], replayed: bool) -> Any:
            attempts.append(1)
            if len(attempts) == 1:
                first()
            return op(conn, replayed)

        return run(attempt)

    monkeypatch.setattr(store, "_run", counted)
    return attempts


def test_a_lost_connection_is_retried(
    pg_url: str, table: str, app_name: str, admin: psycopg.Connection[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    store = PostgresStore(_with(pg_url, application_name=app_name), table=table, pool_min=1, pool_max=1)
    try:
        key = _create(store, {"a": 1})

        def kill() -> None:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s", [app_name]
            )
            time.sleep(0.05)  # the backend is gone before the statement is sent

        attempts = _counting_attempts(store, monkeypatch, kill)
        assert store.save(key, Update(set={"b": 2}, expires_at=_clock.now() + 60))
        assert len(attempts) == 2
    finally:
        store.close()


@pytest.mark.parametrize(
    ("error", "retried"),
    [
        pytest.param(psycopg.errors.SerializationFailure, True, id="serialization-failure"),
        pytest.param(psycopg.errors.DeadlockDetected, True, id="deadlock"),
        pytest.param(psycopg.errors.UniqueViolation, False, id="constraint"),
        pytest.param(psycopg.errors.QueryCanceled, False, id="timeout"),
        pytest.param(psycopg.errors.DiskFull, False, id="disk-full"),
    ],
)
def test_only_rolled_back_or_lost_operations_are_retried(
    store: PostgresStore, monkeypatch: pytest.MonkeyPatch, error: type[Exception], retried: bool
) -> None:
    key = _create(store, {"a": 1})

    def fail() -> None:
        raise error("injected")

    attempts = _counting_attempts(store, monkeypatch, fail)
    if retried:
        assert store.save(key, Update(set={"b": 2}, expires_at=_clock.now() + 60))
    else:
        with pytest.raises(StoreError):
            store.save(key, Update(set={"b": 2}, expires_at=_clock.now() + 60))
    assert len(attempts) == (2 if retried else 1)


def test_no_request_fails_while_backends_are_terminated_again_and_again(
    pg_url: str, table: str, app_name: str, admin: psycopg.Connection[Any], caplog: pytest.LogCaptureFixture
) -> None:
    store = PostgresStore(_with(pg_url, application_name=app_name), table=table, pool_max=4)
    store.load(_key())
    stop = threading.Event()
    failures: list[BaseException] = []
    done = [0] * 4

    def client(i: int) -> None:
        try:
            key = _create(store, {"n": 0})
            n = 0
            while not stop.is_set():
                n += 1
                assert store.save(key, Update(set={"n": n}, expires_at=_clock.now() + 60))
                record = store.load(key)
                assert record is not None and record.data["n"] == n
                new = _key()
                assert store.save(new, Update(set={"r": n}, expires_at=_clock.now() + 60, replaces=key))
                assert store.touch(new, _clock.now() + 60)
                key = new
                done[i] += 4
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(len(done))]
    killed = 0
    with caplog.at_level(logging.WARNING, logger="wsgisession.store"):
        for thread in threads:
            thread.start()
        try:
            deadline = time.monotonic() + 3
            while time.monotonic() < deadline and not failures:
                row = admin.execute(
                    "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE application_name = %s",
                    [app_name],
                ).fetchone()
                killed += row[0] if row else 0
                time.sleep(0.05)
        finally:
            stop.set()
            for thread in threads:
                thread.join(30)
            store.close()
    assert failures == []
    assert killed >= 20 and min(done) >= 20, (killed, done)
    assert any("lost a connection" in r.getMessage() for r in caplog.records)


def test_sql_errors_are_store_errors_without_the_key(
    store: PostgresStore, admin: psycopg.Connection[Any], table: str
) -> None:
    key = _create(store, {"a": 1})
    admin.execute(f"ALTER TABLE {table} ADD CONSTRAINT no_b CHECK (NOT data ? 'b')")
    with pytest.raises(StoreError, match="violates check constraint") as info:
        store.save(key, Update(set={"b": 1}, expires_at=_clock.now() + 60))
    assert key not in str(info.value)


# -- the user index ---------------------------------------------------------------------------


def _bind(store: PostgresStore, user: str, ttl: float = 600) -> str:
    key = _key()
    now = _clock.now()
    assert store.save(key, Update(set={"u": 1}, expires_at=now + ttl, created_at=now, user_id=user))
    return key


def _user_indexes(admin: psycopg.Connection[Any], table: str) -> list[str]:
    rows = admin.execute("SELECT indexdef FROM pg_indexes WHERE tablename = %s", [table]).fetchall()
    return [row[0] for row in rows if "(user_id)" in row[0]]


def test_a_table_without_the_user_index_gets_it(
    pg_url: str, table: str, admin: psycopg.Connection[Any], caplog: pytest.LogCaptureFixture
) -> None:
    first = PostgresStore(pg_url, table=table)
    try:
        _create(first, {"a": 1})
    finally:
        first.close()
    admin.execute(f"DROP INDEX {table}_user_id_idx")  # as a migration of its own might have made it
    assert _user_indexes(admin, table) == []
    store = PostgresStore(pg_url, table=table)
    try:
        with caplog.at_level(logging.INFO, logger="wsgisession.store"):
            key = _bind(store, "alice")
        assert len(_user_indexes(admin, table)) == 1
        assert any("added the missing index on user_id" in r.getMessage() for r in caplog.records)
        assert [k for k, _ in store.sessions_of("alice")] == [key]
    finally:
        store.close()


def test_user_index_it_cannot_create_is_a_warning_not_an_error(
    pg_url: str, table: str, admin: psycopg.Connection[Any], caplog: pytest.LogCaptureFixture
) -> None:
    role = servers.unique_name("wsgisession_role")
    admin.execute(
        f"CREATE TABLE {table} (key text PRIMARY KEY, data jsonb NOT NULL, created_at double precision NOT NULL, "
        "expires_at double precision NOT NULL, user_id text NULL)"
    )
    admin.execute(f"CREATE ROLE {role} LOGIN")
    admin.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON {table} TO {role}")
    store = PostgresStore(_with(pg_url, user=role), table=table)
    try:
        with caplog.at_level(logging.WARNING, logger="wsgisession.store"):
            key = _bind(store, "alice")
        assert [k for k, _ in store.sessions_of("alice")] == [key]
        warnings = [r.getMessage() for r in caplog.records if "no index on user_id" in r.getMessage()]
        assert len(warnings) == 1 and "CREATE INDEX" in warnings[0]
        assert _user_indexes(admin, table) == []
    finally:
        store.close()
        admin.execute(f"DROP TABLE {table}")
        admin.execute(f"DROP ROLE {role}")


def test_user_lookups_use_the_index(store: PostgresStore, admin: psycopg.Connection[Any], table: str) -> None:
    _bind(store, "alice")
    with admin.transaction():
        admin.execute("SET LOCAL enable_seqscan = off")
        plan = "\n".join(
            row[0]
            for row in admin.execute(
                f"EXPLAIN SELECT key FROM {table} WHERE user_id = %s AND expires_at > %s", ["alice", 0.0]
            )
        )
    assert f"{table}_user_id_idx" in plan


def test_user_id_column_holds_the_id(store: PostgresStore, admin: psycopg.Connection[Any], table: str) -> None:
    plain = _bind(store, "alice@example.com")
    odd = _bind(store, "a\x00b\\c")  # text cannot hold NUL: escaped, one-to-one, like data keys
    look_alike = _bind(store, "a\\0b\\c")
    anonymous = _create(store, {"a": 1})
    rows = dict(admin.execute(f"SELECT key, user_id FROM {table}").fetchall())
    assert rows[plain] == "alice@example.com"
    assert rows[anonymous] is None
    assert rows[odd] != rows[look_alike]
    for key, user in ((odd, "a\x00b\\c"), (look_alike, "a\\0b\\c")):
        assert [k for k, _ in store.sessions_of(user)] == [key]
        record = store.load(key)
        assert record is not None and record.user_id == user
    assert store.destroy_user("a\x00b\\c") == 1
    assert store.load(look_alike) is not None


def test_binding_through_either_statement(store: PostgresStore, clock: Clock) -> None:
    # A creating save onto a live row (INSERT ... ON CONFLICT) binds, or keeps the binding.
    key = _create(store, {"a": 1})
    assert store.save(key, Update(set={"b": 2}, expires_at=clock() + 60, created_at=clock(), user_id="alice"))
    assert store.save(key, Update(set={"c": 3}, expires_at=clock() + 60, created_at=clock()))
    record = store.load(key)
    assert record is not None and record.user_id == "alice" and record.data == {"a": 1, "b": 2, "c": 3}
    # Onto an expired row it starts afresh, binding only what the update says.
    clock.advance(61)
    assert store.save(key, Update(set={"d": 4}, expires_at=clock() + 60, created_at=clock()))
    record = store.load(key)
    assert record is not None and record.user_id is None and record.data == {"d": 4}
    assert store.index_size() == 0


def test_destroy_user_is_one_statement_and_prune_shrinks_the_index(store: PostgresStore, clock: Clock) -> None:
    for _ in range(3):
        _bind(store, "alice", ttl=10)
    live = _bind(store, "alice", ttl=1000)
    _bind(store, "bob", ttl=10)
    assert store.index_size() == 5
    clock.advance(11)
    assert store.count() == 1
    assert store.prune() == 4
    assert store.index_size() == 1
    assert store.destroy_user("alice") == 1
    assert store.load(live) is None
    assert store.index_size() == 0


def test_user_ids_that_are_not_text_are_refused(store: PostgresStore) -> None:
    with pytest.raises(ValueError, match="surrogate"):
        _bind(store, "\ud800")
    with pytest.raises(TypeError):
        store.destroy_user(None)  # type: ignore[arg-type]


# -- rename (regenerate) ------------------------------------------------------------------------


def _rename(store: PostgresStore, old: str, new: str, **changes: Any) -> bool:
    return store.save(new, Update(set={"x": 1}, expires_at=_clock.now() + 60, replaces=old, **changes))


def _wait_for_lock_waiters(admin: psycopg.Connection[Any], app_name: str, count: int) -> None:
    deadline = time.monotonic() + 10
    while True:
        row = admin.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s AND wait_event_type = 'Lock'",
            [app_name],
        ).fetchone()
        if row is not None and row[0] >= count:
            return
        assert time.monotonic() < deadline, f"fewer than {count} statement(s) ever waited for the row lock"
        time.sleep(0.01)


@pytest.mark.parametrize("rival", ["destroy", "destroy_user", "rename"])
@pytest.mark.parametrize("first", ["rename", "rival"])
def test_rename_queued_with_a_rival_on_the_row_lock(
    store: PostgresStore,
    pg_url: str,
    table: str,
    app_name: str,
    admin: psycopg.Connection[Any],
    first: str,
    rival: str,
) -> None:
    # Both statements wait on a row lock held by a third connection, in a known
    # order; when it is released, the second one re-checks the row the first
    # left. A rename moves the row to its new key in place, so a destroy_user
    # queued behind it follows the row there and deletes it: a DELETE and an
    # INSERT would leave it blind to the new row, and the session alive.
    other = PostgresStore(_with(pg_url, application_name=app_name), table=table)
    try:
        old = _bind(store, "alice")
        new, rival_new = _key(), _key()
        results: dict[str, Any] = {}

        def rename() -> None:
            results["rename"] = _rename(store, old, new)

        def rival_op() -> None:
            if rival == "destroy":
                results["rival"] = other.destroy(old)
            elif rival == "destroy_user":
                results["rival"] = other.destroy_user("alice")
            else:
                results["rival"] = _rename(other, old, rival_new)

        order = [rename, rival_op] if first == "rename" else [rival_op, rename]
        threads = [threading.Thread(target=target) for target in order]
        with psycopg.connect(pg_url) as locker:
            locker.execute(f"SELECT 1 FROM {table} WHERE key = %s FOR UPDATE", [old])
            for n, thread in enumerate(threads, 1):
                thread.start()
                _wait_for_lock_waiters(admin, app_name, n)
            locker.rollback()
        for thread in threads:
            thread.join(10)
        assert store.load(old) is None
        renamed = first == "rename"
        assert results["rename"] is renamed
        if rival == "destroy":
            # After the rename, destroying the old key finds nothing to delete.
            assert (store.load(new) is not None) is renamed
        elif rival == "destroy_user":
            assert results["rival"] == 1  # the old row, or the new one it became
            assert store.load(new) is None
            assert store.sessions_of("alice") == []
        else:
            assert results["rival"] is not renamed, "exactly one of two renames wins"
            assert (store.load(new) is not None) is renamed
            assert (store.load(rival_new) is not None) is not renamed
        left = {"destroy": int(renamed), "destroy_user": 0, "rename": 1}[rival]
        assert admin.execute(f"SELECT count(*) FROM {table}").fetchone() == (left,)
    finally:
        other.close()


def test_rename_retried_after_a_lost_reply_reports_that_it_landed(
    store: PostgresStore, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = _bind(store, "alice")
    run = store._run

    def run_twice(op: Any) -> Any:
        # What _run() does when the connection dies after the statement committed.
        return run(lambda conn, replayed: (op(conn, replayed), op(conn, True))[1])

    monkeypatch.setattr(store, "_run", run_twice)
    new = _key()
    assert _rename(store, old, new) is True
    monkeypatch.undo()
    record = store.load(new)
    assert record is not None and record.data == {"u": 1, "x": 1} and record.user_id == "alice"
    assert store.load(old) is None


def test_rename_keeps_the_row_and_rebinds_in_one_statement(
    store: PostgresStore, admin: psycopg.Connection[Any], table: str, clock: Clock
) -> None:
    t0 = clock()
    old = _bind(store, "alice")
    clock.advance(5)
    new = _key()
    assert _rename(store, old, new, user_id="bob", delete=frozenset({"u"}))
    rows = admin.execute(f"SELECT key, data::text, created_at, user_id FROM {table}").fetchall()
    assert rows == [(new, '{"x": "1"}', pytest.approx(t0), "bob")]
    # A rename onto its own key is an update: it neither moves nor creates.
    assert store.save(new, Update(set={"y": 2}, expires_at=clock() + 60, replaces=new, created_at=clock()))
    record = store.load(new)
    assert record is not None and record.data == {"x": 1, "y": 2}
    store.destroy(new)
    assert store.save(new, Update(set={"y": 2}, expires_at=clock() + 60, replaces=new, created_at=clock())) is False
    assert store.load(new) is None


def test_rename_onto_a_taken_key_fails_and_leaves_the_old_row(store: PostgresStore) -> None:
    # Never happens (a new key is a fresh random ID), but must not lose the session if it did.
    old = _create(store, {"a": 1})
    taken = _create(store, {"b": 2})
    with pytest.raises(StoreError, match="duplicate key") as info:
        _rename(store, old, taken)
    assert old not in str(info.value) and taken not in str(info.value)
    record = store.load(old)
    assert record is not None and record.data == {"a": 1}
    record = store.load(taken)
    assert record is not None and record.data == {"b": 2}
