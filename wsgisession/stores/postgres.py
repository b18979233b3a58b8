"""PostgresStore: sessions in a PostgreSQL table, through a connection pool."""

from __future__ import annotations

import hashlib
import math
import os
import re
import threading
import warnings
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psycopg
import psycopg.errors as pgerr
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg_pool import ConnectionPool, PoolClosed, PoolTimeout

from .. import _json
from ..errors import ConfigurationError, StoreError, StoreFullError, StoreTimeoutError, StoreUnavailableError
from ._sql import Retry, SQLStore, first_line, table_name
from .base import Update, log, positive_seconds, query_options

T = TypeVar("T")
Pool = ConnectionPool[Any]
Conn = psycopg.Connection[Any]
# A URL's query options that are ours; every other one is libpq's.
_OPTIONS: dict[str, Callable[[str], object]] = {
    "table": str,
    "pool_min": int,
    "pool_max": int,
    "statement_timeout_ms": int,
}
# SQLSTATEs: a connection lost (class 08), a backend shut down (57P); rolled back: serialization failure, deadlock.
_LOST, _ROLLED_BACK = ("08", "57P"), ("40001", "40P01")


class PostgresStore(SQLStore):
    """Sessions in a PostgreSQL table, created on first use (unless ``create=False``).

    One row per session: ``key`` (primary key), ``data`` (a ``jsonb`` object
    mapping each top-level session key to its value as JSON text, because
    ``jsonb`` itself cannot hold ``\\u0000`` and turns ``1e16`` into an
    integer), ``created_at``, ``expires_at`` and ``user_id`` (indexed). As
    ``text`` cannot hold NUL, names and user IDs double a backslash and write
    NUL ``\\0``. Every operation is one statement: a save merges the changed
    keys into the row as it is now (``data - deleted || set``).

    :param conninfo_or_pool: a ``postgresql://`` URL or libpq ``key=value``
        string, or a :class:`psycopg_pool.ConnectionPool` of yours, which
        :meth:`close` leaves open; the store's timeouts apply to its own
        statements on it (``SET LOCAL`` in each of its transactions), not to yours.
    :param table: the table's name, optionally ``schema.table``.
    :param create: create the table if it is missing; with ``False`` a missing
        table is a :class:`~wsgisession.errors.StoreUnavailableError`.
    :param connect_timeout: seconds to wait for a connection (from the server,
        or from a busy pool) before a :class:`~wsgisession.errors.StoreError`.
    :param statement_timeout_ms: how long one statement may run (or wait for a
        locked row) before a :class:`~wsgisession.errors.StoreTimeoutError`; 0 sets none.
    :param pool_min: the fewest connections the pool the store makes keeps open (1).
    :param pool_max: the most connections that pool opens (10).
    """

    failures = (psycopg.Error,)

    def __init__(
        self,
        conninfo_or_pool: str | Pool,
        *,
        table: str = "wsgisession_sessions",
        create: bool = True,
        connect_timeout: float = 5,
        statement_timeout_ms: int = 5000,
        pool_min: int | None = None,
        pool_max: int | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        # 50 leaves room for the "_expires_at_idx" and "_user_id_idx" index names within 63 bytes.
        parts = table_name("PostgresStore", table, 50, qualified=True)
        super().__init__(table=table, create=create, clock=clock)
        if not (type(statement_timeout_ms) is int and statement_timeout_ms >= 0):
            raise ConfigurationError("PostgresStore: statement_timeout_ms must be an int >= 0")
        low, high = 1 if pool_min is None else pool_min, 10 if pool_max is None else pool_max
        if not (type(low) is int and type(high) is int and 0 <= low <= high and high >= 1):
            raise ConfigurationError("PostgresStore: need 0 <= pool_min <= pool_max and pool_max >= 1")
        self.statement_timeout_ms = statement_timeout_ms
        self.connect_timeout = positive_seconds(connect_timeout, "PostgresStore: connect_timeout")
        self._pool_min, self._pool_max, self._conninfo = low, high, ""
        self._pool: Pool | None = None
        self._scoped: bytes | None = None  # the SET LOCAL that starts each transaction on a pool you passed
        if isinstance(conninfo_or_pool, ConnectionPool):
            self._pool = conninfo_or_pool
            self._where = _describe(*_pool_params(conninfo_or_pool))
            if statement_timeout_ms:
                self._scoped = f"SELECT set_config('statement_timeout', '{statement_timeout_ms}', true)".encode()
            if pool_min is not None or pool_max is not None:
                warnings.warn("PostgresStore: pool_min and pool_max size only a pool the store makes", stacklevel=2)
        elif isinstance(conninfo_or_pool, str):
            self._conninfo = _prepare_conninfo(conninfo_or_pool, self.connect_timeout)
            self._where = _describe(self._conninfo, {})
        else:
            raise ConfigurationError(
                "PostgresStore needs a postgresql:// URL or a psycopg_pool.ConnectionPool, "
                f"not {type(conninfo_or_pool).__name__}"
            )
        self._owns_pool = self._pool is None
        # Once more than the pool holds connections: a restart kills each of them once, and the
        # pool check may run before the server has ended them all (a backend exits a moment after
        # pg_terminate_backend returns), so a request may meet every dead one before a new one.
        self._retries = high if self._pool is None else self._pool.max_size
        self._lock, self._check_lock, self._checks = threading.Lock(), threading.Lock(), 0
        # Pools inherited through fork(): never closed (see StoreBase), only kept from the garbage collector.
        self._orphans: list[Pool] = []
        digest = hashlib.sha256(f"wsgisession table {'.'.join(parts)}".encode()).digest()
        self._lock_id = int.from_bytes(digest[:8], "big", signed=True)
        self._table = t = sql.Identifier(*parts)
        self._regclass = t.as_string()

        def q(text: str, **names: sql.Composable) -> bytes:
            # Rendered once: composing costs about what running a statement does, client side.
            return sql.SQL(text).format(t=t, **names).as_bytes()

        self._sql_load = q("SELECT data::text, created_at, expires_at, user_id FROM {t} WHERE key = %s")
        # A NULL user (the update binds no one) keeps the row's binding.
        self._sql_update = q(
            "UPDATE {t} SET data = (data - %(delete)s::text[]) || %(set)s::jsonb, expires_at = %(expires)s, "
            "user_id = COALESCE(%(user)s::text, user_id) WHERE key = %(key)s AND expires_at > %(now)s"
        )
        # On conflict with a live row, merge into it; replace an expired one, as if pruned first.
        self._sql_create = q(
            "INSERT INTO {t} AS s (key, data, created_at, expires_at, user_id) "
            "VALUES (%(key)s, %(set)s::jsonb, %(created)s, %(expires)s, %(user)s::text) "
            "ON CONFLICT (key) DO UPDATE SET data = CASE WHEN s.expires_at > %(now)s "
            "THEN (s.data - %(delete)s::text[]) || EXCLUDED.data ELSE EXCLUDED.data END, "
            "created_at = CASE WHEN s.expires_at > %(now)s THEN s.created_at ELSE EXCLUDED.created_at END, "
            "user_id = CASE WHEN s.expires_at > %(now)s THEN COALESCE(EXCLUDED.user_id, s.user_id) "
            "ELSE EXCLUDED.user_id END, expires_at = EXCLUDED.expires_at"
        )
        # A rename (Update.replaces) changes the row's key rather than deleting it and inserting another: a
        # destroy or destroy_user blocked on the row's lock then re-checks its WHERE on the moved row (READ
        # COMMITTED follows an updated row), so one after the rename deletes the new row, one before leaves
        # nothing to move, and a second rename finds it gone. An INSERT would be invisible to a destroy_user
        # whose snapshot predates it: the renamed session would outlive that logout. The second branch sees the
        # table before the move: the new key (a fresh random ID) is live there only when _run() replays a rename
        # that landed, and the replay then reports it.
        self._sql_rename = q(
            "WITH moved AS (UPDATE {t} SET key = %(key)s, "
            "data = (data - %(delete)s::text[]) || %(set)s::jsonb, expires_at = %(expires)s, "
            "user_id = COALESCE(%(user)s::text, user_id) WHERE key = %(old)s AND expires_at > %(now)s RETURNING key) "
            "SELECT key FROM moved UNION ALL SELECT key FROM {t} WHERE key = %(key)s AND expires_at > %(now)s"
        )
        self._sql_touch = q("UPDATE {t} SET expires_at = %s WHERE key = %s AND expires_at > %s")
        self._sql_destroy = q("DELETE FROM {t} WHERE key = %s")
        self._sql_sessions_of = q(
            "SELECT key, data::text, created_at, expires_at, user_id FROM {t} "
            "WHERE user_id = %s AND expires_at > %s ORDER BY created_at, key"
        )
        self._sql_destroy_user = q(
            "WITH gone AS (DELETE FROM {t} WHERE user_id = %s RETURNING expires_at) "
            "SELECT count(*) FROM gone WHERE expires_at > %s"
        )
        self._sql_count = q("SELECT count(*) FROM {t} WHERE expires_at > %s")
        self._sql_index_size = q("SELECT count(*) FROM {t} WHERE user_id IS NOT NULL")
        # ARRAY(...) runs the locking subquery once; SKIP LOCKED lets several processes prune at once.
        self._sql_prune = q(
            "DELETE FROM {t} WHERE key = ANY(ARRAY(SELECT key FROM {t} WHERE expires_at <= %(now)s "
            "LIMIT %(limit)s FOR UPDATE SKIP LOCKED)) AND expires_at <= %(now)s"
        )
        self._sql_create_table = q(
            "CREATE TABLE IF NOT EXISTS {t} (key text PRIMARY KEY, data jsonb NOT NULL, "
            "created_at double precision NOT NULL, expires_at double precision NOT NULL, user_id text NULL)"
        )
        index = "CREATE INDEX IF NOT EXISTS {i} ON {t} ({c})"
        self._sql_create_indexes = [
            q(index, i=sql.Identifier(f"{parts[-1]}_{c}_idx"), c=sql.Identifier(c)) for c in ("expires_at", "user_id")
        ]

    @classmethod
    def from_url(cls, url: str, *, create: bool = True) -> PostgresStore:
        """Open a store from ``postgresql://user[:password]@host[:port]/db[?table=...]``.

        ``table``, ``pool_min``, ``pool_max`` and ``statement_timeout_ms`` in the
        query are this store's options; every other one (``sslmode``,
        ``application_name``, ``connect_timeout``, ...) goes to libpq.

        :raises ConfigurationError: a URL it cannot use.
        """
        if not isinstance(url, str):
            raise ConfigurationError(f"a PostgreSQL URL must be a str, not {type(url).__name__}")
        try:
            parts = urlsplit(url)
        except ValueError as exc:
            raise ConfigurationError(f"PostgresStore: invalid URL: {exc}") from None
        if parts.scheme.lower() not in ("postgresql", "postgres"):
            raise ConfigurationError("PostgresStore: the URL must start with postgresql:// or postgres://")
        pairs = parse_qsl(parts.query, keep_blank_values=True)
        options: dict[str, Any] = query_options("?" + urlencode([p for p in pairs if p[0] in _OPTIONS]), _OPTIONS)
        libpq = urlencode([p for p in pairs if p[0] not in _OPTIONS])
        return cls(urlunsplit(parts._replace(query=libpq)), create=create, **options)

    def _read(self, key: str, now: float) -> tuple[object, float, float, str | None] | None:
        # Written out, not the base's _rows() and _parts(): two calls fewer per request.
        row = self._run(lambda conn, replayed: conn.execute(self._sql_load, (key,)).fetchone())
        return None if row is None else (_fields(row[0]), row[1], row[2], _unescape_user(row[3]))

    def _rows(self, statement: bytes, params: Any) -> list[Any]:
        return self._run(lambda conn, replayed: conn.execute(statement, params).fetchall())

    def _execute(self, statement: bytes, params: Any) -> int:
        count: int = self._run(lambda conn, replayed: conn.execute(statement, params).rowcount)
        return count

    def _parts(self, data: Any, created_at: Any, expires_at: Any, user_id: Any) -> tuple[object, float, float, Any]:
        return _fields(data), created_at, expires_at, _unescape_user(user_id)

    def _user_param(self, user_id: str, *, lookup: bool = False) -> str:
        return _escape(super()._user_param(user_id))

    def _write(self, key: str, update: Update, now: float) -> bool:
        params = {
            "key": key,
            "set": _json.encode({_escape(name): _json.encode(value) for name, value in update.set.items()}),
            "delete": _text_array(update.delete) if update.delete else "{}",
            "expires": float(update.expires_at),
            "created": None if update.created_at is None else float(update.created_at),
            "user": None if update.user_id is None else _escape(update.user_id),
            "now": now,
        }
        if update.replaces is None:
            statement = self._sql_update if update.created_at is None else self._sql_create
        elif update.replaces == key:
            statement = self._sql_update  # a rename onto itself only updates; it never creates
        else:
            statement, params["old"] = self._sql_rename, update.replaces
        count: int = self._run(lambda conn, replayed: conn.execute(statement, params).rowcount)
        return count == 1

    def _destroy_user(self, user: str, now: float) -> int:
        return int(self._rows(self._sql_destroy_user, (user, now))[0][0])

    def _release(self) -> None:
        with self._lock:
            pool, self._pool = (self._pool, None) if self._owns_pool else (None, self._pool)
        if pool is not None:
            pool.close()

    def _get_pool(self) -> Pool:
        if self._pool is not None:
            return self._pool
        with self._lock:
            self._ready()
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

    def _after_fork(self) -> None:
        self._lock, self._check_lock = threading.Lock(), threading.Lock()  # a parent thread may have held them
        if self._owns_pool and self._pool is not None:
            self._orphans.append(self._pool)
            self._pool = None

    def _configure(self, conn: Conn) -> None:
        if self.statement_timeout_ms:
            conn.execute("SELECT set_config('statement_timeout', %s, false)", (str(self.statement_timeout_ms),))

    def _checkout(self) -> tuple[Conn, tuple[Pool, int]]:
        pool = self._pool if self._pool is not None else self._get_pool()
        checks = self._checks
        return pool.getconn(self.connect_timeout), (pool, checks)

    def _checkin(self, conn: Conn, token: tuple[Pool, int]) -> None:
        pool, seen = token
        pool.putconn(conn)
        if conn.closed:
            # When one pooled connection died the idle ones usually did too: test them all. One
            # thread checks; others that lost one wait for it, unless done since they took theirs.
            with self._check_lock:
                if self._checks == seen:
                    pool.check()
                    self._checks += 1

    def _attempt(self, conn: Conn, op: Callable[[Conn, bool], T], replayed: bool) -> T:
        if self._scoped is None and conn.autocommit:
            if not self._schema_ready:
                self._ensure_table(conn)
            return op(conn, replayed)
        with conn.transaction():  # a pool you passed: commit, and time out, as the store does
            if self._scoped is not None:
                conn.execute(self._scoped)
            if not self._schema_ready:
                self._ensure_table(conn)
            return op(conn, replayed)

    def _retry(self, exc: BaseException, conn: Conn, token: object) -> Retry:
        if isinstance(exc, pgerr.UndefinedTable):
            return "table"
        if isinstance(exc, psycopg.OperationalError):
            state = exc.sqlstate or ""
            if conn.closed or state.startswith(_LOST):
                return "lost"
            if state in _ROLLED_BACK:
                return "rolled back"
        return None

    def _ensure_table(self, conn: Conn) -> None:
        # Checking first means a table made by a migration needs no CREATE privilege.
        row = conn.execute(_SQL_TABLE_STATE, (self._regclass,)).fetchone()
        exists, indexed = (row[0] is not None, row[1]) if row else (False, False)
        if not exists and not self.create:
            raise self._missing_table(self._where)
        if not (exists and indexed) and self.create:
            # A table made without the user index gets it if it can: without, a user's sessions take a table scan.
            statements = self._sql_create_indexes[1:] if exists else [self._sql_create_table, *self._sql_create_indexes]
            try:
                with conn.transaction():
                    # CREATE ... IF NOT EXISTS is not safe against itself: two at once can fail on the row type.
                    conn.execute("SELECT pg_advisory_xact_lock(%s)", (self._lock_id,))
                    for statement in statements:
                        conn.execute(statement)
            except (pgerr.InsufficientPrivilege, pgerr.QueryCanceled, pgerr.LockNotAvailable) as exc:
                if not exists:
                    raise
                log.warning(
                    "PostgresStore: table %s has no index on user_id and it could not be created (%s); "
                    "finding a user's sessions will scan the whole table. Run: %s",
                    self.table,
                    _message(exc),
                    statements[0].decode(),
                )
            else:
                if exists:
                    log.info("PostgresStore: added the missing index on user_id to table %s", self.table)
        self._schema_ready = True

    def _failure(self, action: str, exc: BaseException) -> StoreError:
        where = f"PostgreSQL at {self._where}"
        if isinstance(exc, PoolClosed):
            return StoreUnavailableError(f"PostgresStore at {self._where} is closed")
        if isinstance(exc, PoolTimeout):
            return self._diagnose(action)
        if isinstance(exc, pgerr.UndefinedTable):
            return self._missing_table(self._where)
        if isinstance(exc, (pgerr.QueryCanceled, pgerr.LockNotAvailable)):
            limit = f" (statement_timeout={self.statement_timeout_ms} ms)" if self.statement_timeout_ms else ""
            return StoreTimeoutError(f"PostgresStore: {where} did not finish {action} in time{limit}: {_message(exc)}")
        if isinstance(exc, pgerr.DiskFull):
            return StoreFullError(f"PostgresStore: {where} is out of disk space ({action})")
        if isinstance(exc, psycopg.OperationalError):
            return StoreUnavailableError(f"PostgresStore: lost {where} ({action}): {_message(exc)}")
        return StoreError(f"PostgresStore: {where} failed {action} on table {self.table!r}: {_message(exc)}")

    def _diagnose(self, action: str) -> StoreError:
        """Why the pool gave no connection in time: the server is unreachable, or every connection is busy."""
        pool = self._pool
        conninfo, kwargs = _pool_params(pool) if pool is not None else ("", {})
        try:
            if conninfo or kwargs:
                psycopg.connect(_prepare_conninfo(conninfo, self.connect_timeout), **kwargs).close()
        except (psycopg.Error, ConfigurationError) as exc:
            return StoreUnavailableError(
                f"PostgresStore: cannot connect to PostgreSQL at {self._where}: {_message(exc)}"
            )
        return StoreTimeoutError(
            f"PostgresStore: no free connection to PostgreSQL at {self._where} within {self.connect_timeout:g}s "
            f"({action}); all {self._pool_max if pool is None else pool.max_size} of the pool's connections are busy"
        )


# Whether the table exists, and whether it has a usable index led by user_id.
_SQL_TABLE_STATE = (
    "SELECT t.oid, EXISTS (SELECT 1 FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid "
    "AND a.attnum = i.indkey[0] WHERE i.indrelid = t.oid AND a.attname = 'user_id' AND i.indisvalid) "
    "FROM (SELECT to_regclass(%s) AS oid) t"
)


def _fields(text: str) -> object:
    """The data column as :meth:`StoreBase.decode` reads it, one JSON text per name; anything else as it is."""
    try:
        fields = _json.decode(text)
    except ValueError:
        return text  # decode refuses it again, as a corrupt record
    if type(fields) is dict and "\\\\" in text and any("\\" in name for name in fields):
        return {_unescape(name): value for name, value in fields.items()}  # the text doubles a name's backslash
    return fields if type(fields) is dict else text


def _text_array(names: frozenset[str]) -> str:
    """*names*, escaped, as a ``text[]`` literal: psycopg adapts a list at several times the cost of a str."""
    quoted = (_escape(name).replace("\\", "\\\\").replace('"', '\\"') for name in names)
    return "{" + ",".join(f'"{name}"' for name in quoted) + "}"


def _unescape_user(user_id: str | None) -> str | None:
    return None if user_id is None else _unescape(user_id)


def _escape(name: str) -> str:
    # jsonb refuses NUL in a key; escaping the escape character too keeps names one-to-one.
    if "\\" in name or "\x00" in name:
        return name.replace("\\", "\\\\").replace("\x00", "\\0")
    return name


_UNESCAPE = re.compile(r"\\(.)", re.DOTALL)


def _unescape(name: str) -> str:
    if "\\" in name:
        return _UNESCAPE.sub(lambda m: "\x00" if m.group(1) == "0" else m.group(1), name)
    return name


def _prepare_conninfo(conninfo: str, connect_timeout: float) -> str:
    """Validate *conninfo* (without connecting) and add our defaults where it has none."""
    try:
        params = conninfo_to_dict(conninfo)
    except psycopg.Error as exc:
        raise ConfigurationError(f"PostgresStore: invalid connection string: {_message(exc)}") from None
    extra: dict[str, Any] = {}
    if "connect_timeout" not in params:
        # libpq waits forever by default; it counts whole seconds, at least 2.
        extra["connect_timeout"] = max(2, math.ceil(connect_timeout))
    if "application_name" not in params:
        extra["application_name"] = "wsgisession"
    return make_conninfo(conninfo, **extra) if extra else conninfo


def _pool_params(pool: Pool) -> tuple[str, dict[str, Any]]:
    """A pool's connection string and arguments, when they are plain values (they may be callables)."""
    return (pool.conninfo if isinstance(pool.conninfo, str) else ""), (
        pool.kwargs if isinstance(pool.kwargs, dict) else {}
    )


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


def _message(exc: BaseException) -> str:
    return first_line(str(exc), type(exc).__name__)
