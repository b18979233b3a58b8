"""SQLiteStore: sessions in one SQLite file, shared by every worker process."""

from __future__ import annotations

import math
import os
import random
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import unquote, urlsplit

from .. import _json
from ..errors import ConfigurationError, StoreError, StoreFullError, StoreTimeoutError, StoreUnavailableError
from .base import Record, StoreBase, Update, log, positive_seconds, query_options

_IDENTIFIER_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")


def _check_identifier(name: str) -> str:
    if not name or len(name) > 63 or not set(name) <= _IDENTIFIER_CHARS or name[0].isdigit():
        raise ConfigurationError(f"table name {name!r} must be letters, digits and underscores")
    return name


#: Width, in seconds, of the expiry buckets that prune() finds sessions by. The
#: index holds a session's bucket, not its exact expiry: a save that moves the
#: expiry within the same hour leaves the index alone, and rewrites only the
#: session's own row (indexing the exact expiry writes two more pages per save,
#: which made an update 1.5x slower, measured at 1,000 and 200,000 sessions).
_BUCKET = 3600
_BUCKET_LIMIT = 2**62


def _bucket(expires_at: float) -> int:
    """The expiry bucket of *expires_at*: every expiry in bucket b is before (b + 1) * _BUCKET."""
    if not math.isfinite(expires_at):
        return _BUCKET_LIMIT if expires_at > 0 else -_BUCKET_LIMIT
    return max(-_BUCKET_LIMIT, min(_BUCKET_LIMIT, math.floor(expires_at / _BUCKET)))


@contextmanager
def _write_transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """A ``BEGIN IMMEDIATE`` transaction: committed at the end, rolled back on error."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        # A failed COMMIT (disk full) may leave the transaction open, holding the write lock.
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


class SQLiteStore(StoreBase):
    """Sessions in a SQLite database file, safe across threads and gunicorn workers.

    The database runs in WAL mode, so readers never wait for a writer. Every
    read-modify-write runs in a ``BEGIN IMMEDIATE`` transaction, so two
    processes changing different keys of one session both land. Connections
    are opened lazily, one per thread, and never carried across ``fork()``:
    a process that finds itself forked opens its own.

    :param path: the database file.
    :param table: the table's name.
    :param create: make the file and the table if they do not exist. With
        ``False`` a missing file raises :class:`~wsgisession.errors.StoreUnavailableError`
        here, a missing table on first use.
    :param timeout: seconds to wait for another process's write lock (SQLite's
        ``busy_timeout``) before :class:`~wsgisession.errors.StoreTimeoutError`.
    :param synchronous: SQLite's ``synchronous`` pragma. ``"NORMAL"`` (the
        default) survives a crash of the process; ``"FULL"`` also survives a
        power loss, at the cost of an fsync per write.
    :param clock: see :class:`~wsgisession.stores.base.StoreBase`.
    """

    failures = (sqlite3.Error,)

    def __init__(
        self,
        path: str | os.PathLike[str] = "sessions.sqlite3",
        *,
        table: str = "wsgisession_sessions",
        create: bool = True,
        timeout: float = 5.0,
        synchronous: str = "NORMAL",
        clock: Callable[[], float] | None = None,
    ) -> None:
        super().__init__(clock=clock)
        self.path = Path(path)
        if str(path) in ("", ":memory:") or str(path).startswith("file::memory:"):
            raise ConfigurationError(
                "SQLiteStore needs a file: an in-memory database is private to one connection (use MemoryStore)"
            )
        if not create and not self.path.is_file():
            raise StoreUnavailableError(
                f"SQLiteStore {self.path}: no such database file (not created: create=False); check the path"
            )
        parent = self.path.resolve().parent
        if not parent.is_dir():
            raise ConfigurationError(f"SQLiteStore: directory {parent} does not exist")
        if synchronous.upper() not in ("OFF", "NORMAL", "FULL", "EXTRA"):
            raise ConfigurationError(f"SQLiteStore: synchronous must be NORMAL, FULL or EXTRA, not {synchronous!r}")
        self.table = t = _check_identifier(table)
        self.create = create
        self.timeout = positive_seconds(timeout, "SQLiteStore timeout")
        self._synchronous = synchronous.upper()
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._all_lock = threading.Lock()
        self._pid = os.getpid()
        self._schema_ready = False
        self._closed = False
        self._sql_read = f"SELECT data, created_at, expires_at, user_id, expiry_bucket FROM {t} WHERE key = ?"
        self._sql_insert = (
            f"INSERT OR REPLACE INTO {t} (key, data, created_at, expires_at, user_id, expiry_bucket) "
            "VALUES (?, ?, ?, ?, ?, ?)"
        )
        # An UPDATE rewrites the index entries of every indexed column it
        # assigns, even to the value it already has: assign the bucket and the
        # user only when they change. Keyed by (bucket changes, user changes).
        self._sql_update = {
            (b, u): f"UPDATE {t} SET data = ?, expires_at = ?{', expiry_bucket = ?' * b}{', user_id = ?' * u} "
            "WHERE key = ?"
            for b in (False, True)
            for u in (False, True)
        }
        self._sql_touch = f"UPDATE {t} SET expires_at = ? WHERE key = ? AND expires_at > ? AND expiry_bucket = ?"
        self._sql_touch_bucket = f"UPDATE {t} SET expires_at = ?, expiry_bucket = ? WHERE key = ? AND expires_at > ?"
        self._sql_delete = f"DELETE FROM {t} WHERE key = ?"
        # Buckets before the current one hold only expired sessions; the current
        # one is walked in the index's order (creation time, then key), a
        # stretch of batch_size entries at a time, and its expired ones picked out.
        walk = f"FROM {t} INDEXED BY {t}_expiry_bucket WHERE expiry_bucket"
        self._sql_prune_past = f"DELETE FROM {t} WHERE key IN (SELECT key {walk} < ? LIMIT ?)"
        self._sql_prune_stretch = (
            f"SELECT created_at, key {walk} = ? AND (created_at, key) > (?, ?) "
            "ORDER BY created_at, key LIMIT 1 OFFSET ?"
        )
        self._sql_prune_current = (
            f"DELETE FROM {t} WHERE key IN (SELECT key {walk} = ? AND (created_at, key) > (?, ?) "
            "AND (created_at, key) <= (?, ?) AND expires_at <= ?)"
        )

    @classmethod
    def from_url(cls, url: str, *, create: bool = True) -> SQLiteStore:
        """Build from ``sqlite:///relative/path.db`` or ``sqlite:////absolute/path.db``.

        As in SQLAlchemy, three slashes then a relative path, four for an
        absolute one. Query parameters: ``table``, ``timeout``, ``synchronous``.
        """
        parts = urlsplit(url)
        if parts.scheme != "sqlite" or parts.netloc or not parts.path.startswith("/") or len(parts.path) < 2:
            raise ConfigurationError(f"not a SQLite URL (want sqlite:///path/to/file.db): {url!r}")
        options = query_options(url, {"table": str, "timeout": float, "synchronous": str})
        return cls(unquote(parts.path[1:]), create=create, **options)  # type: ignore[arg-type]

    def __repr__(self) -> str:
        return f"<SQLiteStore {str(self.path)!r} table={self.table!r}>"

    def _failure(self, action: str, exc: BaseException) -> StoreError:
        message = f"SQLiteStore {self.path}: {action} failed: {exc}"
        text = str(exc).lower()
        if "locked" in text or "busy" in text:
            return StoreTimeoutError(
                f"{message} (another process held the write lock for over {self.timeout:g} s: "
                "look for a long transaction, or raise timeout)"
            )
        if "full" in text:
            return StoreFullError(f"{message} (free space on its disk; the previous record is intact)")
        if "unable to open" in text or "readonly" in text or "read-only" in text:
            return StoreUnavailableError(f"{message} (the file and its directory must be writable by this user)")
        if "not a database" in text or "malformed" in text:
            return StoreError(f"{message} (not a usable SQLite database: check the path, or restore the file)")
        return StoreError(message)

    # -- connections ---------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        if self._closed:
            raise StoreError(f"SQLiteStore {self.path}: the store is closed")
        pid = os.getpid()
        if pid != self._pid:
            # Forked: the parent's connections belong to the parent. Forget them
            # without closing (closing would touch the parent's locks and WAL).
            self._pid = pid
            self._local = threading.local()
            self._all = []
            self._all_lock = threading.Lock()
        # One connection per thread: sqlite3 connections are not safe to share
        # between threads mid-transaction. check_same_thread is off only so
        # close() can close them all from one thread.
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None:
            return conn
        # mode=rw never makes a file: create=False must not leave one behind.
        uri = f"{self.path.absolute().as_uri()}?mode={'rwc' if self.create else 'rw'}"
        conn = sqlite3.connect(
            uri, uri=True, timeout=self.timeout, isolation_level=None, check_same_thread=False, cached_statements=32
        )
        try:
            conn.execute(f"PRAGMA busy_timeout = {min(int(self.timeout * 1000), 2**31 - 1)}")
            self._enable_wal(conn)
            conn.execute(f"PRAGMA synchronous = {self._synchronous}")
            self._restrict_permissions()
            if not self._schema_ready:
                self._prepare_table(conn)
        except BaseException:
            conn.close()
            raise
        self._local.conn = conn
        with self._all_lock:
            self._all.append(conn)
        return conn

    def _enable_wal(self, conn: sqlite3.Connection) -> None:
        # Switching a new database to WAL takes an exclusive lock for which
        # SQLite's busy handler does not wait: workers opening a fresh file at
        # the same moment get "database is locked" at once. Retry until the
        # timeout; once the file is in WAL mode, reading the mode takes no lock.
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                mode = str(conn.execute("PRAGMA journal_mode").fetchone()[0]).lower()
                if mode != "wal":
                    mode = str(conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]).lower()
                if mode != "wal":
                    log.warning("SQLiteStore %s: WAL mode unavailable (journal_mode=%s)", self.path, mode)
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc).lower() or time.monotonic() >= deadline:
                    raise
                time.sleep(0.005 + random.random() * 0.02)

    def _restrict_permissions(self) -> None:
        # The database holds live sessions: nobody but the app's user reads it.
        for suffix in ("", "-wal", "-shm"):
            p = Path(str(self.path) + suffix)
            try:
                if p.exists() and p.stat().st_mode & 0o077:
                    os.chmod(p, 0o600)
            except OSError:
                log.warning("SQLiteStore %s: could not restrict permissions of %s", self.path, p.name)

    def _prepare_table(self, conn: sqlite3.Connection) -> None:
        t = self.table
        with _write_transaction(conn):
            columns = {row[1] for row in conn.execute(f"PRAGMA table_info({t})")}
            if not columns and not self.create:
                raise StoreUnavailableError(
                    f"SQLiteStore {self.path}: no table {t!r} in the database (not created: create=False); "
                    "check the path and the table option"
                )
            conn.execute(
                f"CREATE TABLE IF NOT EXISTS {t} (key TEXT PRIMARY KEY NOT NULL, data TEXT NOT NULL, "
                "created_at REAL NOT NULL, expires_at REAL NOT NULL, user_id TEXT, expiry_bucket INTEGER NOT NULL"
                ") WITHOUT ROWID"
            )
            if columns and "expiry_bucket" not in columns:
                # A table from wsgisession 0.1's pre-releases, indexed on the
                # exact expiry: bucket its rows once.
                conn.execute(f"ALTER TABLE {t} ADD COLUMN expiry_bucket INTEGER NOT NULL DEFAULT 0")
                conn.create_function("wsgisession_bucket", 1, _bucket, deterministic=True)
                conn.execute(f"UPDATE {t} SET expiry_bucket = wsgisession_bucket(expires_at)")
                conn.execute(f"DROP INDEX IF EXISTS {t}_expires_at")
            # Within a bucket, by creation time: new sessions go to the end of
            # the current bucket's range instead of random pages all over it.
            conn.execute(f"CREATE INDEX IF NOT EXISTS {t}_expiry_bucket ON {t} (expiry_bucket, created_at)")
            conn.execute(f"CREATE INDEX IF NOT EXISTS {t}_user_id ON {t} (user_id) WHERE user_id IS NOT NULL")
        self._schema_ready = True

    # -- the primitives -------------------------------------------------------

    def _read(self, key: str, now: float) -> tuple[object, float, float, str | None] | None:
        row = self._connect().execute(self._sql_read, (key,)).fetchone()
        return None if row is None or row[2] <= now else row[:4]

    def _write(self, key: str, update: Update, now: float) -> bool:
        conn = self._connect()
        source = key if update.replaces is None else update.replaces
        bucket = _bucket(update.expires_at)
        with _write_transaction(conn):
            row = conn.execute(self._sql_read, (source,)).fetchone()
            current = self.decode(*row[:4]) if row is not None and row[2] > now else None
            if current is not None:
                data, created_at, user_id = current.data, current.created_at, current.user_id
            elif update.created_at is not None and update.replaces is None:
                data, created_at, user_id = {}, update.created_at, None
            else:
                return False
            text = _json.encode(update.apply(data))
            bound = user_id if update.user_id is None else update.user_id
            if source != key:
                # A rename: the old row, and its user index entry, go in this
                # same transaction.
                conn.execute(self._sql_delete, (source,))
            if current is None or source != key:
                conn.execute(self._sql_insert, (key, text, created_at, update.expires_at, bound, bucket))
            else:
                moved, rebound = bucket != row[4], bound != user_id
                args = (text, update.expires_at, *((bucket,) * moved), *((bound,) * rebound), key)
                conn.execute(self._sql_update[moved, rebound], args)
        return True

    def _touch(self, key: str, expires_at: float, now: float) -> bool:
        conn = self._connect()
        bucket = _bucket(expires_at)
        # Within the same bucket (the usual case) the index is left alone;
        # otherwise the second statement moves the session to its new one.
        if conn.execute(self._sql_touch, (expires_at, key, now, bucket)).rowcount == 1:
            return True
        return conn.execute(self._sql_touch_bucket, (expires_at, bucket, key, now)).rowcount == 1

    def _delete(self, key: str) -> None:
        self._connect().execute(self._sql_delete, (key,))

    def _prune(self, now: float) -> int:
        return sum(self._batches(now, 1000))

    def _batches(self, now: float, batch_size: int) -> Iterator[int]:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, not {batch_size!r}")
        conn = self._connect()
        current = _bucket(now)
        deleted = batch_size
        while deleted == batch_size:
            deleted = conn.execute(self._sql_prune_past, (current, batch_size)).rowcount
            if deleted:
                yield deleted
        after: tuple[float, object] | None = (-math.inf, "")
        while after is not None:
            end = conn.execute(self._sql_prune_stretch, (current, *after, batch_size - 1)).fetchone()
            # Fewer than batch_size entries left: up to the end of the index (a
            # BLOB sorts after every text, so after every key).
            upto = (math.inf, b"") if end is None else end
            deleted = conn.execute(self._sql_prune_current, (current, *after, *upto, now)).rowcount
            if deleted:
                yield deleted
            after = None if end is None else (end[0], end[1])

    def _close(self) -> None:
        with self._all_lock:
            conns, self._all = self._all, []
        if os.getpid() == self._pid:
            for conn in conns:
                conn.close()
        self._local = threading.local()
        self._closed = True

    # -- capabilities: BatchedPrune, UserIndex, Countable, IndexSized ----------

    def prune_batches(self, batch_size: int = 1000) -> Iterator[int]:
        """Delete expired sessions *batch_size* at a time, each batch its own short transaction."""
        with self._errors("prune"):
            yield from self._batches(self.now(), batch_size)

    def sessions_of(self, user_id: str) -> list[tuple[str, Record]]:
        """The live records bound to *user_id*, oldest first (an indexed lookup)."""
        sql = (
            f"SELECT key, data, created_at, expires_at, user_id FROM {self.table} "
            "WHERE user_id = ? AND expires_at > ? ORDER BY created_at"
        )
        with self._errors("list a user's sessions"):
            rows = self._connect().execute(sql, (user_id, self.now())).fetchall()
        found = [(row[0], self.decode(*row[1:])) for row in rows]
        return [(key, record) for key, record in found if record is not None]

    def destroy_user(self, user_id: str) -> int:
        """Delete every record bound to *user_id*; return how many were live."""
        with self._errors("end a user's sessions"):
            conn = self._connect()
            with _write_transaction(conn):
                # Count, then delete, in one write transaction (no RETURNING: it
                # needs SQLite 3.35, newer than some Pythons are built with).
                live = conn.execute(
                    f"SELECT count(*) FROM {self.table} WHERE user_id = ? AND expires_at > ?", (user_id, self.now())
                ).fetchone()[0]
                conn.execute(f"DELETE FROM {self.table} WHERE user_id = ?", (user_id,))
        return int(live)

    def count(self) -> int:
        """How many live sessions the store holds."""
        return self._scalar(f"SELECT count(*) FROM {self.table} WHERE expires_at > ?", self.now())

    def index_size(self) -> int:
        """How many records are bound to a user (for tests and diagnostics)."""
        return self._scalar(f"SELECT count(*) FROM {self.table} WHERE user_id IS NOT NULL")

    def _scalar(self, sql: str, *args: object) -> int:
        with self._errors("count sessions"):
            return int(self._connect().execute(sql, args).fetchone()[0])
