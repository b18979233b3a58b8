"""SQLiteStore: sessions in one SQLite file, shared by every worker process."""

from __future__ import annotations

import math
import os
import random
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from .. import _clock, _json
from ..errors import ConfigurationError, StoreError, StoreFullError, StoreTimeoutError, StoreUnavailableError
from .base import Record, Update, log, security_log, valid_key

_IDENTIFIER_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")


def _check_identifier(name: str) -> str:
    if not name or len(name) > 63 or not set(name) <= _IDENTIFIER_CHARS or name[0].isdigit():
        raise ConfigurationError(f"table name {name!r} must be letters, digits and underscores")
    return name


#: Width, in seconds, of the expiry buckets that prune() finds sessions by. The
#: index holds a session's bucket, not its exact expiry: a save that moves the
#: expiry within the same hour leaves the index alone, and rewrites only the
#: session's own row (the index entry would be one more random page per save
#: in a large store).
_BUCKET = 3600
_BUCKET_LIMIT = 2**62


def _bucket(expires_at: float) -> int:
    """The expiry bucket of *expires_at*: every expiry in bucket b is before (b + 1) * _BUCKET."""
    if not math.isfinite(expires_at):
        return _BUCKET_LIMIT if expires_at > 0 else -_BUCKET_LIMIT
    return max(-_BUCKET_LIMIT, min(_BUCKET_LIMIT, math.floor(expires_at / _BUCKET)))


@contextmanager
def _write_transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """A ``BEGIN IMMEDIATE`` transaction: committed at the end unless the block rolled it back, rolled back on error."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    if conn.in_transaction:
        conn.execute("COMMIT")


class SQLiteStore:
    """Sessions in a SQLite database file, safe across threads and gunicorn workers.

    The database runs in WAL mode, so readers never wait for a writer. Every
    read-modify-write runs in a ``BEGIN IMMEDIATE`` transaction, so two
    processes changing different keys of one session both land. Connections
    are opened lazily, one per thread, and never carried across ``fork()``:
    a process that finds itself forked opens its own.

    :param path: the database file; created, with its table, on first use.
    :param table: the table's name.
    :param timeout: seconds to wait for another process's write lock before
        :class:`~wsgisession.errors.StoreTimeoutError`.
    :param synchronous: SQLite's ``synchronous`` pragma. ``"NORMAL"`` (the
        default) survives a crash of the process; ``"FULL"`` also survives a
        power loss, at the cost of an fsync per write.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] = "sessions.sqlite3",
        *,
        table: str = "wsgisession_sessions",
        timeout: float = 5.0,
        synchronous: str = "NORMAL",
    ) -> None:
        self.path = Path(path)
        if str(path) in ("", ":memory:") or str(path).startswith("file::memory:"):
            raise ConfigurationError(
                "SQLiteStore needs a file: an in-memory database is private to one connection (use MemoryStore)"
            )
        parent = self.path.resolve().parent
        if not parent.is_dir():
            raise ConfigurationError(f"SQLiteStore: directory {parent} does not exist")
        if synchronous.upper() not in ("OFF", "NORMAL", "FULL", "EXTRA"):
            raise ConfigurationError(f"SQLiteStore: synchronous must be NORMAL, FULL or EXTRA, not {synchronous!r}")
        self.table = _check_identifier(table)
        self.timeout = float(timeout)
        self._synchronous = synchronous.upper()
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._all_lock = threading.Lock()
        self._pid = os.getpid()
        self._schema_ready = False
        self._closed = False
        t = self.table
        self._sql_load = f"SELECT data, created_at, expires_at, user_id FROM {t} WHERE key = ?"
        self._sql_load_for_update = f"SELECT data, expires_at, user_id, expiry_bucket FROM {t} WHERE key = ?"
        self._sql_insert = (
            f"INSERT OR REPLACE INTO {t} (key, data, created_at, expires_at, user_id, expiry_bucket) "
            "VALUES (?, ?, ?, ?, ?, ?)"
        )
        # An UPDATE rewrites the index entries of every indexed column it
        # assigns, even to the value it already has: assign the bucket and the
        # user only when they change.
        self._sql_update = f"UPDATE {t} SET data = ?, expires_at = ? WHERE key = ?"
        self._sql_update_bucket = f"UPDATE {t} SET data = ?, expires_at = ?, expiry_bucket = ? WHERE key = ?"
        self._sql_set_user = f"UPDATE {t} SET user_id = ? WHERE key = ?"
        self._sql_touch = f"UPDATE {t} SET expires_at = ? WHERE key = ? AND expires_at > ? AND expiry_bucket = ?"
        self._sql_touch_bucket = f"UPDATE {t} SET expires_at = ?, expiry_bucket = ? WHERE key = ? AND expires_at > ?"
        self._sql_destroy = f"DELETE FROM {t} WHERE key = ?"
        # Buckets before the current one hold only expired sessions; the
        # current one is walked in the index's order (creation time, then key)
        # and its expired sessions picked out.
        self._sql_prune_past = (
            f"DELETE FROM {t} WHERE key IN "
            f"(SELECT key FROM {t} INDEXED BY {t}_expiry_bucket WHERE expiry_bucket < ? LIMIT ?)"
        )
        # The end of the next stretch of the walk: batch_size entries on.
        self._sql_prune_stretch = (
            f"SELECT created_at, key FROM {t} INDEXED BY {t}_expiry_bucket "
            "WHERE expiry_bucket = ? AND (created_at, key) > (?, ?) ORDER BY created_at, key LIMIT 1 OFFSET ?"
        )
        self._sql_prune_current = (
            f"DELETE FROM {t} WHERE key IN (SELECT key FROM {t} INDEXED BY {t}_expiry_bucket "
            "WHERE expiry_bucket = ? AND (created_at, key) > (?, ?) AND (created_at, key) <= (?, ?) "
            "AND expires_at <= ?)"
        )
        self._sql_prune_rest = (
            f"DELETE FROM {t} WHERE key IN (SELECT key FROM {t} INDEXED BY {t}_expiry_bucket "
            "WHERE expiry_bucket = ? AND (created_at, key) > (?, ?) AND expires_at <= ?)"
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
        options: dict[str, Any] = {}
        for name, value in parse_qsl(parts.query, keep_blank_values=True):
            if name == "table":
                options["table"] = value
            elif name == "timeout":
                try:
                    options["timeout"] = float(value)
                except ValueError:
                    raise ConfigurationError(f"SQLite URL: timeout must be a number, not {value!r}") from None
            elif name == "synchronous":
                options["synchronous"] = value
            else:
                raise ConfigurationError(f"SQLite URL: unknown option {name!r} (known: table, timeout, synchronous)")
        return cls(unquote(parts.path[1:]), **options)

    def __repr__(self) -> str:
        return f"<SQLiteStore {str(self.path)!r} table={self.table!r}>"

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
        try:
            conn = sqlite3.connect(
                self.path, timeout=self.timeout, isolation_level=None, check_same_thread=False, cached_statements=32
            )
            conn.execute(f"PRAGMA busy_timeout = {int(self.timeout * 1000)}")
            self._enable_wal(conn)
            conn.execute(f"PRAGMA synchronous = {self._synchronous}")
        except sqlite3.Error as exc:
            raise self._error("cannot open the database", exc) from exc
        self._restrict_permissions()
        self._local.conn = conn
        with self._all_lock:
            self._all.append(conn)
        if not self._schema_ready:
            self._create_schema(conn)
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

    def _create_schema(self, conn: sqlite3.Connection) -> None:
        t = self.table
        try:
            with _write_transaction(conn):
                conn.execute(
                    f"CREATE TABLE IF NOT EXISTS {t} ("
                    "key TEXT PRIMARY KEY NOT NULL, data TEXT NOT NULL, "
                    "created_at REAL NOT NULL, expires_at REAL NOT NULL, user_id TEXT, "
                    "expiry_bucket INTEGER NOT NULL"
                    ") WITHOUT ROWID"
                )
                columns = {row[1] for row in conn.execute(f"PRAGMA table_info({t})")}
                if "expiry_bucket" not in columns:
                    # A table from wsgisession 0.1's pre-releases, indexed on
                    # the exact expiry: bucket its rows once.
                    conn.execute(f"ALTER TABLE {t} ADD COLUMN expiry_bucket INTEGER NOT NULL DEFAULT 0")
                    conn.create_function("wsgisession_bucket", 1, _bucket, deterministic=True)
                    conn.execute(f"UPDATE {t} SET expiry_bucket = wsgisession_bucket(expires_at)")
                    conn.execute(f"DROP INDEX IF EXISTS {t}_expires_at")
                # Within a bucket, by creation time: new sessions go to the end of
                # the current bucket's range instead of random pages all over it.
                conn.execute(f"CREATE INDEX IF NOT EXISTS {t}_expiry_bucket ON {t} (expiry_bucket, created_at)")
                conn.execute(f"CREATE INDEX IF NOT EXISTS {t}_user_id ON {t} (user_id) WHERE user_id IS NOT NULL")
        except sqlite3.Error as exc:
            raise self._error("cannot create the sessions table", exc) from exc
        self._schema_ready = True

    def _error(self, what: str, exc: BaseException) -> StoreError:
        message = f"SQLiteStore {self.path}: {what}: {exc}"
        text = str(exc).lower()
        if isinstance(exc, sqlite3.OperationalError) and ("locked" in text or "busy" in text):
            return StoreTimeoutError(f"{message} (another process held the write lock for over {self.timeout:g} s)")
        if isinstance(exc, sqlite3.OperationalError) and "full" in text:
            return StoreFullError(message)
        if "unable to open" in text or "readonly" in text or "read-only" in text:
            return StoreUnavailableError(message)
        return StoreError(message)

    # -- the Store protocol ---------------------------------------------------

    def load(self, key: str) -> Record | None:
        if not valid_key(key):
            return None
        conn = self._connect()
        try:
            row = conn.execute(self._sql_load, (key,)).fetchone()
        except sqlite3.Error as exc:
            raise self._error("cannot read a session", exc) from exc
        if row is None or row[2] <= _clock.now():
            return None
        data = self._decode(row[0])
        if data is None:
            return None
        return Record(data, row[1], row[2], row[3])

    @staticmethod
    def _decode(text: object) -> dict[str, Any] | None:
        try:
            data = _json.decode(text)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            data = None
        if type(data) is not dict:
            security_log.warning(
                "corrupt session record in SQLiteStore treated as absent", extra={"security_event": "corrupt_record"}
            )
            return None
        return data

    def save(self, key: str, update: Update) -> bool:
        if not valid_key(key):
            raise ValueError("not a store key")
        conn = self._connect()
        now = _clock.now()
        try:
            with _write_transaction(conn):
                written = self._save_in_transaction(conn, key, update, now)
                if not written:
                    conn.execute("ROLLBACK")
        except sqlite3.Error as exc:
            raise self._error("cannot save a session", exc) from exc
        if not written:
            log.info("save dropped: the session was destroyed or expired meanwhile")
        return written

    def _save_in_transaction(self, conn: sqlite3.Connection, key: str, update: Update, now: float) -> bool:
        if update.replaces is not None and update.replaces != key:
            return self._rename_in_transaction(conn, update.replaces, key, update, now)
        row = conn.execute(self._sql_load_for_update, (key,)).fetchone()
        current = self._decode(row[0]) if row is not None and row[1] > now else None
        bucket = _bucket(update.expires_at)
        if current is not None:
            data = _json.encode(update.apply(current))
            if bucket == row[3]:
                conn.execute(self._sql_update, (data, update.expires_at, key))
            else:
                conn.execute(self._sql_update_bucket, (data, update.expires_at, bucket, key))
            if update.user_id is not None and update.user_id != row[2]:
                conn.execute(self._sql_set_user, (update.user_id, key))
            return True
        if update.created_at is None or update.replaces is not None:
            return False
        data = _json.encode(update.apply({}))
        conn.execute(self._sql_insert, (key, data, update.created_at, update.expires_at, update.user_id, bucket))
        return True

    def _rename_in_transaction(self, conn: sqlite3.Connection, old: str, key: str, update: Update, now: float) -> bool:
        """Move *old*'s live record to *key* with *update* applied; ``False`` if it is gone."""
        if not valid_key(old):
            return False
        row = conn.execute(self._sql_load, (old,)).fetchone()
        current = self._decode(row[0]) if row is not None and row[2] > now else None
        if current is None:
            return False
        # The user index is the user_id column: deleting the old row and
        # inserting the new one, in one transaction, moves the entry with it.
        user_id = row[3] if update.user_id is None else update.user_id
        conn.execute(self._sql_destroy, (old,))
        data = _json.encode(update.apply(current))
        conn.execute(self._sql_insert, (key, data, row[1], update.expires_at, user_id, _bucket(update.expires_at)))
        return True

    def touch(self, key: str, expires_at: float) -> bool:
        if not valid_key(key):
            return False
        conn = self._connect()
        bucket = _bucket(expires_at)
        now = _clock.now()
        try:
            # Within the same bucket (the usual case) the index is left alone;
            # otherwise the second statement moves the session to its new one.
            touched = conn.execute(self._sql_touch, (expires_at, key, now, bucket)).rowcount == 1
            if not touched:
                touched = conn.execute(self._sql_touch_bucket, (expires_at, bucket, key, now)).rowcount == 1
        except sqlite3.Error as exc:
            raise self._error("cannot refresh a session", exc) from exc
        return touched

    def destroy(self, key: str) -> None:
        if not valid_key(key):
            return
        conn = self._connect()
        try:
            conn.execute(self._sql_destroy, (key,))
        except sqlite3.Error as exc:
            raise self._error("cannot delete a session", exc) from exc

    def prune(self, batch_size: int = 1000) -> int:
        """Delete expired sessions in batches of *batch_size*; return how many.

        Each batch is its own short transaction, so requests keep being served
        while a large store is pruned.
        """
        return sum(self.prune_batches(batch_size))

    def prune_batches(self, batch_size: int = 1000) -> Iterator[int]:
        """Delete expired sessions batch by batch, yielding how many each batch removed."""
        conn = self._connect()
        cutoff = _clock.now()
        current = _bucket(cutoff)
        try:
            # Whole buckets in the past: every session in them has expired.
            while True:
                deleted = conn.execute(self._sql_prune_past, (current, batch_size)).rowcount
                if deleted:
                    yield deleted
                if deleted < batch_size:
                    break
            # The current bucket: a walk in index order, each stretch of
            # batch_size entries one DELETE of those in it that have expired.
            after: tuple[float, str] = (-math.inf, "")
            while True:
                end = conn.execute(self._sql_prune_stretch, (current, *after, batch_size - 1)).fetchone()
                if end is None:  # fewer than batch_size entries left
                    deleted = conn.execute(self._sql_prune_rest, (current, *after, cutoff)).rowcount
                    if deleted:
                        yield deleted
                    return
                deleted = conn.execute(self._sql_prune_current, (current, *after, *end, cutoff)).rowcount
                if deleted:
                    yield deleted
                after = (end[0], end[1])
        except sqlite3.Error as exc:
            raise self._error("cannot prune sessions", exc) from exc

    # -- the user index ------------------------------------------------------------

    def sessions_of(self, user_id: str) -> list[tuple[str, Record]]:
        """The live records bound to *user_id*, oldest first (an indexed lookup)."""
        conn = self._connect()
        try:
            rows = conn.execute(
                f"SELECT key, data, created_at, expires_at, user_id FROM {self.table} "
                "WHERE user_id = ? AND expires_at > ? ORDER BY created_at",
                (user_id, _clock.now()),
            ).fetchall()
        except sqlite3.Error as exc:
            raise self._error("cannot list a user's sessions", exc) from exc
        found = []
        for key, text, created_at, expires_at, bound in rows:
            data = self._decode(text)
            if data is not None:
                found.append((key, Record(data, created_at, expires_at, bound)))
        return found

    def destroy_user(self, user_id: str) -> int:
        """Delete every record bound to *user_id*; return how many were live."""
        conn = self._connect()
        now = _clock.now()
        try:
            with _write_transaction(conn):
                # Count, then delete, in one write transaction (no RETURNING: it
                # needs SQLite 3.35, newer than some Pythons are built with).
                live = conn.execute(
                    f"SELECT count(*) FROM {self.table} WHERE user_id = ? AND expires_at > ?", (user_id, now)
                ).fetchone()[0]
                conn.execute(f"DELETE FROM {self.table} WHERE user_id = ?", (user_id,))
        except sqlite3.Error as exc:
            raise self._error("cannot end a user's sessions", exc) from exc
        return int(live)

    def index_size(self) -> int:
        """How many records are bound to a user (for tests and diagnostics)."""
        conn = self._connect()
        try:
            row = conn.execute(f"SELECT count(*) FROM {self.table} WHERE user_id IS NOT NULL").fetchone()
        except sqlite3.Error as exc:
            raise self._error("cannot count sessions", exc) from exc
        return int(row[0])

    def count(self) -> int:
        """How many live sessions the store holds."""
        conn = self._connect()
        try:
            row = conn.execute(f"SELECT count(*) FROM {self.table} WHERE expires_at > ?", (_clock.now(),)).fetchone()
        except sqlite3.Error as exc:
            raise self._error("cannot count sessions", exc) from exc
        return int(row[0])

    def close(self) -> None:
        with self._all_lock:
            conns, self._all = self._all, []
        if os.getpid() == self._pid:
            for conn in conns:
                conn.close()
        self._local = threading.local()
        self._closed = True
