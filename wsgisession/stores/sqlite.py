"""SQLiteStore: sessions in one SQLite file, shared by every worker process."""

from __future__ import annotations

import os
import random
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from .. import _json
from ..errors import ConfigurationError, StoreError, StoreFullError, StoreTimeoutError, StoreUnavailableError
from ._sql import SQLStore, table_name
from .base import Update, log, positive_seconds, query_options


@contextmanager
def _write_transaction(conn: sqlite3.Connection) -> Iterator[None]:
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        # A failed COMMIT (disk full) may leave the transaction open, holding the write lock.
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


class SQLiteStore(SQLStore):
    """Sessions in a SQLite database file, safe across threads and gunicorn workers.

    The database runs in WAL mode, so readers never wait for a writer; every
    read-modify-write runs in a ``BEGIN IMMEDIATE`` transaction, on one
    connection per thread.

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
        table_name("SQLiteStore", table, 63)
        super().__init__(table=table, create=create, clock=clock)
        self.path = Path(path)
        self._where = repr(str(self.path))
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
            raise ConfigurationError(
                f"SQLiteStore: synchronous must be OFF, NORMAL, FULL or EXTRA, not {synchronous!r}"
            )
        self.timeout = positive_seconds(timeout, "SQLiteStore timeout")
        self._synchronous = synchronous.upper()
        self._after_fork()
        t = table
        self._sql_load = f"SELECT data, created_at, expires_at, user_id FROM {t} WHERE key = ?"
        self._sql_create = (
            f"INSERT OR IGNORE INTO {t} (key, data, created_at, expires_at, user_id) VALUES (?, ?, ?, ?, ?)"
        )
        self._sql_insert = (
            f"INSERT OR REPLACE INTO {t} (key, data, created_at, expires_at, user_id) VALUES (?, ?, ?, ?, ?)"
        )
        # An UPDATE rewrites an indexed column's index entry even to the same value: assign the user on change only.
        self._sql_update = {
            False: f"UPDATE {t} SET data = ?, expires_at = ? WHERE key = ?",
            True: f"UPDATE {t} SET data = ?, expires_at = ?, user_id = ? WHERE key = ?",
        }
        self._sql_touch = f"UPDATE {t} SET expires_at = ? WHERE key = ? AND expires_at > ?"
        self._sql_destroy = f"DELETE FROM {t} WHERE key = ?"
        self._sql_prune = f"DELETE FROM {t} WHERE key IN (SELECT key FROM {t} WHERE expires_at <= :now LIMIT :limit)"
        self._sql_sessions_of = (
            f"SELECT key, data, created_at, expires_at, user_id FROM {t} "
            "WHERE user_id = ? AND expires_at > ? ORDER BY created_at, key"
        )
        self._sql_count = f"SELECT count(*) FROM {t} WHERE expires_at > ?"
        self._sql_index_size = f"SELECT count(*) FROM {t} WHERE user_id IS NOT NULL"

    @classmethod
    def from_url(cls, url: str, *, create: bool = True) -> SQLiteStore:
        """Build from ``sqlite:///relative/path.db`` or ``sqlite:////absolute/path.db`` (as in SQLAlchemy).

        Query parameters: ``table``, ``timeout``, ``synchronous``.
        """
        parts = urlsplit(url)
        if parts.scheme != "sqlite" or parts.netloc or not parts.path.startswith("/") or len(parts.path) < 2:
            raise ConfigurationError(f"not a SQLite URL (want sqlite:///path/to/file.db): {url!r}")
        options = query_options(url, {"table": str, "timeout": float, "synchronous": str})
        return cls(unquote(parts.path[1:]), create=create, **options)  # type: ignore[arg-type]

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

    def _after_fork(self) -> None:
        # Forgotten, not closed: closing would touch the parent's locks and WAL.
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._all_lock = threading.Lock()

    def _connect(self) -> sqlite3.Connection:
        # One per thread (not safe to share mid-transaction); check_same_thread is off only for close().
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
        # Switching a new database to WAL takes an exclusive lock SQLite's busy handler does not
        # wait for: workers opening a fresh file at once get "database is locked". Retry until the
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
            schema = (
                "(key TEXT PRIMARY KEY NOT NULL, data TEXT NOT NULL, created_at REAL NOT NULL, "
                "expires_at REAL NOT NULL, user_id TEXT) WITHOUT ROWID"
            )
            if "expiry_bucket" in columns:
                # A table of 0.1's pre-releases, which indexed hour buckets of the expiry: copied without.
                conn.execute(f"CREATE TABLE {t}_unbucketed {schema}")
                conn.execute(f"INSERT INTO {t}_unbucketed SELECT key, data, created_at, expires_at, user_id FROM {t}")
                conn.execute(f"DROP TABLE {t}")
                conn.execute(f"ALTER TABLE {t}_unbucketed RENAME TO {t}")
            conn.execute(f"CREATE TABLE IF NOT EXISTS {t} {schema}")
            conn.execute(f"CREATE INDEX IF NOT EXISTS {t}_expires_at ON {t} (expires_at)")
            conn.execute(f"CREATE INDEX IF NOT EXISTS {t}_user_id ON {t} (user_id) WHERE user_id IS NOT NULL")
        self._schema_ready = True

    def _rows(self, statement: str, params: Any) -> Sequence[Any]:
        return self._connect().execute(statement, params).fetchall()

    def _execute(self, statement: str, params: Any) -> int:
        return self._connect().execute(statement, params).rowcount

    def _write(self, key: str, update: Update, now: float) -> bool:
        conn = self._connect()
        if update.created_at is not None and update.replaces is None:
            # A new session: one INSERT, unless a row holds the key already (a
            # record, live or expired, under the same key: then the transaction below).
            values = (key, _json.encode(update.apply({})), update.created_at, update.expires_at, update.user_id)
            if conn.execute(self._sql_create, values).rowcount == 1:
                return True
        source = key if update.replaces is None else update.replaces
        with _write_transaction(conn):
            row = conn.execute(self._sql_load, (source,)).fetchone()
            current = self.decode(*row) if row is not None and row[2] > now else None
            if current is not None:
                data, created_at, user_id = current.data, current.created_at, current.user_id
            elif update.created_at is not None and update.replaces is None:
                data, created_at, user_id = {}, update.created_at, None
            else:
                return False
            text = _json.encode(update.apply(data))
            bound = user_id if update.user_id is None else update.user_id
            if source != key:
                # A rename: the old row, and its user index entry, go in this same transaction.
                conn.execute(self._sql_destroy, (source,))
            if current is None or source != key:
                conn.execute(self._sql_insert, (key, text, created_at, update.expires_at, bound))
            elif bound != user_id:
                conn.execute(self._sql_update[True], (text, update.expires_at, bound, key))
            else:
                conn.execute(self._sql_update[False], (text, update.expires_at, key))
        return True

    def _destroy_user(self, user: str, now: float) -> int:
        conn = self._connect()
        with _write_transaction(conn):
            # Count, then delete, in one write transaction (RETURNING needs SQLite 3.35, newer than some Pythons').
            live = conn.execute(f"SELECT count(*) FROM {self.table} WHERE user_id = ? AND expires_at > ?", (user, now))
            count = int(live.fetchone()[0])
            conn.execute(f"DELETE FROM {self.table} WHERE user_id = ?", (user,))
        return count

    def _release(self) -> None:
        with self._all_lock:
            conns, self._all = self._all, []
        for conn in conns:
            conn.close()
        self._local = threading.local()
