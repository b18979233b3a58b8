"""PostgresStore: sessions in a PostgreSQL table, through a connection pool."""

from __future__ import annotations

import hashlib
import math
import os
import re
import threading
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psycopg
import psycopg.errors as pgerr
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg_pool import ConnectionPool, PoolClosed, PoolTimeout

from .. import _clock, _json
from ..errors import ConfigurationError, StoreError, StoreFullError, StoreTimeoutError, StoreUnavailableError
from .base import Record, Update, log, security_log, user_bytes, valid_key

T = TypeVar("T")
Pool = ConnectionPool[Any]

_SCHEMES = ("postgresql", "postgres")
# Query parameters of a URL that are ours, not libpq's.
_URL_OPTIONS = {"table": str, "pool_min": int, "pool_max": int, "statement_timeout_ms": int}
# 50 leaves room for the "_expires_at_idx" and "_user_id_idx" index names
# within PostgreSQL's 63-byte identifiers.
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,49}")
_PRUNE_BATCH = 1000


def _check_table(table: object) -> tuple[str, ...]:
    """Split ``[schema.]table`` and refuse anything but plain identifiers."""
    if not isinstance(table, str):
        raise ConfigurationError("PostgresStore: table must be a str")
    parts = tuple(table.split("."))
    if len(parts) > 2 or not all(_NAME.fullmatch(part) for part in parts):
        raise ConfigurationError(
            f"PostgresStore: table {table!r} must be a name of letters, digits and underscores "
            "(at most 50, not starting with a digit), optionally schema-qualified"
        )
    return parts


class PostgresStore:
    """Sessions in a PostgreSQL table, created on first use.

    One row per session: ``key`` (primary key), ``data`` (a ``jsonb`` object
    mapping each top-level session key to its value as JSON text), ``created_at``
    and ``expires_at`` (epoch seconds) and ``user_id`` (the user the session is
    bound to; indexed, so a user's sessions are found without a scan). A save
    is one statement that merges the changed keys into the row as it is now
    (``data - deleted || set``), so concurrent requests changing different
    keys both land, and an update never recreates a destroyed or expired
    session.

    ``user_id`` holds the ID as it is, except that a backslash is doubled and
    NUL (which ``text`` cannot hold) is written ``\\0``, as in data keys.

    Values are kept as JSON text inside the ``jsonb`` object because ``jsonb``
    itself cannot hold a ``\\u0000`` character and turns ``1e16`` into an
    integer: the text comes back exactly as it went in.

    :param conninfo_or_pool: a ``postgresql://`` URL or libpq ``key=value``
        string, or a :class:`psycopg_pool.ConnectionPool` you made. A pool you
        pass is used as it is (its timeouts are yours) and :meth:`close` leaves
        it open.
    :param table: the table's name, optionally ``schema.table``.
    :param connect_timeout: seconds to wait for a connection (from the server,
        or from a busy pool) before a :class:`~wsgisession.errors.StoreError`.
    :param statement_timeout_ms: PostgreSQL's ``statement_timeout`` for this
        store's connections; a statement that runs longer (a row locked by a
        stuck transaction) raises :class:`~wsgisession.errors.StoreTimeoutError`.
        0 disables it.
    :param pool_min: connections the pool keeps open.
    :param pool_max: connections the pool may open.

    The pool is opened on first use, not here, so a preforking server that
    creates the store before forking (``gunicorn --preload``) never shares a
    connection between processes; a forked process opens its own pool. A
    connection the server dropped (restart, ``pg_terminate_backend``) is
    replaced and the operation retried once: every operation here is
    idempotent, so a retry never applies a change twice.
    """

    def __init__(
        self,
        conninfo_or_pool: str | Pool,
        *,
        table: str = "wsgisession_sessions",
        connect_timeout: float = 5,
        statement_timeout_ms: int = 5000,
        pool_min: int = 1,
        pool_max: int = 10,
    ) -> None:
        parts = _check_table(table)
        if not (isinstance(connect_timeout, (int, float)) and 0 < connect_timeout < math.inf):
            raise ConfigurationError("PostgresStore: connect_timeout must be a positive number of seconds")
        if not (isinstance(statement_timeout_ms, int) and statement_timeout_ms >= 0):
            raise ConfigurationError("PostgresStore: statement_timeout_ms must be an int >= 0")
        if not (isinstance(pool_min, int) and isinstance(pool_max, int) and 0 <= pool_min <= pool_max and pool_max):
            raise ConfigurationError("PostgresStore: need 0 <= pool_min <= pool_max and pool_max >= 1")
        self.table = table
        self._table = sql.Identifier(*parts)
        self.connect_timeout = float(connect_timeout)
        self.statement_timeout_ms = statement_timeout_ms
        self._pool_min = pool_min
        self._pool_max = pool_max
        self._user_pool: Pool | None = None
        self._conninfo = ""
        if isinstance(conninfo_or_pool, ConnectionPool):
            self._user_pool = conninfo_or_pool
            self._where = _describe(*_pool_params(conninfo_or_pool))
        elif isinstance(conninfo_or_pool, str):
            self._conninfo = _prepare_conninfo(conninfo_or_pool, self.connect_timeout)
            self._where = _describe(self._conninfo, {})
        else:
            raise ConfigurationError(
                f"PostgresStore needs a postgresql:// URL or a psycopg_pool.ConnectionPool, "
                f"not {type(conninfo_or_pool).__name__}"
            )
        self._pool: Pool | None = None
        self._pool_pid = os.getpid()
        self._lock = threading.Lock()
        # Pools inherited through fork(): never closed here (that would end the
        # parent's sessions on the server), only kept from the garbage collector.
        self._orphans: list[Pool] = []
        self._ready = False
        self._closed = False
        self._lock_id = int.from_bytes(
            hashlib.sha256(f"wsgisession table {'.'.join(parts)}".encode()).digest()[:8], "big", signed=True
        )
        _instances.add(self)

        t = self._table
        self._sql_load = sql.SQL("SELECT data::text, created_at, expires_at, user_id FROM {t} WHERE key = %s").format(
            t=t
        )
        # A NULL user (the update binds no one) keeps the row's binding.
        self._sql_update = sql.SQL(
            "UPDATE {t} SET data = (data - %(delete)s::text[]) || %(set)s::jsonb, expires_at = %(expires)s, "
            "user_id = COALESCE(%(user)s::text, user_id) "
            "WHERE key = %(key)s AND expires_at > %(now)s"
        ).format(t=t)
        # On conflict with a live row, merge into it; with an expired one,
        # replace it wholesale, exactly as if it had been pruned first.
        self._sql_create = sql.SQL(
            "INSERT INTO {t} AS s (key, data, created_at, expires_at, user_id) "
            "VALUES (%(key)s, %(set)s::jsonb, %(created)s, %(expires)s, %(user)s::text) "
            "ON CONFLICT (key) DO UPDATE SET "
            "data = CASE WHEN s.expires_at > %(now)s "
            "THEN (s.data - %(delete)s::text[]) || EXCLUDED.data ELSE EXCLUDED.data END, "
            "created_at = CASE WHEN s.expires_at > %(now)s THEN s.created_at ELSE EXCLUDED.created_at END, "
            "user_id = CASE WHEN s.expires_at > %(now)s THEN COALESCE(EXCLUDED.user_id, s.user_id) "
            "ELSE EXCLUDED.user_id END, "
            "expires_at = EXCLUDED.expires_at"
        ).format(t=t)
        # A rename (Update.replaces) moves the row by changing its key, rather
        # than deleting it and inserting another: a destroy or destroy_user
        # blocked on the row's lock then re-checks its WHERE on the moved row
        # (READ COMMITTED follows an updated row to its new version), so one
        # that comes after the rename deletes the new row, one that came first
        # leaves nothing to move, and a second rename of the same row finds it
        # gone. An INSERT would be invisible to a destroy_user whose snapshot
        # predates it, and the renamed session would outlive that logout.
        # The second branch sees the table as it was before the move: it finds
        # the new key live only when this very rename already landed and
        # _run() retries it after losing the connection, so the retry reports
        # what happened. (A new key is a fresh random ID: nothing else is there.)
        self._sql_rename = sql.SQL(
            "WITH moved AS (UPDATE {t} SET key = %(key)s, "
            "data = (data - %(delete)s::text[]) || %(set)s::jsonb, expires_at = %(expires)s, "
            "user_id = COALESCE(%(user)s::text, user_id) "
            "WHERE key = %(old)s AND expires_at > %(now)s RETURNING key) "
            "SELECT key FROM moved UNION ALL SELECT key FROM {t} WHERE key = %(key)s AND expires_at > %(now)s"
        ).format(t=t)
        self._sql_touch = sql.SQL("UPDATE {t} SET expires_at = %s WHERE key = %s AND expires_at > %s").format(t=t)
        self._sql_destroy = sql.SQL("DELETE FROM {t} WHERE key = %s").format(t=t)
        # The (user_id) index finds a user's rows without a scan.
        self._sql_sessions_of = sql.SQL(
            "SELECT key, data::text, created_at, expires_at, user_id FROM {t} "
            "WHERE user_id = %s AND expires_at > %s ORDER BY created_at, key"
        ).format(t=t)
        self._sql_destroy_user = sql.SQL(
            "WITH gone AS (DELETE FROM {t} WHERE user_id = %s RETURNING expires_at) "
            "SELECT count(*) FROM gone WHERE expires_at > %s"
        ).format(t=t)
        self._sql_count = sql.SQL("SELECT count(*) FROM {t} WHERE expires_at > %s").format(t=t)
        self._sql_index_size = sql.SQL("SELECT count(*) FROM {t} WHERE user_id IS NOT NULL").format(t=t)
        # ARRAY(...) runs the locking subquery exactly once; SKIP LOCKED lets
        # several processes prune at once, each taking rows the others did not.
        self._sql_prune = sql.SQL(
            "DELETE FROM {t} WHERE key = ANY(ARRAY("
            "SELECT key FROM {t} WHERE expires_at <= %(now)s LIMIT %(limit)s FOR UPDATE SKIP LOCKED"
            ")) AND expires_at <= %(now)s"
        ).format(t=t)
        self._sql_create_table = sql.SQL(
            "CREATE TABLE IF NOT EXISTS {t} ("
            "key text PRIMARY KEY, "
            "data jsonb NOT NULL, "
            "created_at double precision NOT NULL, "
            "expires_at double precision NOT NULL, "
            "user_id text NULL)"
        ).format(t=t)
        self._sql_create_indexes = [
            sql.SQL("CREATE INDEX IF NOT EXISTS {name} ON {t} ({column})").format(
                name=sql.Identifier(f"{parts[-1]}_{column}_idx"), t=t, column=sql.Identifier(column)
            )
            for column in ("expires_at", "user_id")
        ]
        self._sql_create_user_index = self._sql_create_indexes[1]

    @classmethod
    def from_url(cls, url: str, *, create: bool = True) -> PostgresStore:
        """Open a store from ``postgresql://user[:password]@host[:port]/db[?table=...]``.

        ``table``, ``pool_min``, ``pool_max`` and ``statement_timeout_ms`` in the
        query are this store's options; every other parameter (``sslmode``,
        ``application_name``, ``connect_timeout``, ...) goes to libpq. Raises
        :class:`~wsgisession.errors.ConfigurationError` for a URL it cannot use.
        """
        if not isinstance(url, str):
            raise ConfigurationError(f"a PostgreSQL URL must be a str, not {type(url).__name__}")
        try:
            parts = urlsplit(url)
        except ValueError as exc:
            raise ConfigurationError(f"PostgresStore: invalid URL: {exc}") from None
        if parts.scheme.lower() not in _SCHEMES:
            raise ConfigurationError("PostgresStore: the URL must start with postgresql:// or postgres://")
        options: dict[str, Any] = {}
        rest: list[tuple[str, str]] = []
        for name, value in parse_qsl(parts.query, keep_blank_values=True):
            kind = _URL_OPTIONS.get(name)
            if kind is None:
                rest.append((name, value))
                continue
            try:
                options[name] = kind(value)
            except ValueError:
                raise ConfigurationError(f"PostgresStore: URL option {name} must be an integer") from None
        conninfo = urlunsplit(parts._replace(query=urlencode(rest)))
        return cls(conninfo, **options)

    def __repr__(self) -> str:
        return f"<PostgresStore {self._where} table={self.table!r}>"

    # -- the Store protocol ---------------------------------------------------------

    def load(self, key: str) -> Record | None:
        if not valid_key(key):
            return None

        def op(conn: psycopg.Connection[Any]) -> tuple[Any, ...] | None:
            return conn.execute(self._sql_load, [key]).fetchone()

        row = self._run("load", key, op)
        if row is None:
            return None
        text, created_at, expires_at, user_id = row
        if expires_at <= _clock.now():
            return None
        return self._record(text, created_at, expires_at, user_id)

    def _record(self, text: str, created_at: float, expires_at: float, user_id: str | None) -> Record | None:
        try:
            outer = _json.decode(text)
            if type(outer) is not dict:
                raise ValueError("not an object")
            data = {_unescape(name): _json.decode(value) for name, value in outer.items()}
        except (ValueError, TypeError):
            security_log.warning(
                "corrupt session record in PostgresStore at %s treated as absent",
                self._where,
                extra={"security_event": "corrupt_record"},
            )
            return None
        return Record(data, created_at, expires_at, None if user_id is None else _unescape(user_id))

    def save(self, key: str, update: Update) -> bool:
        if not valid_key(key):
            raise ValueError("not a store key")
        params = {
            "key": key,
            "set": _json.encode({_escape(name): _json.encode(value) for name, value in update.set.items()}),
            "delete": sorted(_escape(name) for name in update.delete),
            "expires": float(update.expires_at),
            "created": None if update.created_at is None else float(update.created_at),
            "user": None if update.user_id is None else _user_param(update.user_id),
            "now": _clock.now(),
        }
        if update.replaces is None:
            statement = self._sql_update if update.created_at is None else self._sql_create
        elif update.replaces == key:
            statement = self._sql_update  # a rename onto itself only updates; it never creates
        elif valid_key(update.replaces):
            statement = self._sql_rename
            params["old"] = update.replaces
        else:
            log.info("save dropped: the session it renames is not a store key")
            return False

        def op(conn: psycopg.Connection[Any]) -> int:
            return conn.execute(statement, params).rowcount

        if self._run("save", key, op) != 1:
            log.info("save dropped: the session was destroyed or expired meanwhile")
            return False
        return True

    def touch(self, key: str, expires_at: float) -> bool:
        if not valid_key(key):
            return False
        params = [float(expires_at), key, _clock.now()]

        def op(conn: psycopg.Connection[Any]) -> int:
            return conn.execute(self._sql_touch, params).rowcount

        return self._run("touch", key, op) == 1

    def destroy(self, key: str) -> None:
        if not valid_key(key):
            return

        def op(conn: psycopg.Connection[Any]) -> None:
            conn.execute(self._sql_destroy, [key])

        self._run("destroy", key, op)

    def prune(self, batch_size: int = _PRUNE_BATCH) -> int:
        """Delete expired rows, *batch_size* per transaction; return how many.

        Short transactions keep locks brief on a busy table, and rows locked
        by another pruner are skipped rather than waited for, so any number of
        processes may prune at once.
        """
        if not (isinstance(batch_size, int) and batch_size > 0):
            raise ValueError("batch_size must be a positive int")
        params = {"now": _clock.now(), "limit": batch_size}

        def op(conn: psycopg.Connection[Any]) -> int:
            return conn.execute(self._sql_prune, params).rowcount

        total = 0
        while True:
            # Each batch checks out its own connection, so it is its own
            # transaction even on a pool whose connections are not autocommit.
            removed = self._run("prune", None, op)
            total += removed
            if removed < batch_size:
                return total

    # -- the user index -------------------------------------------------------------

    def sessions_of(self, user_id: str) -> list[tuple[str, Record]]:
        """The live records bound to *user_id*, oldest first (an indexed lookup)."""
        params = [_user_param(user_id), _clock.now()]

        def op(conn: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
            return conn.execute(self._sql_sessions_of, params).fetchall()

        found = []
        for key, text, created_at, expires_at, bound in self._run("sessions_of", None, op):
            record = self._record(text, created_at, expires_at, bound)
            if record is not None:
                found.append((key, record))
        return found

    def destroy_user(self, user_id: str) -> int:
        """Delete every record bound to *user_id* in one statement; return how many live ones there were."""
        params = [_user_param(user_id), _clock.now()]

        def op(conn: psycopg.Connection[Any]) -> int:
            row = conn.execute(self._sql_destroy_user, params).fetchone()
            return 0 if row is None else int(row[0])

        return self._run("destroy_user", None, op)

    def count(self) -> int:
        """How many live records the table holds."""
        return self._count("count", self._sql_count, [_clock.now()])

    def index_size(self) -> int:
        """How many rows are bound to a user, expired ones included until pruned (for tests and diagnostics)."""
        return self._count("index_size", self._sql_index_size, [])

    def _count(self, action: str, statement: sql.Composed, params: list[Any]) -> int:
        def op(conn: psycopg.Connection[Any]) -> int:
            row = conn.execute(statement, params).fetchone()
            return 0 if row is None else int(row[0])

        return self._run(action, None, op)

    def close(self) -> None:
        """Close this store's pool; a pool you passed in stays open."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            pool, self._pool = self._pool, None
        if pool is not None and self._pool_pid == os.getpid():
            pool.close()

    # -- connections ----------------------------------------------------------------

    def _get_pool(self) -> Pool:
        if self._user_pool is not None:
            return self._user_pool
        if self._pool_pid != os.getpid():
            self._forget_pool()
        pool = self._pool
        if pool is not None:
            return pool
        with self._lock:
            if self._closed:
                raise StoreUnavailableError(f"PostgresStore at {self._where} is closed")
            if self._pool is None:
                self._pool = ConnectionPool(
                    self._conninfo,
                    min_size=self._pool_min,
                    max_size=self._pool_max,
                    kwargs={"autocommit": True},
                    configure=self._configure,
                    timeout=self.connect_timeout,
                    name="wsgisession",
                    open=True,
                )
            return self._pool

    def _forget_pool(self) -> None:
        """In a forked child: drop the parent's pool without touching its connections."""
        self._lock = threading.Lock()  # a parent thread may have held it at fork time
        if self._pool is not None:
            self._orphans.append(self._pool)
            self._pool = None
        self._pool_pid = os.getpid()

    def _configure(self, conn: psycopg.Connection[Any]) -> None:
        if self.statement_timeout_ms:
            conn.execute("SELECT set_config('statement_timeout', %s, false)", [str(self.statement_timeout_ms)])

    def _ensure_table(self, conn: psycopg.Connection[Any]) -> None:
        # Checking first means a table made by a migration needs no CREATE privilege.
        row = conn.execute(_SQL_TABLE_STATE, [self._table.as_string(conn)]).fetchone()
        if row is None or row[0] is None:
            with conn.transaction():
                # CREATE ... IF NOT EXISTS is not safe against itself: two
                # processes creating at once can fail on the table's row type.
                conn.execute("SELECT pg_advisory_xact_lock(%s)", [self._lock_id])
                conn.execute(self._sql_create_table)
                for statement in self._sql_create_indexes:
                    conn.execute(statement)
        elif not row[1]:
            self._add_user_index(conn)
        self._ready = True

    def _add_user_index(self, conn: psycopg.Connection[Any]) -> None:
        """Index ``user_id`` on a table made without that index (by a migration, or by hand).

        Best effort: without it the store still works, but every lookup of a
        user's sessions scans the table, so a failure is logged with the
        statement to run, never raised.
        """
        statement = self._sql_create_user_index.as_string(conn)
        try:
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", [self._lock_id])
                conn.execute(self._sql_create_user_index)
        except (pgerr.InsufficientPrivilege, pgerr.QueryCanceled, pgerr.LockNotAvailable) as exc:
            log.warning(
                "PostgresStore: table %s has no index on user_id and it could not be created (%s); "
                "finding a user's sessions will scan the whole table. Run: %s",
                self.table,
                _message(exc, None),
                statement,
            )
        else:
            log.info("PostgresStore: added the missing index on user_id to table %s", self.table)

    def _run(self, action: str, key: str | None, op: Callable[[psycopg.Connection[Any]], T]) -> T:
        """Run *op* on a pooled connection, retrying once if that connection was dead."""
        if self._closed:
            raise StoreUnavailableError(f"PostgresStore at {self._where} is closed")
        pool = self._get_pool()
        with self._errors(action, key, pool):
            for attempt in (1, 2):
                conn: psycopg.Connection[Any] | None = None
                try:
                    with pool.connection() as conn:
                        if not self._ready:
                            self._ensure_table(conn)
                        return op(conn)
                except pgerr.UndefinedTable:
                    if attempt == 2 or not self._ready:
                        raise
                    self._ready = False  # dropped since we created it: create it again
                except psycopg.OperationalError:
                    if attempt == 2 or conn is None or not conn.closed:
                        raise
                    log.warning("PostgresStore: lost a connection to %s; retrying on a fresh one", self._where)
                    # When one pooled connection died, the idle ones usually did
                    # too (server restart): discard them all now, not one per request.
                    pool.check()
        raise AssertionError("unreachable")  # pragma: no cover

    @contextmanager
    def _errors(self, action: str, key: str | None, pool: Pool) -> Iterator[None]:
        """Turn psycopg's exceptions into StoreErrors that name the server, never a key or password."""
        try:
            yield
        except PoolClosed as exc:
            raise StoreUnavailableError(f"PostgresStore at {self._where} is closed") from exc
        except PoolTimeout as exc:
            raise self._diagnose(action, pool) from exc
        except (pgerr.QueryCanceled, pgerr.LockNotAvailable) as exc:
            limit = f" (statement_timeout={self.statement_timeout_ms} ms)" if self._user_pool is None else ""
            raise StoreTimeoutError(
                f"PostgresStore: PostgreSQL at {self._where} did not finish {action} in time{limit}: "
                f"{_message(exc, key)}"
            ) from exc
        except pgerr.DiskFull as exc:
            raise StoreFullError(f"PostgresStore: PostgreSQL at {self._where} is out of disk space ({action})") from exc
        except psycopg.OperationalError as exc:
            raise StoreUnavailableError(
                f"PostgresStore: lost PostgreSQL at {self._where} ({action}): {_message(exc, key)}"
            ) from exc
        except psycopg.Error as exc:
            raise StoreError(
                f"PostgresStore: PostgreSQL at {self._where} failed {action} on table {self.table!r}: "
                f"{_message(exc, key)}"
            ) from exc

    def _diagnose(self, action: str, pool: Pool) -> StoreError:
        """Why the pool gave no connection in time: the server is unreachable, or every connection is busy."""
        conninfo, kwargs = _pool_params(pool)
        if conninfo or kwargs:
            try:
                with psycopg.connect(conninfo, **{"connect_timeout": 5, **kwargs}):
                    pass
            except psycopg.Error as exc:
                return StoreUnavailableError(
                    f"PostgresStore: cannot connect to PostgreSQL at {self._where} ({action}): {_message(exc, None)}"
                )
        return StoreTimeoutError(
            f"PostgresStore: no free connection to PostgreSQL at {self._where} within {pool.timeout:g}s "
            f"({action}); all {pool.max_size} of the pool's connections are busy"
        )


# Whether the table exists, and whether it has a usable index led by user_id.
_SQL_TABLE_STATE = (
    "SELECT t.oid, EXISTS (SELECT 1 FROM pg_index i "
    "JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0] "
    "WHERE i.indrelid = t.oid AND a.attname = 'user_id' AND i.indisvalid) "
    "FROM (SELECT to_regclass(%s) AS oid) t"
)


def _user_param(user_id: str) -> str:
    """*user_id* as the ``user_id`` column holds it: escaped like a data key, as ``text`` cannot hold NUL."""
    user_bytes(user_id)
    return _escape(user_id)


# Every store, so that a forked child can drop the parent's pools before any
# thread of its own runs (no lock can be found held, no pool half-replaced).
_instances: weakref.WeakSet[PostgresStore] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for store in list(_instances):
        store._forget_pool()


if hasattr(os, "register_at_fork"):  # not on Windows, which has no fork()
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _prepare_conninfo(conninfo: str, connect_timeout: float) -> str:
    """Validate *conninfo* (without connecting) and add our defaults where it has none."""
    try:
        params = conninfo_to_dict(conninfo)
    except psycopg.Error as exc:
        raise ConfigurationError(f"PostgresStore: invalid connection string: {_message(exc, None)}") from None
    extra: dict[str, Any] = {}
    if "connect_timeout" not in params:
        # libpq waits forever by default; it counts whole seconds, at least 2.
        extra["connect_timeout"] = max(2, math.ceil(connect_timeout))
    if "application_name" not in params:
        extra["application_name"] = "wsgisession"
    return make_conninfo(conninfo, **extra) if extra else conninfo


def _escape(name: str) -> str:
    # jsonb refuses NUL in a key; escaping the escape character as well keeps
    # the mapping one-to-one, so names come back exactly as they went in.
    if "\\" in name or "\x00" in name:
        return name.replace("\\", "\\\\").replace("\x00", "\\0")
    return name


_UNESCAPE = re.compile(r"\\(.)", re.DOTALL)


def _unescape(name: str) -> str:
    if "\\" in name:
        return _UNESCAPE.sub(lambda m: "\x00" if m.group(1) == "0" else m.group(1), name)
    return name


def _pool_params(pool: Pool) -> tuple[str, dict[str, Any]]:
    """A pool's connection string and arguments, when they are plain values (they may be callables)."""
    conninfo = pool.conninfo if isinstance(pool.conninfo, str) else ""
    kwargs = pool.kwargs if isinstance(pool.kwargs, dict) else {}
    return conninfo, kwargs


def _describe(conninfo: str, kwargs: dict[str, Any]) -> str:
    """host:port/dbname for messages, never the user's password."""
    try:
        params: dict[str, Any] = {**conninfo_to_dict(conninfo), **kwargs}
    except psycopg.Error:
        params = dict(kwargs)
    host = params.get("host") or params.get("hostaddr") or os.environ.get("PGHOST") or "localhost"
    port = params.get("port") or os.environ.get("PGPORT") or "5432"
    dbname = params.get("dbname") or os.environ.get("PGDATABASE") or params.get("user") or "(default)"
    return f"{host}:{port}/{dbname}"


def _message(exc: BaseException, key: str | None) -> str:
    """The first line of a driver error: libpq's reason, without the DETAIL that may quote a row."""
    text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return text.replace(key, "<key>") if key else text
