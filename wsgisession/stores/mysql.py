"""MySQLStore: sessions in a MySQL or MariaDB table, through PyMySQL."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Sequence
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

import pymysql
from pymysql.connections import Connection
from pymysql.constants import CLIENT, CR, ER
from pymysql.cursors import Cursor

from .. import _json
from ..errors import ConfigurationError, StoreError, StoreFullError, StoreTimeoutError, StoreUnavailableError
from ._sql import Retry, SQLStore, first_line, table_name
from .base import Update, positive_seconds, query_options, user_bytes

T = TypeVar("T")
_SCHEMES = ("mysql", "mariadb")
#: The user_id column's width: InnoDB indexes at most 3072 bytes of a column.
MAX_USER_BYTES = 3072
#: Idle connections kept for reuse; a burst beyond this closes its extras when done.
_MAX_IDLE = 16
# Error codes PyMySQL has no name for.
_ER_CONNECTION_KILLED = 1927  # MariaDB: KILL of this connection
_ER_CLIENT_INTERACTION_TIMEOUT = 4031  # MySQL 8: wait_timeout ended an idle connection
_ER_STATEMENT_TIMEOUT = 1969  # MariaDB: max_statement_time
_ER_QUERY_TIMEOUT = 3024  # MySQL: max_execution_time
# The connection is gone (killed, server restarted, idle too long): a new one may work.
_LOST = frozenset(
    (
        CR.CR_SERVER_GONE_ERROR,
        CR.CR_SERVER_LOST,
        _ER_CONNECTION_KILLED,
        _ER_CLIENT_INTERACTION_TIMEOUT,
        ER.SERVER_SHUTDOWN,
    )
)
_UNREACHABLE = frozenset((CR.CR_CONN_HOST_ERROR, CR.CR_CONNECTION_ERROR, CR.CR_UNKNOWN_HOST, ER.CON_COUNT_ERROR))
_UNREACHABLE |= {ER.TOO_MANY_USER_CONNECTIONS, ER.ACCESS_DENIED_ERROR, ER.DBACCESS_DENIED_ERROR, ER.BAD_DB_ERROR}
_UNREACHABLE |= {ER.HOST_NOT_PRIVILEGED, ER.HOST_IS_BLOCKED}
_TIMEOUTS = frozenset({ER.LOCK_WAIT_TIMEOUT, _ER_STATEMENT_TIMEOUT, _ER_QUERY_TIMEOUT})
_FULL = frozenset({ER.RECORD_FILE_FULL, ER.DISK_FULL, ER.OUT_OF_RESOURCES})


def _code(exc: BaseException) -> int | None:
    args = getattr(exc, "args", ())
    return args[0] if args and type(args[0]) is int else None


def _timed_out(exc: BaseException) -> bool:
    """Whether a lost connection was PyMySQL giving up on a read or write that took too long."""
    if _code(exc) not in (CR.CR_SERVER_LOST, CR.CR_SERVER_GONE_ERROR):
        return False
    cause = exc.__cause__ or exc.__context__
    return isinstance(cause, TimeoutError) or "timed out" in str(exc)


def _lost(exc: BaseException) -> bool:
    if isinstance(exc, pymysql.err.InterfaceError):
        return True  # PyMySQL's "(0, '')": the connection was already closed
    return _code(exc) in _LOST and not _timed_out(exc)


def _message(exc: BaseException) -> str:
    """The server's or driver's reason, first line only and without a store key (a duplicate-key error quotes it)."""
    args: tuple[object, ...] = getattr(exc, "args", ())
    first = first_line(str(args[1]) if len(args) > 1 else str(exc), type(exc).__name__)
    return f"({_code(exc)}) {first}" if _code(exc) else first


class MySQLStore(SQLStore):
    """Sessions in a MariaDB or MySQL 8 InnoDB table, created on first use (tested on MariaDB 10.11).

    One row per session: ``key`` (the primary key), ``data`` (a JSON object
    mapping each top-level session key to its value as JSON text), ``created_at``
    and ``expires_at`` (epoch seconds) and ``user_id`` (the user's ID as UTF-8
    bytes, at most :data:`MAX_USER_BYTES`; indexed). Values are kept as JSON
    text inside the object so that they come back exactly as they went in,
    whatever the server's JSON type does to numbers.

    Every save is one statement: an update is an ``UPDATE ... JSON_MERGE_PATCH(data,
    changes) ... WHERE key = ? AND expires_at > now``; a new session an ``INSERT ... ON
    DUPLICATE KEY UPDATE`` that merges into a live row and replaces an expired one; a
    rename (``Update.replaces``) changes the live row's key in place.

    Each operation takes an idle connection (or opens one) and gives it back. Every timeout
    is finite, InnoDB's lock wait included, so a stuck server or a held row lock is a
    :class:`~wsgisession.errors.StoreError`, never a hang.

    :param host: the server's host name or address.
    :param port: its TCP port.
    :param user: the user to log in as (PyMySQL's default, the OS user, if None).
    :param password: that user's password; never shown in messages or ``repr``.
    :param database: the database (schema) holding the table.
    :param unix_socket: a Unix socket path to connect through instead of TCP.
    :param table: the table's name.
    :param connect_timeout: seconds to wait for a connection.
    :param read_timeout: seconds to wait for a reply; must exceed *lock_wait_timeout*.
    :param write_timeout: seconds to wait to send a statement.
    :param lock_wait_timeout: InnoDB's ``innodb_lock_wait_timeout`` (whole
        seconds) for this store's connections: a row locked longer than that
        by another transaction raises :class:`~wsgisession.errors.StoreTimeoutError`.
    :param ssl_ca: a CA certificate file: connect over TLS and verify the server against it.
    :param create: create the table if it is missing; if ``False``, a missing
        table raises :class:`~wsgisession.errors.StoreUnavailableError`.
    :param clock: see :class:`~wsgisession.stores.base.StoreBase`.
    """

    #: What PyMySQL raises when the store fails (OSError: a socket failing outside PyMySQL's own wrapping).
    failures = (pymysql.err.MySQLError, OSError)
    #: How many times a statement InnoDB rolled back to break a deadlock is replayed.
    _retries = 3

    def __init__(
        self,
        *,
        host: str = "localhost",
        port: int = 3306,
        user: str | None = None,
        password: str = "",
        database: str,
        unix_socket: str | None = None,
        table: str = "wsgisession_sessions",
        connect_timeout: float = 5.0,
        read_timeout: float = 15.0,
        write_timeout: float = 15.0,
        lock_wait_timeout: int = 5,
        ssl_ca: str | None = None,
        create: bool = True,
        clock: Callable[[], float] | None = None,
    ) -> None:
        table_name("MySQLStore", table, 64)
        super().__init__(table=table, create=create, clock=clock)
        self._schema_ready = True  # until a statement finds no table: then it is made, and the statement run again
        if not (isinstance(database, str) and database):
            raise ConfigurationError("MySQLStore: a database is required")
        if not (isinstance(port, int) and 0 < port < 65536):
            raise ConfigurationError(f"MySQLStore: port must be 1-65535, not {port!r}")
        if isinstance(lock_wait_timeout, bool) or not (
            isinstance(lock_wait_timeout, int) and 1 <= lock_wait_timeout <= 3600
        ):
            raise ConfigurationError("MySQLStore: lock_wait_timeout must be a whole number of seconds, 1-3600")
        self.connect_timeout = positive_seconds(connect_timeout, "MySQLStore: connect_timeout")
        self.read_timeout = positive_seconds(read_timeout, "MySQLStore: read_timeout")
        self.write_timeout = positive_seconds(write_timeout, "MySQLStore: write_timeout")
        if self.read_timeout <= lock_wait_timeout:
            # A reply given up on while the server waits for the lock leaves the statement running.
            raise ConfigurationError("MySQLStore: read_timeout must be longer than lock_wait_timeout")
        self.lock_wait_timeout = lock_wait_timeout
        self._params: dict[str, Any] = dict(
            host=host, port=port, user=user, password=password, database=database, unix_socket=unix_socket,
            charset="utf8mb4", autocommit=True, program_name="wsgisession",
            # Count the rows matched, not changed: a save of a value it already had still "landed".
            client_flag=CLIENT.FOUND_ROWS,
            connect_timeout=self.connect_timeout, read_timeout=self.read_timeout, write_timeout=self.write_timeout,
            init_command=f"SET SESSION innodb_lock_wait_timeout = {int(lock_wait_timeout)}",
        )  # fmt: skip
        if ssl_ca is not None:
            self._params.update(ssl_ca=ssl_ca, ssl_verify_cert=True, ssl_verify_identity=True)
        self._where = f"{unix_socket or f'{host}:{port}'}/{database}"
        self._idle: list[Connection[Cursor]] = []
        self._lock = threading.Lock()
        t = f"`{self.table}`"
        self._sql_load = f"SELECT data, created_at, expires_at, user_id FROM {t} WHERE `key` = %s"
        # A JSON merge patch sets each name to its new JSON text and removes those patched with
        # null: one request's changes, applied to the row as it is now. A NULL user keeps the binding.
        self._sql_update = (
            f"UPDATE {t} SET data = JSON_MERGE_PATCH(data, %s), expires_at = %s, user_id = COALESCE(%s, user_id) "
            "WHERE `key` = %s AND expires_at > %s"
        )
        self._sql_update_no_data = (
            f"UPDATE {t} SET expires_at = %s, user_id = COALESCE(%s, user_id) WHERE `key` = %s AND expires_at > %s"
        )
        # Onto a live row, merge; onto an expired one, start afresh as if pruned first. Assignments
        # run left to right, each seeing the ones before: expires_at, which the others test, goes last.
        self._sql_create = (
            f"INSERT INTO {t} (`key`, data, created_at, expires_at, user_id) "
            "VALUES (%(key)s, %(fresh)s, %(created)s, %(expires)s, %(user)s) ON DUPLICATE KEY UPDATE "
            "data = IF(expires_at > %(now)s, JSON_MERGE_PATCH(data, %(patch)s), VALUES(data)), "
            "created_at = IF(expires_at > %(now)s, created_at, VALUES(created_at)), "
            "user_id = IF(expires_at > %(now)s, COALESCE(VALUES(user_id), user_id), VALUES(user_id)), "
            "expires_at = VALUES(expires_at)"
        )
        # A rename changes the row's key in place, in one statement that locks the row until it commits, so a
        # destroy (which locks the row) or a destroy_user (which locks the user's rows and the gaps between
        # them) runs first, leaving nothing live to move, or waits and finds the row under its new key. A rename
        # and a destroy_user locking in opposite orders deadlock: InnoDB breaks it and _run() replays the loser.
        self._sql_rename = (
            f"UPDATE {t} SET `key` = %s, data = JSON_MERGE_PATCH(data, %s), expires_at = %s, "
            "user_id = COALESCE(%s, user_id) WHERE `key` = %s AND expires_at > %s"
        )
        self._sql_live = f"SELECT 1 FROM {t} WHERE `key` = %s AND expires_at > %s"
        self._sql_touch = f"UPDATE {t} SET expires_at = %s WHERE `key` = %s AND expires_at > %s"
        self._sql_destroy = f"DELETE FROM {t} WHERE `key` = %s"
        self._sql_count = f"SELECT COUNT(*) FROM {t} WHERE expires_at > %s"
        self._sql_index_size = f"SELECT COUNT(*) FROM {t} WHERE user_id IS NOT NULL"
        self._sql_sessions_of = (
            f"SELECT `key`, data, created_at, expires_at, user_id FROM {t} "
            "WHERE user_id = %s AND expires_at > %s ORDER BY created_at, `key`"
        )
        # In a REPEATABLE READ transaction this locks the user's rows and the gaps between them (next-key
        # locks): no rename slips a row in behind the scan before the DELETE (there is no DELETE ... RETURNING).
        self._sql_lock_user = f"SELECT expires_at FROM {t} WHERE user_id = %s FOR UPDATE"
        self._sql_destroy_user = f"DELETE FROM {t} WHERE user_id = %s"
        self._sql_prune = f"DELETE FROM {t} WHERE expires_at <= %(now)s ORDER BY expires_at LIMIT %(limit)s"
        self._sql_create_table = (
            f"CREATE TABLE IF NOT EXISTS {t} ("
            "`key` CHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL PRIMARY KEY, "
            "data JSON NOT NULL, "
            "created_at DOUBLE NOT NULL, "
            "expires_at DOUBLE NOT NULL, "
            f"user_id VARBINARY({MAX_USER_BYTES}) NULL, "
            "KEY expires_at_idx (expires_at), "
            "KEY user_id_idx (user_id)"
            ") ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin"
        )

    @classmethod
    def from_url(cls, url: str, *, create: bool = True) -> MySQLStore:
        """Open a store from ``mysql://user[:password]@host[:port]/database[?table=...]`` (or ``mariadb://``).

        Query options: ``table``, ``connect_timeout``, ``read_timeout``,
        ``write_timeout``, ``lock_wait_timeout``, ``unix_socket`` and ``ssl_ca``.
        The user name and password are percent-decoded. Raises
        :class:`~wsgisession.errors.ConfigurationError` for a URL it cannot use,
        without ever quoting the password.
        """
        if not isinstance(url, str):
            raise ConfigurationError(f"a MySQL URL must be a str, not {type(url).__name__}")
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as exc:
            raise ConfigurationError(f"MySQLStore: invalid URL: {exc}") from None
        if parts.scheme.lower() not in _SCHEMES:
            raise ConfigurationError("MySQLStore: the URL must start with mysql:// or mariadb://")
        database = unquote(parts.path.lstrip("/"))
        if not database or "/" in database:
            raise ConfigurationError("MySQLStore: the URL must name one database: mysql://user@host/database")
        numbers = dict.fromkeys(("connect_timeout", "read_timeout", "write_timeout"), float)
        options = query_options(
            url, {**numbers, "table": str, "lock_wait_timeout": int, "unix_socket": str, "ssl_ca": str}
        )
        return cls(
            host=parts.hostname or "localhost",
            port=port or 3306,
            user=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else "",
            database=database,
            create=create,
            **options,  # type: ignore[arg-type]
        )

    def _rows(self, statement: str, params: Any) -> Sequence[Any]:
        return self._run(lambda cur, replayed: (cur.execute(statement, params), cur.fetchall())[1])

    def _execute(self, statement: str, params: Any) -> int:
        count: int = self._run(lambda cur, replayed: cur.execute(statement, params))
        return count

    def _parts(self, text: Any, created_at: Any, expires_at: Any, user: Any) -> tuple[object, float, float, Any]:
        """A row as :meth:`decode` takes it: the data as a mapping of JSON texts when it is one."""
        try:
            outer = _json.decode(text)
        except (ValueError, TypeError):
            outer = None
        if isinstance(user, bytes):
            with contextlib.suppress(UnicodeDecodeError):  # left as bytes, decode() finds the record corrupt
                user = user.decode("utf-8")
        # Anything else goes to decode() as it is, which finds it corrupt (and logs it).
        return (outer if type(outer) is dict else text), created_at, expires_at, user

    def _write(self, key: str, update: Update, now: float) -> bool:
        user = None if update.user_id is None else self._user_param(update.user_id)
        patch: dict[str, str | None] = dict.fromkeys(update.delete)
        patch.update((name, _json.encode(value)) for name, value in update.set.items())
        expires = float(update.expires_at)
        if update.replaces is not None and update.replaces != key:
            rename = (key, _json.encode(patch), expires, user, update.replaces, now)

            def op(cur: Cursor, retrying: bool) -> bool:
                if cur.execute(self._sql_rename, rename) == 1:
                    return True
                # A replay after a lost reply may find it landed: its new key (a fresh ID no one else writes) is live.
                return retrying and cur.execute(self._sql_live, (key, now)) == 1

            return self._run(op)
        if update.created_at is None or update.replaces is not None:  # a rename onto its own key only updates
            if patch:
                return self._execute(self._sql_update, (_json.encode(patch), expires, user, key, now)) == 1
            return self._execute(self._sql_update_no_data, (expires, user, key, now)) == 1
        fresh = {name: text for name, text in patch.items() if text is not None}
        create = {
            "key": key,
            "fresh": _json.encode(fresh),
            "patch": _json.encode(patch),
            "created": float(update.created_at),
            "expires": expires,
            "user": user,
            "now": now,
        }
        self._execute(self._sql_create, create)
        return True

    def _release(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            _quit(conn)

    def _destroy_user(self, user: bytes, now: float) -> int:
        def op(cur: Cursor, retrying: bool) -> int:
            # A replay after a lost connection finds the transaction never committed (it runs again) or done
            # (no row left): the sessions are gone either way, though a replay after a lost COMMIT counts 0.
            cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            cur.execute("START TRANSACTION")
            try:
                cur.execute(self._sql_lock_user, (user,))
                expiries = [row[0] for row in cur.fetchall()]
                if expiries:
                    cur.execute(self._sql_destroy_user, (user,))
                cur.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(pymysql.err.MySQLError):  # a lost connection rolls back on its own
                    cur.execute("ROLLBACK")
                raise
            return sum(1 for expires_at in expiries if expires_at > now)

        return self._run(op)

    def _user_param(self, user_id: str, *, lookup: bool = False) -> bytes | None:
        """*user_id* as the column holds it; one too long for it is refused, or for a lookup matches nothing."""
        raw = user_bytes(user_id)
        if len(raw) <= MAX_USER_BYTES:
            return raw
        if lookup:
            return None
        raise ValueError(f"MySQLStore: a user ID may be at most {MAX_USER_BYTES} bytes of UTF-8, not {len(raw)}")

    def _connect(self) -> Connection[Cursor]:
        conn: Connection[Cursor] = pymysql.connect(**self._params)
        try:
            with conn.cursor() as cur:
                # Locking reads lock the rows they find, not the gaps: two renames of one row cannot
                # deadlock on the gap its new key goes into. destroy_user asks for the gaps.
                cur.execute("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
        except BaseException:
            _quit(conn)
            raise
        return conn

    def _checkout(self) -> tuple[Connection[Cursor], bool]:
        """An idle connection (``False``: it may have died while idle) or a new one (``True``)."""
        with self._lock:
            self._ready()
            if self._idle:
                return self._idle.pop(), False
        return self._connect(), True

    def _checkin(self, conn: Connection[Cursor], fresh: bool) -> None:
        with self._lock:
            if conn.open and not self._closed and len(self._idle) < _MAX_IDLE:
                self._idle.append(conn)
                return
        _quit(conn)

    def _after_fork(self) -> None:
        self._lock = threading.Lock()  # a parent thread may have held it at fork time
        self._idle = []

    def _attempt(self, conn: Connection[Cursor], op: Callable[[Cursor, bool], T], replayed: bool) -> T:
        with conn.cursor() as cur:
            if not self._schema_ready:
                cur.execute(self._sql_create_table)
                self._schema_ready = True
            return op(cur, replayed)

    def _retry(self, exc: BaseException, conn: Connection[Cursor], fresh: bool) -> Retry:
        # Only a connection from the idle list is replaced: one just opened that fails is a server down, and a
        # read that timed out may still run on the server. A deadlock victim was rolled back whole: replays repeat none.
        code, lost = _code(exc), _lost(exc)
        if lost or _timed_out(exc):
            _quit(conn)
        if code == ER.NO_SUCH_TABLE:
            return "table"
        if lost:
            return None if fresh else "lost"
        return "rolled back" if code == ER.LOCK_DEADLOCK else None

    def _failure(self, action: str, exc: BaseException) -> StoreError:
        code, reason, where = _code(exc), _message(exc), self._where
        if code in _TIMEOUTS or _timed_out(exc):
            return StoreTimeoutError(
                f"MySQLStore: MySQL at {where} did not finish {action} in time (lock_wait_timeout="
                f"{self.lock_wait_timeout}s, read_timeout={self.read_timeout:g}s): {reason}"
            )
        if code in _FULL or (code == ER.GET_ERRNO and "28" in reason):
            return StoreFullError(f"MySQLStore: MySQL at {where} is out of space ({action}): {reason}")
        if code == ER.NO_SUCH_TABLE:
            return self._missing_table(where)
        if code in _UNREACHABLE or _lost(exc) or not isinstance(exc, pymysql.err.MySQLError):
            return StoreUnavailableError(f"MySQLStore: cannot reach MySQL at {where} ({action}): {reason}")
        return StoreError(f"MySQLStore: MySQL at {where} failed {action} on table {self.table!r}: {reason}")


def _quit(conn: Connection[Cursor]) -> None:
    with contextlib.suppress(pymysql.err.MySQLError):  # already closed
        conn.close()
