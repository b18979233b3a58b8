"""MySQLStore against a real MariaDB (or MySQL): schema, merging, renames racing logouts, faults, the CLI."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import webtest

from tests import servers
from wsgisession import SessionMiddleware, _clock, get_session
from wsgisession.errors import ConfigurationError, StoreError, StoreTimeoutError, StoreUnavailableError
from wsgisession.ids import new_id, store_key
from wsgisession.stores import from_url
from wsgisession.stores.base import BatchedPrune, Countable, IndexSized, Update, UserIndex
from wsgisession.stores.mysql import MAX_USER_BYTES, MySQLStore
from wsgisession.testing import Clock, StoreContract

from .conftest import SECRET, demo_app
from .liveserver import free_port

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def mysql_url() -> str:
    return servers.require_mysql()


@pytest.fixture
def admin(mysql_url: str) -> Iterator[Any]:
    """A connection of the test's own, to inspect and tamper with the table."""
    conn = servers.mysql_connect(mysql_url)
    yield conn
    conn.close()


def _rows(admin: Any, statement: str, *params: Any) -> list[tuple[Any, ...]]:
    with admin.cursor() as cur:
        cur.execute(statement, params or None)
        return list(cur.fetchall())


def _do(admin: Any, statement: str, *params: Any) -> int:
    with admin.cursor() as cur:
        return int(cur.execute(statement, params or None))


@pytest.fixture
def table(admin: Any) -> Iterator[str]:
    """A table name of this test's own, dropped afterwards."""
    name = servers.unique_name("wsgisession_test")
    yield name
    _do(admin, f"DROP TABLE IF EXISTS `{name}`")


@pytest.fixture
def url(mysql_url: str, table: str) -> str:
    return f"{mysql_url}?table={table}"


@pytest.fixture
def store(url: str) -> Iterator[MySQLStore]:
    s = MySQLStore.from_url(url)
    yield s
    s.close()


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    c = Clock()
    monkeypatch.setattr(_clock, "now", c)
    return c


@pytest.fixture
def login(admin: Any, mysql_url: str) -> Iterator[tuple[str, str]]:
    """A user of the test's own (name, password), so the test can find and kill exactly its connections."""
    name = servers.unique_name("wsgisession_u")
    password = "s3cret-" + name[-8:]
    database = mysql_url.rsplit("/", 1)[1]
    _do(admin, f"CREATE USER '{name}'@'%' IDENTIFIED BY '{password}'")
    _do(admin, f"GRANT ALL PRIVILEGES ON `{database}`.* TO '{name}'@'%'")
    yield name, password
    for (pid,) in _rows(admin, "SELECT ID FROM information_schema.PROCESSLIST WHERE USER = %s", name):
        with contextlib.suppress(Exception):
            _do(admin, f"KILL {int(pid)}")
    _do(admin, f"DROP USER IF EXISTS '{name}'@'%'")


def _as(login: tuple[str, str], mysql_url: str, table: str, **options: Any) -> str:
    """The store URL for the test's own user."""
    host = mysql_url.split("@", 1)[1]
    query = "&".join(f"{k}={v}" for k, v in {"table": table, **options}.items())
    return f"mysql://{login[0]}:{quote(login[1])}@{host}?{query}"


def _connections(admin: Any, user: str) -> list[int]:
    rows = _rows(admin, "SELECT ID FROM information_schema.PROCESSLIST WHERE USER = %s", user)
    return [int(row[0]) for row in rows]


def _kill_all(admin: Any, user: str) -> int:
    killed = 0
    for pid in _connections(admin, user):
        with contextlib.suppress(Exception):
            _do(admin, f"KILL {pid}")
            killed += 1
    return killed


def _key() -> str:
    return store_key(new_id())


def _create(store: MySQLStore, data: dict[str, Any], ttl: float = 600) -> str:
    key = _key()
    now = _clock.now()
    assert store.save(key, Update(set=data, expires_at=now + ttl, created_at=now))
    return key


def _bind(store: MySQLStore, user: str, ttl: float = 600) -> str:
    key = _key()
    now = _clock.now()
    assert store.save(key, Update(set={"u": 1}, expires_at=now + ttl, created_at=now, user_id=user))
    return key


class TestMySQLStoreContract(StoreContract):
    race_rounds = 30

    @pytest.fixture
    def store(self, url: str) -> Iterator[MySQLStore]:
        s = MySQLStore.from_url(url)
        s.load(_key())
        yield s
        s.close()

    @pytest.fixture
    def twin(self, store: MySQLStore, url: str) -> Iterator[MySQLStore]:
        other = MySQLStore.from_url(url)  # connections of its own: the races cross connections
        other.load(_key())
        yield other
        other.close()


class TestMySQLStoreContractOnMariaDBScheme(StoreContract):
    user_churn = 500  # the full churn runs above

    @pytest.fixture
    def store(self, mysql_url: str, table: str) -> Iterator[MySQLStore]:
        s = MySQLStore.from_url(
            "mariadb://" + mysql_url.split("://", 1)[1] + f"?table={table}&lock_wait_timeout=2&read_timeout=4"
        )
        yield s
        s.close()


def test_it_declares_its_capabilities(store: MySQLStore) -> None:
    for capability in (UserIndex, Countable, BatchedPrune, IndexSized):
        assert isinstance(store, capability)


# -- schema ---------------------------------------------------------------------------------------


def test_table_and_indexes_are_created_on_first_use(store: MySQLStore, admin: Any, table: str) -> None:
    exists = "SELECT ENGINE FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = %s"
    assert _rows(admin, exists, table) == []
    _create(store, {"a": 1})
    assert _rows(admin, exists, table) == [("InnoDB",)]
    columns = dict(
        _rows(
            admin,
            "SELECT COLUMN_NAME, COLUMN_TYPE FROM information_schema.COLUMNS "
            "WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = %s",
            table,
        )
    )
    assert columns["key"] == "char(64)"
    assert columns["created_at"] == columns["expires_at"] == "double"
    assert columns["user_id"] == f"varbinary({MAX_USER_BYTES})"
    assert columns["data"] in ("longtext", "json")  # MariaDB's JSON is LONGTEXT with a JSON_VALID check
    indexes = {
        (name, column)
        for name, column in _rows(
            admin,
            "SELECT INDEX_NAME, COLUMN_NAME FROM information_schema.STATISTICS "
            "WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = %s",
            table,
        )
    }
    assert indexes == {("PRIMARY", "key"), ("expires_at_idx", "expires_at"), ("user_id_idx", "user_id")}


def test_create_false_never_makes_the_table(url: str, admin: Any, table: str) -> None:
    opened = from_url(url, create=False)
    assert isinstance(opened, MySQLStore)
    missing = opened
    try:
        uses: list[Callable[[], object]] = [lambda: missing.load(_key()), lambda: _create(missing, {}), missing.prune]
        for use in uses:
            with pytest.raises(StoreUnavailableError, match=f"table '{table}' does not exist") as info:
                use()
            assert "127.0.0.1:3306/test" in str(info.value)
        assert _rows(admin, f"SHOW TABLES LIKE '{table}'") == []
    finally:
        missing.close()
    maker = MySQLStore.from_url(url)
    key = _create(maker, {"a": 1})
    maker.close()
    store = from_url(url, create=False)
    try:
        record = store.load(key)
        assert record is not None and record.data == {"a": 1}
    finally:
        store.close()


def test_many_stores_creating_the_table_at_once(url: str) -> None:
    stores = [MySQLStore.from_url(url) for _ in range(8)]
    barrier = threading.Barrier(len(stores))
    errors: list[BaseException] = []

    def first_use(s: MySQLStore) -> None:
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


def test_dropped_table_is_created_again(store: MySQLStore, admin: Any, table: str) -> None:
    _create(store, {"a": 1})
    _do(admin, f"DROP TABLE `{table}`")
    key = _create(store, {"b": 2})
    record = store.load(key)
    assert record is not None and record.data == {"b": 2}


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("x; DROP TABLE users; --", id="statement"),
        pytest.param("a`b", id="backquote"),
        pytest.param("1abc", id="digit-first"),
        pytest.param("db.table", id="dotted"),
        pytest.param("", id="empty"),
        pytest.param("x" * 65, id="too-long"),
        pytest.param("sessions ", id="space"),
        pytest.param("séssions", id="non-ascii"),
    ],
)
def test_unsafe_table_names_are_refused(name: str) -> None:
    with pytest.raises(ConfigurationError, match="table"):
        MySQLStore(database="app", table=name)
    with pytest.raises(ConfigurationError, match="table"):
        MySQLStore.from_url(f"mysql://u:s3cret@db.example/app?table={quote(name)}")


# -- values round-trip exactly ---------------------------------------------------------------------


def test_values_round_trip_exactly(store: MySQLStore) -> None:
    data = {"nul": "a\x00b", "big": 1e16, "huge": 1.5e300, "tiny": 5e-324, "int": 10**16, "emoji": "😀", "ls": "\u2028"}
    names = {"\x00key": 1, "back\\slash": 2, "\\0": 3, "\\\x00": 4, "\\": 5, 'q"uote': 6, "$.a[0]": 7, "": 8, "😀": 9}
    key = _create(store, {**data, **names})
    assert store.save(key, Update(delete=frozenset({"\\0", "$.a[0]"}), set={"\\": 6, "": None}, expires_at=2e9))
    expected: dict[str, Any] = {**data, **names, "\\": 6, "": None}
    del expected["\\0"], expected["$.a[0]"]
    record = store.load(key)
    assert record is not None and record.data == expected
    assert type(record.data["big"]) is float and type(record.data["int"]) is int


def test_a_name_both_deleted_and_set_is_set(store: MySQLStore) -> None:
    key = _create(store, {"a": 1})
    assert store.save(key, Update(set={"a": 2}, delete=frozenset({"a"}), expires_at=_clock.now() + 60))
    record = store.load(key)
    assert record is not None and record.data == {"a": 2}


def test_data_column_is_an_object_of_json_texts(store: MySQLStore, admin: Any, table: str) -> None:
    key = _create(store, {"cart": [1, 2], "user": "zoë"})
    (row,) = _rows(admin, f"SELECT data FROM `{table}` WHERE `key` = %s", key)
    assert json.loads(row[0]) == {"cart": "[1,2]", "user": '"zoë"'}


# -- merging and destroy wins -------------------------------------------------------------------------


def _save_many(store: MySQLStore, key: str, worker: int, count: int, expires_at: float) -> int:
    for i in range(count):
        assert store.save(key, Update(set={f"w{worker}-{i}": i}, expires_at=expires_at))
    return count


def test_two_processes_merging_different_keys_both_land(
    store: MySQLStore, caplog: pytest.LogCaptureFixture, login: tuple[str, str], mysql_url: str, table: str
) -> None:
    key = _create(store, {"base": True})  # the parent holds an idle connection when it forks
    expires_at = _clock.now() + 600
    done = servers.run_in_processes(_save_many, [(store, key, w, 40, expires_at) for w in range(2)])
    assert done == [40, 40]
    with caplog.at_level(logging.WARNING, logger="wsgisession.store"):
        record = store.load(key)
    assert not caplog.records, "the children left the parent's connection alone"
    assert record is not None
    assert record.data == {"base": True, **{f"w{w}-{i}": i for w in range(2) for i in range(40)}}


def test_many_processes_saving_at_once_all_land(store: MySQLStore) -> None:
    key = _create(store, {"base": True})
    expires_at = _clock.now() + 600
    done = servers.run_in_processes(_save_many, [(store, key, w, 15, expires_at) for w in range(6)])
    assert done == [15] * 6
    record = store.load(key)
    assert record is not None and len(record.data) == 6 * 15 + 1


def test_update_after_destroy_writes_nothing(store: MySQLStore, admin: Any, table: str) -> None:
    key = _create(store, {"user": "alice"})
    store.destroy(key)
    late = Update(set={"late": True}, delete=frozenset({"user"}), expires_at=_clock.now() + 60)
    assert store.save(key, late) is False
    assert store.touch(key, _clock.now() + 60) is False
    assert _rows(admin, f"SELECT COUNT(*) FROM `{table}` WHERE `key` = %s", key) == [(0,)]


def test_update_of_clock_expired_row_writes_nothing(store: MySQLStore, admin: Any, table: str, clock: Clock) -> None:
    key = _create(store, {"a": 1}, ttl=10)
    select = f"SELECT data, expires_at FROM `{table}` WHERE `key` = %s"
    before = _rows(admin, select, key)
    clock.advance(11)
    assert store.save(key, Update(set={"b": 2}, expires_at=clock() + 60)) is False
    assert store.save(key, Update(expires_at=clock() + 60, user_id="alice")) is False
    assert store.touch(key, clock() + 60) is False
    assert _rows(admin, select, key) == before


def test_an_update_that_changes_nothing_still_lands(store: MySQLStore) -> None:
    key = _create(store, {"a": 1})
    expires = _clock.now() + 60
    assert store.save(key, Update(set={"a": 1}, expires_at=expires))
    assert store.save(key, Update(set={"a": 1}, expires_at=expires)), "matched, though no column changed"
    assert store.save(key, Update(expires_at=expires))
    assert store.touch(key, expires)


def test_touch_does_not_rewrite_data(store: MySQLStore, admin: Any, table: str) -> None:
    key = _create(store, {"a": 1})
    # Another request's write, landing between this one's load and its touch.
    _do(admin, f"UPDATE `{table}` SET data = JSON_SET(data, '$.b', '2') WHERE `key` = %s", key)
    assert store.touch(key, _clock.now() + 900)
    record = store.load(key)
    assert record is not None and record.data == {"a": 1, "b": 2}
    assert record.expires_at == pytest.approx(_clock.now() + 900, abs=1)


# -- corrupt rows ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        pytest.param('{"a": "{not json"}', id="bad-inner-json"),
        pytest.param('{"a": 1}', id="inner-not-text"),
        pytest.param('{"a": "NaN"}', id="inner-nan"),
        pytest.param("[1, 2]", id="not-an-object"),
        pytest.param('"text"', id="a-string"),
        pytest.param("null", id="null"),
    ],
)
def test_corrupt_row_is_absent_and_logged(
    store: MySQLStore, admin: Any, table: str, caplog: pytest.LogCaptureFixture, data: str
) -> None:
    key = _create(store, {"a": 1})
    _do(admin, f"UPDATE `{table}` SET data = %s WHERE `key` = %s", data, key)
    with caplog.at_level(logging.WARNING, logger="wsgisession.security"):
        assert store.load(key) is None
    messages = [r.getMessage() for r in caplog.records if r.name == "wsgisession.security"]
    assert messages and all(key not in m for m in messages)
    # A save onto the corrupt row is not an error either: the merge starts from what JSON there is.
    store.save(key, Update(set={"b": 2}, expires_at=_clock.now() + 60))


def test_a_user_id_that_is_not_utf8_is_a_corrupt_record(store: MySQLStore, admin: Any, table: str) -> None:
    key = _bind(store, "alice")
    _do(admin, f"UPDATE `{table}` SET user_id = X'FF00' WHERE `key` = %s", key)
    assert store.load(key) is None
    assert store.sessions_of("alice") == []


# -- prune ------------------------------------------------------------------------------------------


def _fill_expired(admin: Any, table: str, count: int, start: int = 0) -> None:
    with admin.cursor() as cur:
        cur.executemany(
            f"INSERT INTO `{table}` (`key`, data, created_at, expires_at) VALUES (%s, '{{}}', 1, %s)",
            [(store_key(f"expired{i}"), 2 + i % 7) for i in range(start, start + count)],
        )


def test_prune_in_batches_keeps_live_rows(store: MySQLStore, admin: Any, table: str) -> None:
    live = [_create(store, {"i": i}) for i in range(10)]
    _fill_expired(admin, table, 2_500)
    assert list(store.prune_batches(1000)) == [1000, 1000, 500]
    assert all(store.load(k) is not None for k in live)
    assert store.prune() == 0
    _fill_expired(admin, table, 1_500)
    assert store.prune() == 1_500
    assert list(store.prune_batches()) == []
    for bad in (0, -1, True, 1.5):
        with pytest.raises(ValueError, match="batch_size"):
            store.prune_batches(bad)  # type: ignore[arg-type]


def _prune(store: MySQLStore, batch_size: int) -> int:
    return sum(store.prune_batches(batch_size))


def test_concurrent_prunes_remove_each_row_once(store: MySQLStore, admin: Any, table: str) -> None:
    _create(store, {"live": True})
    _fill_expired(admin, table, 4_000)
    counts = servers.run_in_processes(_prune, [(store, 250)] * 4)
    assert sum(counts) == 4_000
    assert _rows(admin, f"SELECT COUNT(*) FROM `{table}`") == [(1,)]


# -- the user index ----------------------------------------------------------------------------------


def test_user_id_column_holds_the_ids_bytes(store: MySQLStore, admin: Any, table: str) -> None:
    users = ["alice@example.com", "a\x00b", "alice", "alice ", "Alice", "ü", "u", "ü" * (MAX_USER_BYTES // 2)]
    keys = {user: _bind(store, user) for user in users}
    anonymous = _create(store, {"a": 1})
    rows = dict(_rows(admin, f"SELECT `key`, user_id FROM `{table}`"))
    assert rows[anonymous] is None
    for user, key in keys.items():
        assert rows[key] == user.encode()
        assert [k for k, _ in store.sessions_of(user)] == [key], "no padding, case or accent folding"
        record = store.load(key)
        assert record is not None and record.user_id == user
    assert store.destroy_user("alice") == 1
    assert store.load(keys["alice "]) is not None


def test_a_user_id_too_long_to_index_is_refused(store: MySQLStore) -> None:
    too_long = "x" * (MAX_USER_BYTES + 1)
    with pytest.raises(ValueError, match=f"at most {MAX_USER_BYTES} bytes"):
        _bind(store, too_long)
    assert store.sessions_of(too_long) == []
    assert store.destroy_user(too_long) == 0
    with pytest.raises(ValueError, match="surrogate"):
        _bind(store, "\ud800")
    with pytest.raises(TypeError):
        store.destroy_user(None)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        store.sessions_of(b"alice")  # type: ignore[arg-type]


def test_binding_through_either_statement(store: MySQLStore, clock: Clock) -> None:
    # A creating save onto a live row (INSERT ... ON DUPLICATE KEY UPDATE) binds, or keeps the binding.
    key = _create(store, {"a": 1})
    assert store.save(key, Update(set={"b": 2}, expires_at=clock() + 60, created_at=clock(), user_id="alice"))
    assert store.save(key, Update(set={"c": 3}, expires_at=clock() + 60, created_at=clock()))
    record = store.load(key)
    assert record is not None and record.user_id == "alice" and record.data == {"a": 1, "b": 2, "c": 3}
    # Onto an expired row it starts afresh, binding only what the update says.
    clock.advance(61)
    assert store.save(key, Update(set={"d": 4}, delete=frozenset({"a"}), expires_at=clock() + 60, created_at=clock()))
    record = store.load(key)
    assert record is not None and record.user_id is None and record.data == {"d": 4}
    assert record.created_at == clock()
    assert store.index_size() == 0


def test_user_lookups_use_the_index(store: MySQLStore, admin: Any, table: str) -> None:
    for i in range(50):
        _bind(store, f"user{i}")
    _do(admin, f"ANALYZE TABLE `{table}`")
    plans = [
        _rows(admin, f"EXPLAIN SELECT `key` FROM `{table}` WHERE user_id = %s AND expires_at > %s", b"user1", 0.0),
        _rows(admin, f"EXPLAIN SELECT expires_at FROM `{table}` WHERE user_id = %s FOR UPDATE", b"user1"),
    ]
    for plan in plans:
        assert "user_id_idx" in str(plan)


# -- rename (regenerate) ---------------------------------------------------------------------------


def _rename(store: MySQLStore, old: str, new: str, **changes: Any) -> bool:
    return store.save(new, Update(set={"x": 1}, expires_at=_clock.now() + 60, replaces=old, **changes))


def _wait_for_lock_waiters(admin: Any, user: str, count: int) -> None:
    deadline = time.monotonic() + 10
    while True:
        ((waiting,),) = _rows(
            admin,
            "SELECT COUNT(*) FROM information_schema.INNODB_TRX t JOIN information_schema.PROCESSLIST p "
            "ON p.ID = t.trx_mysql_thread_id WHERE t.trx_state = 'LOCK WAIT' AND p.USER = %s",
            user,
        )
        if waiting >= count:
            return
        assert time.monotonic() < deadline, f"fewer than {count} statement(s) ever waited for the row lock"
        # InnoDB refreshes what INNODB_TRX shows only once it has gone unread for 0.1 s.
        time.sleep(0.15)


@pytest.mark.parametrize("rival", ["destroy", "destroy_user", "rename"])
@pytest.mark.parametrize("first", ["rename", "rival"])
def test_rename_queued_with_a_rival_on_the_row_lock(
    mysql_url: str, table: str, admin: Any, login: tuple[str, str], first: str, rival: str
) -> None:
    # Both wait on a row lock a third connection holds, in a known order; when
    # it is released they go on in whatever order InnoDB grants their locks
    # (breaking a deadlock between them if their locks cross). Whatever the
    # order, the outcome is one of the two serial ones: above all, a
    # destroy_user never misses the session under its new key.
    store = MySQLStore.from_url(_as(login, mysql_url, table))
    other = MySQLStore.from_url(_as(login, mysql_url, table))
    try:
        old = _bind(store, "alice")
        new, rival_new = _key(), _key()
        results: dict[str, Any] = {}
        errors: list[BaseException] = []

        def rename() -> None:
            try:
                results["rename"] = _rename(store, old, new)
            except BaseException as exc:
                errors.append(exc)

        def rival_op() -> None:
            try:
                if rival == "destroy":
                    other.destroy(old)
                    results["rival"] = None
                elif rival == "destroy_user":
                    results["rival"] = other.destroy_user("alice")
                else:
                    results["rival"] = _rename(other, old, rival_new)
            except BaseException as exc:
                errors.append(exc)

        order = [rename, rival_op] if first == "rename" else [rival_op, rename]
        threads = [threading.Thread(target=target) for target in order]
        locker = servers.mysql_connect(mysql_url, autocommit=False)
        try:
            _rows(locker, f"SELECT 1 FROM `{table}` WHERE `key` = %s FOR UPDATE", old)
            for n, thread in enumerate(threads, 1):
                thread.start()
                _wait_for_lock_waiters(admin, login[0], n)
            locker.rollback()
        finally:
            locker.close()
        for thread in threads:
            thread.join(10)
        assert errors == []
        assert store.load(old) is None
        renamed = results["rename"]
        if rival == "destroy":
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
        assert _rows(admin, f"SELECT COUNT(*) FROM `{table}`") == [(left,)]
    finally:
        store.close()
        other.close()


def test_rename_replayed_after_a_lost_reply_reports_that_it_landed(
    store: MySQLStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = _bind(store, "alice")
    run = store._run

    def run_twice(op: Any) -> Any:
        # What _run() does when the connection dies after the statement committed.
        return run(lambda cur, retrying: (op(cur, False), op(cur, True))[1])

    monkeypatch.setattr(store, "_run", run_twice)
    new = _key()
    assert _rename(store, old, new) is True
    monkeypatch.undo()
    record = store.load(new)
    assert record is not None and record.data == {"u": 1, "x": 1} and record.user_id == "alice"
    assert store.load(old) is None


def test_rename_keeps_the_row_and_rebinds_in_one_statement(
    store: MySQLStore, admin: Any, table: str, clock: Clock
) -> None:
    t0 = clock()
    old = _bind(store, "alice")
    clock.advance(5)
    new = _key()
    assert _rename(store, old, new, user_id="bob", delete=frozenset({"u"}))
    rows = _rows(admin, f"SELECT `key`, data, created_at, user_id FROM `{table}`")
    assert [(k, json.loads(d), c, u) for k, d, c, u in rows] == [(new, {"x": "1"}, t0, b"bob")]
    # A rename onto its own key is an update: it neither moves nor creates.
    assert store.save(new, Update(set={"y": 2}, expires_at=clock() + 60, replaces=new, created_at=clock()))
    record = store.load(new)
    assert record is not None and record.data == {"x": 1, "y": 2}
    store.destroy(new)
    assert store.save(new, Update(set={"y": 2}, expires_at=clock() + 60, replaces=new, created_at=clock())) is False
    assert store.load(new) is None


def test_rename_onto_a_taken_key_fails_and_leaves_the_old_row(store: MySQLStore) -> None:
    # Never happens (a new key is a fresh random ID), but must not lose the session if it did.
    old = _create(store, {"a": 1})
    taken = _create(store, {"b": 2})
    with pytest.raises(StoreError, match="Duplicate entry") as info:
        _rename(store, old, taken)
    assert old not in str(info.value) and taken not in str(info.value)
    record = store.load(old)
    assert record is not None and record.data == {"a": 1}
    record = store.load(taken)
    assert record is not None and record.data == {"b": 2}


# -- construction and URLs ---------------------------------------------------------------------------


def test_from_url_takes_its_options() -> None:
    store = MySQLStore.from_url(
        "mysql://shop%40app:p%40ss%3Aw%2Frd@db.example:3307/my%5Fapp?table=my_sessions&connect_timeout=2"
        "&read_timeout=9&write_timeout=8&lock_wait_timeout=3"
    )
    assert store.table == "my_sessions"
    assert (store.connect_timeout, store.read_timeout, store.write_timeout) == (2.0, 9.0, 8.0)
    assert store.lock_wait_timeout == 3 and store.create is True
    assert repr(store) == "<MySQLStore db.example:3307/my_app table='my_sessions'>"
    assert "p@ss" not in repr(store) and "shop" not in repr(store)
    store.close()  # never connected: nothing to close, no error
    defaults = MySQLStore.from_url("mariadb://db.example/app", create=False)
    assert repr(defaults) == "<MySQLStore db.example:3306/app table='wsgisession_sessions'>"
    assert defaults.create is False
    assert (defaults.connect_timeout, defaults.read_timeout, defaults.lock_wait_timeout) == (5.0, 15.0, 5)
    via_socket = MySQLStore.from_url("mysql://u@localhost/app?unix_socket=/run/mysqld/mysqld.sock")
    assert repr(via_socket) == "<MySQLStore /run/mysqld/mysqld.sock/app table='wsgisession_sessions'>"
    assert isinstance(from_url("MySQL://u@h/app"), MySQLStore)


@pytest.mark.parametrize(
    "url",
    [
        pytest.param("postgresql://u:s3cret@h/db", id="scheme"),
        pytest.param("mysql://u:s3cret@h", id="no-database"),
        pytest.param("mysql://u:s3cret@h/", id="empty-database"),
        pytest.param("mysql://u:s3cret@h/a/b", id="two-databases"),
        pytest.param("mysql://u:s3cret@h:port/db", id="port"),
        pytest.param("mysql://u:s3cret@h:70000/db", id="port-range"),
        pytest.param("mysql://u:s3cret@h/db?bogus=1", id="unknown-option"),
        pytest.param("mysql://u:s3cret@h/db?table=a.b", id="table"),
        pytest.param("mysql://u:s3cret@h/db?table=a&table=b", id="twice"),
        pytest.param("mysql://u:s3cret@h/db?lock_wait_timeout=1.5", id="int-option"),
        pytest.param("mysql://u:s3cret@h/db?lock_wait_timeout=0", id="lock-wait-zero"),
        pytest.param("mysql://u:s3cret@h/db?read_timeout=0", id="read-timeout-zero"),
        pytest.param("mysql://u:s3cret@h/db?read_timeout=inf", id="read-timeout-inf"),
        pytest.param("mysql://u:s3cret@h/db?read_timeout=5&lock_wait_timeout=5", id="read-not-past-lock-wait"),
    ],
)
def test_bad_url_is_a_configuration_error_without_the_password(url: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        MySQLStore.from_url(url)
    assert "s3cret" not in str(info.value)


def test_bad_arguments_are_configuration_errors() -> None:
    with pytest.raises(ConfigurationError):
        MySQLStore(database="")
    with pytest.raises(ConfigurationError):
        MySQLStore(database="app", port=0)
    with pytest.raises(ConfigurationError):
        MySQLStore(database="app", lock_wait_timeout=True)
    with pytest.raises(ConfigurationError):
        MySQLStore(database="app", connect_timeout=-1)
    with pytest.raises(ConfigurationError):
        MySQLStore.from_url(None)  # type: ignore[arg-type]


def test_a_wrong_password_is_unavailable_and_never_shown(mysql_url: str, table: str, login: tuple[str, str]) -> None:
    wrong = "n0t-" + login[1]
    store = MySQLStore.from_url(_as((login[0], wrong), mysql_url, table))
    try:
        with pytest.raises(StoreUnavailableError, match="Access denied") as info:
            store.load(_key())
        message = str(info.value)
        assert wrong not in message and login[1] not in message
        assert "127.0.0.1:3306/test" in message
    finally:
        store.close()


def test_no_connection_before_first_use(mysql_url: str, table: str, admin: Any, login: tuple[str, str]) -> None:
    store = MySQLStore.from_url(_as(login, mysql_url, table))
    try:
        assert _connections(admin, login[0]) == []  # a preforking master that never uses it holds nothing
        store.load(_key())
        assert len(_connections(admin, login[0])) == 1
        store.load(_key())
        assert len(_connections(admin, login[0])) == 1, "the idle connection is reused"
    finally:
        store.close()
    deadline = time.monotonic() + 5
    while _connections(admin, login[0]) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert _connections(admin, login[0]) == []


def test_closed_store_refuses_use(store: MySQLStore) -> None:
    _create(store, {"a": 1})
    store.close()
    store.close()
    with pytest.raises(StoreUnavailableError, match="closed"):
        store.load(_key())


def test_a_thread_burst_leaves_a_bounded_number_of_idle_connections(
    mysql_url: str, table: str, admin: Any, login: tuple[str, str]
) -> None:
    store = MySQLStore.from_url(_as(login, mysql_url, table))
    try:
        key = _create(store, {})
        servers.at_once(*[partial(store.save, key, Update(set={f"k{i}": i}, expires_at=2e9)) for i in range(24)])
        record = store.load(key)
        assert record is not None and len(record.data) == 24
        assert len(_connections(admin, login[0])) <= 16
    finally:
        store.close()


# -- failures ------------------------------------------------------------------------------------------


def killing_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    """Counts, killing the store's connections between the session's load and its save."""
    session = get_session(environ)
    session["n"] = session.get("n", 0) + 1
    environ["test.kill"]()
    body = json.dumps(session["n"]).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


def test_connections_killed_mid_request_are_replaced(
    mysql_url: str, table: str, admin: Any, login: tuple[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    store = MySQLStore.from_url(_as(login, mysql_url, table))
    app = webtest.TestApp(SessionMiddleware(killing_app, SECRET, store))
    kills: list[int] = []
    try:
        assert app.get("/", extra_environ={"test.kill": lambda: None}).json == 1
        with caplog.at_level(logging.WARNING, logger="wsgisession.store"):
            for n in range(2, 5):
                res = app.get("/", extra_environ={"test.kill": lambda: kills.append(_kill_all(admin, login[0]))})
                assert res.json == n, "the save after the kill lands on a fresh connection"
        assert all(kills), "each request had a connection to kill"
        assert any("lost a connection" in r.getMessage() for r in caplog.records)
        res = webtest.TestApp(SessionMiddleware(demo_app, SECRET, store)).get(
            "/read", headers={"Cookie": f"session={app.cookies['session']}"}
        )
        assert res.json == 4
    finally:
        store.close()


def test_a_statement_killed_while_it_waits_for_a_lock_is_replayed(
    mysql_url: str, table: str, admin: Any, login: tuple[str, str]
) -> None:
    store = MySQLStore.from_url(_as(login, mysql_url, table))
    try:
        key = _create(store, {"a": 1})
        result: dict[str, Any] = {}

        def save() -> None:
            try:
                result["saved"] = store.save(key, Update(set={"b": 2}, expires_at=_clock.now() + 60))
            except BaseException as exc:
                result["error"] = exc

        locker = servers.mysql_connect(mysql_url, autocommit=False)
        try:
            _rows(locker, f"SELECT 1 FROM `{table}` WHERE `key` = %s FOR UPDATE", key)
            thread = threading.Thread(target=save)
            thread.start()
            _wait_for_lock_waiters(admin, login[0], 1)
            assert _kill_all(admin, login[0]) == 1
            time.sleep(0.2)
            locker.rollback()
        finally:
            locker.close()
        thread.join(10)
        assert result == {"saved": True}
        record = store.load(key)
        assert record is not None and record.data == {"a": 1, "b": 2}
    finally:
        store.close()


def test_a_dead_fresh_connection_is_not_retried(
    mysql_url: str, table: str, admin: Any, login: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A connection just opened that fails is the server failing, not a stale connection: report it.
    store = MySQLStore.from_url(_as(login, mysql_url, table))
    try:
        store.load(_key())
        connect = store._connect
        opened: list[int] = []

        def connect_and_kill() -> Any:
            conn: Any = connect()
            opened.append(conn.thread_id())
            _do(admin, f"KILL {conn.thread_id()}")
            return conn

        monkeypatch.setattr(store, "_connect", connect_and_kill)
        _kill_all(admin, login[0])
        with pytest.raises(StoreUnavailableError, match=r"\(2013\) Lost connection"):
            store.load(_key())
        assert len(opened) == 1
    finally:
        store.close()


def test_lock_wait_timeout_is_a_timeout_and_writes_nothing(mysql_url: str, table: str) -> None:
    store = MySQLStore.from_url(f"{mysql_url}?table={table}&lock_wait_timeout=1&read_timeout=5")
    try:
        key = _create(store, {"a": 1})
        locker = servers.mysql_connect(mysql_url, autocommit=False)
        try:
            _rows(locker, f"SELECT 1 FROM `{table}` WHERE `key` = %s FOR UPDATE", key)
            started = time.monotonic()
            with pytest.raises(StoreTimeoutError, match="lock_wait_timeout=1s") as info:
                store.save(key, Update(set={"a": 2, "b": 3}, expires_at=_clock.now() + 60))
            assert time.monotonic() - started < 4
            assert key not in str(info.value)
            with pytest.raises(StoreTimeoutError):
                store.destroy(key)
            locker.rollback()
        finally:
            locker.close()
        record = store.load(key)
        assert record is not None and record.data == {"a": 1}
        assert store.save(key, Update(set={"a": 2}, expires_at=_clock.now() + 60))
    finally:
        store.close()


def test_sql_errors_are_store_errors_without_the_key(store: MySQLStore, admin: Any, table: str) -> None:
    key = _create(store, {"a": 1})
    _do(admin, f"ALTER TABLE `{table}` ADD CONSTRAINT no_b CHECK (JSON_EXTRACT(data, '$.b') IS NULL)")
    with pytest.raises(StoreError, match="no_b") as info:
        store.save(key, Update(set={"b": 1}, expires_at=_clock.now() + 60))
    assert type(info.value) is StoreError
    assert key not in str(info.value)
    record = store.load(key)
    assert record is not None and record.data == {"a": 1}


def test_unreachable_server_is_unavailable() -> None:
    port = free_port()
    store = MySQLStore.from_url(f"mysql://u:s3cret@127.0.0.1:{port}/test?connect_timeout=1")
    try:
        started = time.monotonic()
        with pytest.raises(StoreUnavailableError) as info:
            store.load(_key())
        assert time.monotonic() - started < 3
        message = str(info.value)
        assert f"127.0.0.1:{port}/test" in message and "s3cret" not in message
    finally:
        store.close()


class ThrowawayMariaDB:
    """A mariadbd of the test's own on a free loopback port, to kill, pause and restart at will."""

    def __init__(self, workdir: Path) -> None:
        self.binary = shutil.which("mariadbd") or "/usr/sbin/mariadbd"
        installer = shutil.which("mariadb-install-db")
        if not os.access(self.binary, os.X_OK) or installer is None:
            servers.unavailable("mariadbd or mariadb-install-db is not installed: cannot start a throwaway server")
        self.workdir = workdir
        self.port = free_port()
        # 20 MB on disk rather than 110 (the default redo log is 96 MB).
        self.small = ["--innodb-log-file-size=4M", "--innodb-buffer-pool-size=16M"]
        user = ["--user=root"] if os.geteuid() == 0 else []
        done = subprocess.run(
            [
                installer,
                "--no-defaults",
                *user,
                f"--datadir={workdir / 'data'}",
                "--skip-test-db",
                "--auth-root-authentication-method=normal",
                *self.small,
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        if done.returncode != 0:
            pytest.fail(f"mariadb-install-db failed: {done.stderr[-2000:]}")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mysql://root@127.0.0.1:{self.port}/test"

    def start(self, timeout: float = 20.0) -> None:
        """Start the server and wait until it takes connections."""
        import pymysql

        user = ["--user=root"] if os.geteuid() == 0 else []
        self.proc = subprocess.Popen(
            [
                self.binary,
                "--no-defaults",
                *user,
                f"--datadir={self.workdir / 'data'}",
                f"--port={self.port}",
                "--bind-address=127.0.0.1",
                f"--socket={self.workdir / 'sock'}",
                f"--pid-file={self.workdir / 'pid'}",
                *self.small,
                "--skip-log-bin",
                f"--log-error={self.workdir / 'error.log'}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                pytest.fail(f"throwaway mariadbd exited with {self.proc.returncode}")
            try:
                conn = pymysql.connect(host="127.0.0.1", port=self.port, user="root", connect_timeout=1)
            except pymysql.err.MySQLError:
                if time.monotonic() > deadline:
                    pytest.fail(f"throwaway mariadbd on port {self.port} did not answer within {timeout}s")
                time.sleep(0.05)
                continue
            with conn:
                conn.cursor().execute("CREATE DATABASE IF NOT EXISTS test")
            return

    def kill(self) -> None:
        """SIGKILL the server, as a crash would, and reap it."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.proc = None

    def pause(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def __enter__(self) -> ThrowawayMariaDB:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()


def server_like(app: Any) -> Any:
    """What a WSGI server does with an exception before headers are sent: a bare 500."""

    def wrapper(environ: dict[str, Any], start_response: Any) -> Any:
        try:
            return app(environ, start_response)
        except StoreError:
            start_response("500 Internal Server Error", [("Content-Type", "text/plain")], sys.exc_info())
            return [b"store down"]

    return wrapper


def test_server_stopped_is_a_clear_error_and_a_restart_recovers(tmp_path: Path) -> None:
    with ThrowawayMariaDB(tmp_path) as server:
        store = MySQLStore.from_url(f"{server.url}?connect_timeout=1&read_timeout=3&lock_wait_timeout=1")
        app = webtest.TestApp(server_like(SessionMiddleware(demo_app, SECRET, store)))
        try:
            assert app.get("/incr").json == 1
            cookie = app.cookies["session"]

            server.kill()
            for path in ("/read", "/incr"):
                started = time.monotonic()
                res = app.get(path, status=500)
                assert time.monotonic() - started < 5, "no hang: the store's timeouts are finite"
                assert "Set-Cookie" not in res.headers, "the user's good cookie is not overwritten"
            with pytest.raises(StoreUnavailableError, match=f"cannot reach MySQL at 127.0.0.1:{server.port}/test"):
                store.load(_key())
            assert app.cookies["session"] == cookie

            server.start()  # the same data directory: the session survived the crash
            assert app.get("/incr").json == 2, "requests work again without restarting the app"
        finally:
            store.close()


def test_a_server_that_stops_answering_is_a_timeout_not_a_hang(tmp_path: Path) -> None:
    with ThrowawayMariaDB(tmp_path) as server:
        store = MySQLStore.from_url(
            f"{server.url}?connect_timeout=1&read_timeout=2&write_timeout=2&lock_wait_timeout=1"
        )
        try:
            key = _create(store, {"a": 1})
            server.pause()
            try:
                for _ in range(2):  # the idle connection, then a new one whose greeting never comes
                    started = time.monotonic()
                    with pytest.raises(StoreTimeoutError, match="did not finish load in time"):
                        store.load(key)
                    assert time.monotonic() - started < 4
            finally:
                server.resume()
            record = store.load(key)
            assert record is not None and record.data == {"a": 1}
        finally:
            store.close()


# -- the command line ---------------------------------------------------------------------------------


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "wsgisession", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def test_the_command_line_on_mysql(store: MySQLStore, url: str, admin: Any, table: str) -> None:
    alice = [_bind(store, "alice") for _ in range(2)]
    _create(store, {"a": 1})
    _create(store, {"a": 1}, ttl=-1)
    result = _cli("count", url)
    assert (result.returncode, result.stdout.strip(), result.stderr) == (0, "3", "")
    result = _cli("list", url, "--user", "alice")
    assert result.returncode == 0 and len(result.stdout.strip().splitlines()) == 3
    assert all(key not in result.stdout for key in alice)
    result = _cli("end", url, "--user", "alice")
    assert result.stdout.strip() == "ended 2 sessions of user 'alice'"
    result = _cli("prune", url, "--batch-size", "1")
    assert result.stdout.strip() == "removed 1 expired session"
    assert _cli("count", url).stdout.strip() == "1"


def test_the_command_line_never_makes_a_table(mysql_url: str, admin: Any) -> None:
    missing = servers.unique_name("wsgisession_missing")
    result = _cli("count", f"{mysql_url}?table={missing}")
    assert result.returncode == 2
    assert f"table '{missing}' does not exist" in result.stderr
    assert _rows(admin, f"SHOW TABLES LIKE '{missing}'") == []


def test_the_command_line_hides_the_password(mysql_url: str, table: str, login: tuple[str, str]) -> None:
    wrong = "n0t-" + login[1]
    result = _cli("count", _as((login[0], wrong), mysql_url, table))
    assert result.returncode == 2
    assert "Access denied" in result.stderr and wrong not in result.stderr + result.stdout
