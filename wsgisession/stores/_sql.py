"""What the SQL stores share: one row per session, statements run with retries, the capabilities on top."""

from __future__ import annotations

import random
import re
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Literal, TypeVar

from ..errors import ConfigurationError, StoreError, StoreUnavailableError
from .base import BatchPruneBase, Record, log, scrub, user_bytes

T = TypeVar("T")
#: Why a failed statement may run again: the table is missing (make it and go
#: on), the connection is gone (take another), or the server rolled back.
Retry = Literal["table", "lost", "rolled back"] | None
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def table_name(store: str, table: object, longest: int, *, qualified: bool = False) -> tuple[str, ...]:
    """*table*'s parts (``schema.table`` when *qualified*), each at most *longest* characters.

    :raises ConfigurationError: anything else, so no table name ever needs quoting.
    """
    parts = tuple(table.split(".")) if isinstance(table, str) else ()
    if 0 < len(parts) <= 1 + qualified and all(_NAME.fullmatch(p) and len(p) <= longest for p in parts):
        return parts
    raise ConfigurationError(
        f"{store}: table name {table!r} must be letters, digits and underscores "
        f"(at most {longest}, not starting with a digit){', optionally schema-qualified' if qualified else ''}"
    )


def first_line(text: str, fallback: str) -> str:
    """A driver message's first line (not the detail that may quote a row), with any store key blanked."""
    return scrub((text.strip().splitlines() or [fallback])[0])


class SQLStore(BatchPruneBase):
    """A store of one row per session in a SQL table; a dialect supplies statements and connections.

    This class writes the primitives but ``_write``, and the capabilities. A prune deletes one
    batch per short statement, so it never holds many rows locked and saves go on in between.
    A dialect sets the ``_sql_*`` statements below (``_sql_prune`` takes ``now`` and ``limit``
    by name) and writes ``_rows``, ``_execute`` (the rowcount), ``_write``, ``_destroy_user``,
    ``_release`` and ``_after_fork``; a pooled one runs its statements through :meth:`_run`.
    """

    # The dialect's statements, as its driver takes them.
    _sql_load: Any
    _sql_touch: Any
    _sql_destroy: Any
    _sql_prune: Any
    _sql_sessions_of: Any
    _sql_count: Any
    _sql_index_size: Any
    #: How many times :meth:`_run` runs an operation again.
    _retries = 1
    _ready = BatchPruneBase._refuse_closed

    def __init__(self, *, table: str, create: bool, clock: Callable[[], float] | None) -> None:
        super().__init__(clock=clock)
        self.table, self.create = table, bool(create)
        self._schema_ready = False
        self._where = ""  # where the table is, for messages: never a password

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._where} table={self.table!r}>"

    def _rows(self, statement: Any, params: Any) -> Sequence[Any]:
        raise NotImplementedError

    def _execute(self, statement: Any, params: Any) -> int:
        raise NotImplementedError

    def _parts(self, data: Any, created_at: Any, expires_at: Any, user_id: Any) -> tuple[object, float, float, Any]:
        """A row's columns as :meth:`decode` takes them."""
        return data, created_at, expires_at, user_id

    def _user_param(self, user_id: str, *, lookup: bool = False) -> Any:
        """*user_id* as the column holds it; ``None`` for a lookup that can match nothing."""
        user_bytes(user_id)
        return user_id

    def _destroy_user(self, user: Any, now: float) -> int:
        raise NotImplementedError

    def _release(self) -> None:
        pass

    def _read(self, key: str, now: float) -> tuple[object, float, float, str | None] | None:
        rows = self._rows(self._sql_load, (key,))
        return self._parts(*rows[0]) if rows else None

    def _touch(self, key: str, expires_at: float, now: float) -> bool:
        return self._execute(self._sql_touch, (expires_at, key, now)) == 1

    def _delete(self, key: str) -> None:
        self._execute(self._sql_destroy, (key,))

    def _close(self) -> None:
        self._closed = True
        self._release()

    def _prune_batches(self, now: float, batch_size: int) -> Iterator[int]:
        params = {"now": now, "limit": batch_size}
        while True:
            removed = self._execute(self._sql_prune, params)
            if removed:
                yield removed
            if removed < batch_size:
                return

    def sessions_of(self, user_id: str) -> list[tuple[str, Record]]:
        """The live records bound to *user_id*, oldest first (an indexed lookup)."""
        user = self._user_param(user_id, lookup=True)
        if user is None:
            return []
        with self._errors("sessions_of"):
            rows = self._rows(self._sql_sessions_of, (user, self.now()))
        found = ((row[0], self.decode(*self._parts(*row[1:]))) for row in rows)
        return [(key, record) for key, record in found if record is not None]

    def destroy_user(self, user_id: str) -> int:
        """Delete every record bound to *user_id* at once; return how many live ones there were."""
        user = self._user_param(user_id, lookup=True)
        if user is None:
            return 0
        with self._errors("destroy_user"):
            return self._destroy_user(user, self.now())

    def count(self) -> int:
        """How many live records the table holds."""
        return self._scalar("count", self._sql_count, (self.now(),))

    def index_size(self) -> int:
        """How many rows are bound to a user, expired ones included until pruned (tests and diagnostics)."""
        return self._scalar("index_size", self._sql_index_size, ())

    def _scalar(self, action: str, statement: Any, params: tuple[Any, ...]) -> int:
        with self._errors(action):
            rows = self._rows(statement, params)
        return int(rows[0][0]) if rows else 0

    def _checkout(self) -> tuple[Any, Any]:
        """A connection, and a token that :meth:`_retry` and :meth:`_checkin` are given back with it."""
        raise NotImplementedError

    def _checkin(self, conn: Any, token: Any) -> None:
        """Give *conn* back (the pool, or the dialect, drops one that is dead)."""
        raise NotImplementedError

    def _attempt(self, conn: Any, op: Callable[[Any, bool], T], replayed: bool) -> T:
        """Run *op* on *conn* (after making sure of the table, the first time)."""
        raise NotImplementedError

    def _retry(self, exc: BaseException, conn: Any, token: Any) -> Retry:
        """Why *op* may run again after *exc* on *conn*, or ``None``: it may not."""
        raise NotImplementedError

    # Retried: an operation whose table was dropped since we made sure of it (made again, with create=True),
    # whose connection was lost (a restart, a kill, a dropped socket) or whose transaction the server rolled
    # back (a deadlock, a serialization failure: it wrote nothing); nothing else (a timeout, a constraint, a
    # full disk would only fail again). A lost connection may have lost just the reply to a commit, so every
    # operation may run twice: a merge, upsert, touch or delete twice leaves what once does; a create makes a
    # session no other request knows yet; a rename or destroy_user, told by op's second argument, says how a
    # replay ends. Only what it reports can differ: rows a first attempt deleted are not counted again.
    def _run(self, op: Callable[[Any, bool], T]) -> T:
        """Run ``op(connection, replayed)`` on a connection; run it again when :meth:`_retry` allows."""
        conn, token = self._checkout()
        attempt = 0
        try:
            while True:
                try:
                    return self._attempt(conn, op, attempt > 0)
                except self.failures as exc:
                    why = self._retry(exc, conn, token)
                    if why is None or attempt >= self._retries or (why == "table" and not self.create):
                        raise
                attempt += 1
                if why == "table":  # make it
                    self._schema_ready = False
                elif why == "lost":
                    log.warning("%r: lost a connection; retrying on another", self)
                    old, conn = conn, None
                    self._checkin(old, token)
                    conn, token = self._checkout()
                elif why == "rolled back":  # let the transaction that won finish first
                    time.sleep(random.uniform(0, 0.004 * attempt))
        finally:
            if conn is not None:
                self._checkin(conn, token)

    def _missing_table(self, where: str) -> StoreError:
        why = "" if self.create else " (create=False: it is not made)"
        return StoreUnavailableError(f"{type(self).__name__}: table {self.table!r} does not exist at {where}{why}")
