"""What is particular to SQLiteStore: files, processes, failures."""

from __future__ import annotations

import multiprocessing
import os
import sqlite3
import stat
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from wsgisession import (
    ConfigurationError,
    SQLiteStore,
    StoreError,
    StoreTimeoutError,
    StoreUnavailableError,
    from_url,
)
from wsgisession.ids import new_id, store_key
from wsgisession.stores.base import Update
from wsgisession.testing import Clock


def create(store: SQLiteStore, data: dict[str, object], ttl: float = 600) -> str:
    key = store_key(new_id())
    import time

    now = time.time()
    assert store.save(key, Update(set=data, expires_at=now + ttl, created_at=now))
    return key


def test_database_and_wal_files_are_private(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "s.db")
    create(store, {"a": 1})
    for name in ("s.db", "s.db-wal", "s.db-shm"):
        p = tmp_path / name
        if p.exists():
            assert stat.S_IMODE(p.stat().st_mode) & 0o077 == 0, name
    assert store._connect().execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    store.close()


def test_memory_database_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="MemoryStore"):
        SQLiteStore(":memory:")


def test_missing_directory_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="does not exist"):
        SQLiteStore(tmp_path / "nope" / "s.db")


@pytest.mark.parametrize(
    ("url", "path"),
    [
        pytest.param("sqlite:///relative.db", "relative.db", id="relative"),
        pytest.param("sqlite:////tmp/absolute.db", "/tmp/absolute.db", id="absolute"),
        pytest.param("sqlite:///with%20space.db", "with space.db", id="escaped"),
    ],
)
def test_url_paths(url: str, path: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    store = from_url(url)
    assert isinstance(store, SQLiteStore)
    assert str(store.path) == path


@pytest.mark.parametrize(
    "url",
    [
        "sqlite://",
        "sqlite:///",
        "sqlite://host/x.db",
        "sqlite:///x.db?bogus=1",
        "sqlite:///x.db?timeout=soon",
        "sqlite:///x.db?table=drop;table",
        "sqlite:///x.db?synchronous=maybe",
    ],
)
def test_bad_urls(url: str) -> None:
    with pytest.raises(ConfigurationError):
        from_url(url)


def test_table_name_is_checked(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="table name"):
        SQLiteStore(tmp_path / "s.db", table="x; DROP TABLE y")


def _merge_worker(path: str, key: str, n: int) -> None:
    import time

    store = SQLiteStore(path)
    for i in range(25):
        assert store.save(key, Update(set={f"p{n}-{i}": i}, expires_at=time.time() + 600))
    store.close()


def test_processes_changing_different_keys_all_land(tmp_path: Path) -> None:
    path = str(tmp_path / "s.db")
    store = SQLiteStore(path)
    key = create(store, {})
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_merge_worker, args=(path, key, n)) for n in range(8)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    record = store.load(key)
    assert record is not None
    assert len(record.data) == 200
    store.close()


def test_connection_is_not_carried_across_fork(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "s.db")
    key = create(store, {"a": 1})
    parent_conn = store._connect()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        try:
            ok = store._connect() is not parent_conn and store.load(key) is not None
            os.write(write, b"1" if ok else b"0")
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    assert os.read(read, 1) == b"1"
    assert store.load(key) is not None
    store.close()


def test_each_thread_has_its_own_connection(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "s.db")
    conns = []
    t = threading.Thread(target=lambda: conns.append(store._connect()))
    t.start()
    t.join()
    assert conns[0] is not store._connect()
    store.close()


def test_lock_held_too_long_is_a_timeout_error(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    store = SQLiteStore(path, timeout=0.2)
    key = create(store, {"a": 1})
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(StoreTimeoutError, match="write lock") as info:
            store.save(key, Update(set={"b": 2}, expires_at=9e9))
        assert key not in str(info.value)
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    record = store.load(key)
    assert record is not None
    assert record.data == {"a": 1}
    store.close()


def test_unreadable_database_is_a_store_error(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    path.write_bytes(b"this is not a database" * 100)
    store = SQLiteStore(path)
    with pytest.raises(StoreError, match="SQLiteStore") as info:
        store.load(store_key(new_id()))
    assert "not a usable SQLite database" in str(info.value)


def test_corrupt_record_is_absent(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = SQLiteStore(tmp_path / "s.db")
    key = create(store, {"a": 1})
    store._connect().execute(f"UPDATE {store.table} SET data = '{{not json' WHERE key = ?", (key,))
    assert store.load(key) is None
    assert "corrupt" in caplog.text
    assert store.save(key, Update(set={"b": 1}, expires_at=9e9)) is False
    store.close()


def test_prune_in_batches(tmp_path: Path, clock: Clock) -> None:
    store = SQLiteStore(tmp_path / "s.db")
    for _ in range(25):
        create(store, {"x": 1}, ttl=5)
    create(store, {"x": 1}, ttl=500)
    clock.advance(10)
    batches = list(store.prune_batches(batch_size=7))
    assert sum(batches) == 25
    assert all(0 < b <= 7 for b in batches)
    assert store.count() == 1
    with pytest.raises(ValueError, match="batch_size"):
        next(store.prune_batches(batch_size=0))
    store.close()


def test_each_prune_batch_is_committed_as_it_is_yielded(tmp_path: Path, clock: Clock) -> None:
    # The background pruner stops after a few batches: what they removed must stay removed.
    store = SQLiteStore(tmp_path / "s.db")
    for _ in range(30):
        make(store, clock, {}, ttl=5)
    clock.advance(10)
    batches = store.prune_batches(batch_size=10)
    assert next(batches) == 10
    other = sqlite3.connect(tmp_path / "s.db")
    assert other.execute(f"SELECT count(*) FROM {store.table}").fetchone()[0] == 20
    other.close()
    batches.close()
    store.close()


def test_closed_store_refuses_work(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "s.db")
    store.close()
    with pytest.raises(StoreError, match="closed"):
        store.load(store_key(new_id()))


_WRITER = """
import sys, time
from wsgisession.stores.base import Update
from wsgisession.stores.sqlite import SQLiteStore

store = SQLiteStore(sys.argv[1])
keys = sys.argv[2:]
seq = max(store.load(key).data["seq"] for key in keys)  # go on from the last run
print("ready", flush=True)
while True:
    seq += 1
    for key in keys:
        # Each record holds its sequence number and a value whose length depends
        # on it, so a torn record cannot pass for a whole one.
        store.save(key, Update(set={"seq": seq, "blob": "x" * (seq % 997) * 7}, expires_at=time.time() + 600))
"""


def test_writer_killed_at_random_points_never_tears_a_record(tmp_path: Path) -> None:
    import random
    import signal
    import subprocess
    import sys

    path = tmp_path / "crash.db"
    store = SQLiteStore(path)
    keys = [create(store, {"seq": 0, "blob": ""}) for _ in range(4)]
    store.close()
    last_seen = dict.fromkeys(keys, 0)
    for _ in range(12):
        with subprocess.Popen(
            [sys.executable, "-c", _WRITER, str(path), *keys], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
        ) as writer:
            assert writer.stdout is not None
            assert writer.stdout.readline().strip() == b"ready"
            time.sleep(random.uniform(0.01, 0.15))
            writer.send_signal(signal.SIGKILL)
            writer.wait(10)
        reader = SQLiteStore(path)
        assert reader._connect().execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        for key in keys:
            record = reader.load(key)
            assert record is not None
            seq = record.data["seq"]
            assert record.data["blob"] == "x" * (seq % 997) * 7, "a record is old or new, never torn"
            assert seq >= last_seen[key], "a committed write is never lost"
            last_seen[key] = seq
        reader.close()
    assert any(seq > 0 for seq in last_seen.values())


def test_full_disk_is_store_full_error_and_keeps_the_old_record(tmp_path: Path) -> None:
    from wsgisession import StoreFullError

    from . import servers

    with servers.tmpfs(tmp_path / "tiny", "size=256k"):
        store = SQLiteStore(tmp_path / "tiny" / "s.db")
        key = create(store, {"a": "small"})

        def fill() -> None:
            for i in range(50):
                store.save(key, Update(set={f"big{i}": "y" * 50_000}, expires_at=time.time() + 600))

        with pytest.raises(StoreFullError, match="full") as info:
            fill()
        assert key not in str(info.value)
        assert not store._connect().in_transaction, "a failed commit must not keep the write lock"
        record = store.load(key)
        assert record is not None
        assert record.data["a"] == "small"
        assert all(len(v) == 50_000 for k, v in record.data.items() if k != "a"), "no half-written value"
        store.close()


def make(store: SQLiteStore, clock: Clock, data: dict[str, object], ttl: float = 600) -> str:
    key = store_key(new_id())
    assert store.save(key, Update(set=data, expires_at=clock() + ttl, created_at=clock()))
    return key


def log_frames_of(store: SQLiteStore, action: Callable[[], object]) -> int:
    """How many pages *action* writes to the (emptied) write-ahead log."""
    conn = store._connect()
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    action()
    return int(conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()[1])


def test_a_save_by_the_same_user_leaves_the_user_index_alone(tmp_path: Path, clock: Clock) -> None:
    store = SQLiteStore(tmp_path / "s.db")
    for i in range(2000):  # enough rows that the table and its indexes span many pages
        make(store, clock, {"n": 0, "pad": "x" * 100}) if i % 2 else _bind(store, clock, f"user{i}")
    key, bound = make(store, clock, {"n": 0}, ttl=3600), _bind(store, clock, "alice")
    clock.advance(1200)
    for k, user in ((key, None), (bound, "alice")):
        assert store.save(k, Update(set={"n": 1}, expires_at=clock() + 86400, user_id=user))
    # The expiry moves a little: its index entry stays on its page, the row on its own.
    unbound = log_frames_of(store, lambda: store.save(key, Update(set={"n": 2}, expires_at=clock() + 86405)))
    same_user = log_frames_of(
        store, lambda: store.save(bound, Update(set={"n": 2}, expires_at=clock() + 86405, user_id="alice"))
    )
    assert 0 < same_user == unbound, "the user index entry is not rewritten"
    assert store.save(bound, Update(set={"n": 3}, expires_at=clock() + 86400, user_id="bob"))
    assert [k for k, _ in store.sessions_of("bob")] == [bound] and store.sessions_of("alice") == []
    record = store.load(key)
    assert record is not None and record.data == {"n": 2} and record.expires_at == clock() + 86405
    store.close()


def _bind(store: SQLiteStore, clock: Clock, user: str) -> str:
    key = store_key(new_id())
    assert store.save(key, Update(set={"n": 0}, expires_at=clock() + 3600, created_at=clock(), user_id=user))
    return key


def test_prune_finds_every_expired_session_old_or_recent(tmp_path: Path, clock: Clock) -> None:
    store = SQLiteStore(tmp_path / "s.db")
    now = 3600.0 * (int(clock()) // 3600 + 10) + 1800  # half past some hour
    clock.time = now - 7 * 3600
    long_gone = [make(store, clock, {"i": i}, ttl=3600) for i in range(30)]  # hours ago
    clock.time = now - 1000
    this_hour = [make(store, clock, {"i": i}, ttl=500 + (i % 2) * 1000) for i in range(250)]  # half expire before now
    live = [make(store, clock, {"i": i}, ttl=7200) for i in range(20)]
    clock.time = now
    expired_now = this_hour[::2]
    # A session renewed before it expired stays.
    renewed = expired_now.pop()
    clock.time = now - 600
    assert store.touch(renewed, now + 100)
    clock.time = now
    batches = list(store.prune_batches(batch_size=16))
    assert sum(batches) == len(long_gone) + len(expired_now)
    assert all(0 < b <= 16 for b in batches)
    for key in long_gone + expired_now:
        assert store.load(key) is None
    conn = store._connect()
    remaining = {row[0] for row in conn.execute("SELECT key FROM wsgisession_sessions")}
    assert remaining == set(this_hour[1::2]) | set(live) | {renewed}
    assert store.prune() == 0
    store.close()


_SCHEMA = (
    "CREATE TABLE wsgisession_sessions (key TEXT PRIMARY KEY NOT NULL, data TEXT NOT NULL, "
    "created_at REAL NOT NULL, expires_at REAL NOT NULL, user_id TEXT{}) WITHOUT ROWID"
)


@pytest.mark.parametrize("bucketed", [False, True], ids=["expiry-index", "hour-buckets"])
def test_a_table_of_an_earlier_release_opens_and_works(tmp_path: Path, clock: Clock, bucketed: bool) -> None:
    # Pre-releases indexed either the exact expiry (today's layout) or hour
    # buckets of it, in an extra NOT NULL column that a save today never fills.
    path = tmp_path / "s.db"
    old = sqlite3.connect(path)
    old.execute(_SCHEMA.format(", expiry_bucket INTEGER NOT NULL" if bucketed else ""))
    if bucketed:
        old.execute(
            "CREATE INDEX wsgisession_sessions_expiry_bucket ON wsgisession_sessions (expiry_bucket, created_at)"
        )
        old.execute(
            "CREATE INDEX wsgisession_sessions_user_id ON wsgisession_sessions (user_id) WHERE user_id IS NOT NULL"
        )
    else:
        old.execute("CREATE INDEX wsgisession_sessions_expires_at ON wsgisession_sessions (expires_at)")
    live, dead, bound = store_key(new_id()), store_key(new_id()), store_key(new_id())
    now = clock()
    rows = [
        (live, '{"a": 1}', now, now + 600, None),
        (dead, '{"a": 2}', now - 7200, now - 3600, None),
        (bound, '{"a": 3}', now, now + 600, "alice"),
    ]
    old.executemany(f"INSERT INTO wsgisession_sessions VALUES (?, ?, ?, ?, ?{', 0' * bucketed})", rows)
    old.commit()
    old.close()
    store = SQLiteStore(path)
    record = store.load(live)
    assert record is not None and record.data == {"a": 1}
    assert store.save(live, Update(set={"b": 2}, expires_at=now + 900))
    assert store.load(live).data == {"a": 1, "b": 2}  # type: ignore[union-attr]
    assert create(store, {"c": 3})
    assert [k for k, _ in store.sessions_of("alice")] == [bound]
    assert store.prune() == 1
    assert store.count() == 3
    conn = store._connect()
    assert "expiry_bucket" not in {row[1] for row in conn.execute("PRAGMA table_info(wsgisession_sessions)")}
    indexes = {row[1] for row in conn.execute("PRAGMA index_list(wsgisession_sessions)")}
    assert {"wsgisession_sessions_expires_at", "wsgisession_sessions_user_id"} <= indexes
    assert "wsgisession_sessions_expiry_bucket" not in indexes
    store.close()
    assert SQLiteStore(path, create=False).load(live) is not None, "a second opening finds it done"


def test_a_far_future_expiry_is_stored_exactly(tmp_path: Path) -> None:
    # Past what an SQLite INTEGER holds: kept exact, the session live, touchable and never pruned.
    store = SQLiteStore(tmp_path / "s.db")
    key = store_key(new_id())
    now = time.time()
    assert store.save(key, Update(set={"a": 1}, expires_at=1e300, created_at=now))
    record = store.load(key)
    assert record is not None and record.expires_at == 1e300
    assert store.touch(key, 1e301)
    assert store.load(key).expires_at == 1e301  # type: ignore[union-attr]
    assert store.prune() == 0
    assert store.load(key) is not None
    store.close()


def _destroy_racing(
    store: SQLiteStore, how: str, user: str, old: str, new: str, barrier: threading.Barrier, outcome: list[object]
) -> None:
    """End *user*'s session *old* the way *how* says; note how many it ended, or whether *new* existed after."""
    barrier.wait()
    if how == "destroy_user":
        outcome.append(store.destroy_user(user))
    else:
        store.destroy(old)
        outcome.append(store.load(new) is not None)


@pytest.mark.parametrize("how", ["destroy", "destroy_user"])
def test_a_rename_is_atomic_against_a_concurrent_destroy(tmp_path: Path, how: str) -> None:
    # A rename that read the old record, then wrote the new one in a second
    # step, would bring back a session destroyed in between: the destroyer
    # would find no new record after its destroy, and yet one would appear.
    store = SQLiteStore(tmp_path / "s.db")
    other = SQLiteStore(tmp_path / "s.db")
    for i in range(200):
        user, now = f"user{i}", time.time()
        old, new = store_key(new_id()), store_key(new_id())
        assert store.save(old, Update(set={"a": 1}, created_at=now, expires_at=now + 600, user_id=user))
        barrier = threading.Barrier(2)
        outcome: list[object] = []
        thread = threading.Thread(target=_destroy_racing, args=(other, how, user, old, new, barrier, outcome))
        thread.start()
        barrier.wait()
        renamed = store.save(new, Update(set={"b": 2}, expires_at=time.time() + 600, replaces=old))
        thread.join()
        assert store.load(old) is None
        if how == "destroy":
            assert renamed == (store.load(new) is not None)
            assert [k for k, _ in store.sessions_of(user)] == ([new] if renamed else [])
            if outcome == [False]:
                assert renamed is False, "a rename brought back a session destroyed before it wrote"
        else:
            assert outcome == [1], "one live session, ended once, under whichever key it had"
            assert store.load(new) is None
            assert store.sessions_of(user) == []
    store.close()
    other.close()


# -- create=False: the command line never makes a store ---------------------------------------


def test_missing_file_without_create_is_unavailable_and_not_made(tmp_path: Path) -> None:
    path = tmp_path / "missing.db"
    with pytest.raises(StoreUnavailableError, match=r"missing\.db") as info:
        SQLiteStore(path, create=False)
    assert "no such database file" in str(info.value)
    with pytest.raises(StoreUnavailableError, match=r"missing\.db"):
        from_url(f"sqlite:///{path}", create=False)
    assert list(tmp_path.iterdir()) == []


def test_missing_table_without_create_is_unavailable_and_not_made(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    sqlite3.connect(path).execute("CREATE TABLE unrelated (x)").connection.close()
    store = SQLiteStore(path, create=False)
    with pytest.raises(StoreUnavailableError, match="no table 'wsgisession_sessions'"):
        store.count()
    with pytest.raises(StoreUnavailableError, match="no table"):
        store.load(store_key(new_id()))
    store.close()
    tables = {row[0] for row in sqlite3.connect(path).execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert tables == {"unrelated"}


def test_existing_store_opens_without_create(tmp_path: Path) -> None:
    made = SQLiteStore(tmp_path / "s.db", table="mine")
    key = create(made, {"a": 1})
    made.close()
    store = from_url(f"sqlite:///{tmp_path}/s.db?table=mine", create=False)
    assert isinstance(store, SQLiteStore)
    assert store.load(key) is not None
    assert store.count() == 1
    store.close()


@pytest.mark.parametrize("command", ["count", "check", "prune"])
def test_command_line_on_a_missing_database_exits_2_and_makes_nothing(tmp_path: Path, command: str) -> None:
    from .test_cli import run

    path = tmp_path / "missing.db"
    result = run(command, f"sqlite:///{path}", env={"SESSION_SECRET": "s" * 40})
    assert result.returncode == 2, result.stdout
    assert "missing.db" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


# -- options and failures -------------------------------------------------------------------


def test_url_options_are_applied(tmp_path: Path) -> None:
    store = from_url(f"sqlite:///{tmp_path}/s.db?table=my_sessions&timeout=0.25&synchronous=full")
    assert isinstance(store, SQLiteStore)
    assert (store.table, store.timeout) == ("my_sessions", 0.25)
    conn = store._connect()
    assert conn.execute("PRAGMA busy_timeout").fetchone()[0] == 250
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert conn.execute("SELECT count(*) FROM my_sessions").fetchone()[0] == 0
    store.close()


@pytest.mark.parametrize("query", ["timeout=0", "timeout=-1", "timeout=inf", "table=a&table=b", "mode=ro"])
def test_bad_url_options(tmp_path: Path, query: str) -> None:
    with pytest.raises(ConfigurationError):
        from_url(f"sqlite:///{tmp_path}/s.db?{query}")


def test_clock_is_the_stores_own(tmp_path: Path) -> None:
    clock = Clock()
    store = SQLiteStore(tmp_path / "s.db", clock=clock)
    key = make(store, clock, {"a": 1}, ttl=60)
    assert store.load(key) is not None
    clock.advance(61)
    assert store.load(key) is None
    assert store.count() == 0
    assert store.touch(key, clock() + 60) is False
    assert store.prune() == 1
    store.close()


def test_a_path_that_cannot_be_opened_is_unavailable(tmp_path: Path) -> None:
    (tmp_path / "dir.db").mkdir()
    store = SQLiteStore(tmp_path / "dir.db")
    with pytest.raises(StoreUnavailableError, match="writable") as info:
        store.load(store_key(new_id()))
    assert "dir.db" in str(info.value)
    store.close()
