"""The contract between a session and the place its data lives.

A store is keyed by an opaque *key*: a hash of the session ID, never the ID
itself (see :func:`wsgisession.ids.store_key`). It holds, per key, a record of
JSON data plus its creation and expiry times, and nothing else. The rules every
store follows, and :class:`wsgisession.testing.StoreContract` checks:

* :meth:`Store.load` returns ``None`` for a key that is missing, expired or
  whose record cannot be read back as JSON (logged as a security event).
  It raises :class:`~wsgisession.errors.StoreError` only when the store
  itself fails (server down, disk unreadable).
* :meth:`Store.save` applies an :class:`Update` atomically: the keys it sets
  and deletes, nothing more, to the record as it is *now* in the store, so
  two requests that change different keys both land. An update that does not
  create (``created_at is None``) never brings back a record that was destroyed
  or has expired: it returns ``False`` and writes nothing ("destroy wins").
* An update with ``replaces`` is a rename (:meth:`Session.regenerate`): in one
  atomic step the record under ``replaces`` is moved to the new key with the
  update applied, and the old key is gone. If the old record was destroyed or
  has expired, nothing is written and ``save`` returns ``False``: a session
  logged out meanwhile is not brought back under a new ID either.
* A failed write raises ``StoreError`` and leaves the previous record intact.
* Data is stored as JSON text. No store ever pickles.
* A key that is not 64 lowercase hex digits (see :func:`valid_key`) is
  absent to ``load``, ``touch`` and ``destroy``; ``save`` refuses it with
  ``ValueError``. Hostile input never reaches a path, a query or a command.
* Connections are opened on first use, and a forked process opens its own:
  a server that forks after creating the store shares none between workers.
"""

from __future__ import annotations

import logging
import math
import os
import re
import weakref
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable
from urllib.parse import parse_qsl, urlsplit

from .. import _clock, _json
from ..errors import ConfigurationError, StoreError, StoreUnavailableError

_KEY = re.compile(r"[0-9a-f]{64}")
security_log = logging.getLogger("wsgisession.security")
#: Parts :meth:`StoreBase.decode` refuses (logging a corrupt record), for a record that is not ours to read.
CORRUPT: tuple[object, float, float, None] = (b"", math.nan, math.nan, None)
log = logging.getLogger("wsgisession.store")


@dataclass(slots=True)
class Record:
    """One session as a store returns it."""

    data: dict[str, Any]
    created_at: float
    expires_at: float
    #: The user the session is bound to (:meth:`Session.login`), or ``None``.
    user_id: str | None = None


@dataclass(frozen=True, slots=True)
class Update:
    """The changes one request made to a session, to apply to the stored record.

    ``set`` holds whole new values for top-level keys (JSON data), ``delete``
    the top-level keys to remove. ``expires_at`` is the record's new expiry
    (epoch seconds). ``created_at`` is set only when the session is new: the
    store then creates the record if it does not exist. When it is ``None`` the
    record must already exist and be live, or nothing is written.
    ``user_id``, when set, binds the record to that user (see
    :class:`UserIndex`); ``None`` leaves the binding as it is.

    ``replaces``, when set, is the key of a live record this update renames
    (the module's rules; ``created_at`` is then ignored): the new record holds its data
    as it is now with ``set`` and ``delete`` applied, its ``created_at`` and
    user binding (unless ``user_id`` rebinds it), and the new ``expires_at``.
    """

    set: Mapping[str, Any] = field(default_factory=dict)
    delete: frozenset[str] = frozenset()
    expires_at: float = 0.0
    created_at: float | None = None
    user_id: str | None = None
    replaces: str | None = None

    def apply(self, data: dict[str, Any]) -> dict[str, Any]:
        """Apply these changes to *data* in place and return it."""
        for key in self.delete:
            data.pop(key, None)
        data.update(self.set)
        return data


@runtime_checkable
class Store(Protocol):
    """What a session store provides. Implement it to add a backend."""

    def load(self, key: str) -> Record | None:
        """Return the live record for *key*, or ``None`` if missing, expired or unreadable."""
        ...

    def save(self, key: str, update: Update) -> bool:
        """Apply *update* atomically; return ``False`` if the record was gone and nothing was written."""
        ...

    def touch(self, key: str, expires_at: float) -> bool:
        """Set a live record's expiry without rewriting its data; ``False`` if it is gone."""
        ...

    def destroy(self, key: str) -> None:
        """Delete the record for *key* (no error if it does not exist)."""
        ...

    def prune(self) -> int:
        """Delete every expired record; return how many were deleted."""
        ...

    def close(self) -> None:
        """Release connections and files. The store may not be used afterwards."""
        ...


@runtime_checkable
class UserIndex(Protocol):
    """A store that can find a user's sessions without scanning them all.

    Every built-in store is one. The index follows the records: a session
    destroyed, expired or pruned is never returned, and pruning removes its
    index entry, so the index stays the size of the live set.
    """

    def sessions_of(self, user_id: str) -> list[tuple[str, Record]]:
        """The live records bound to *user_id*, as ``(key, record)`` pairs, oldest first."""
        ...

    def destroy_user(self, user_id: str) -> int:
        """Delete every record bound to *user_id*; return how many live ones there were."""
        ...


@runtime_checkable
class Countable(Protocol):
    """A store that can say how many live sessions it holds (``wsgisession count``)."""

    def count(self) -> int:
        """How many live records the store holds."""
        ...


@runtime_checkable
class BatchedPrune(Protocol):
    """A store that prunes in bounded batches, so a large prune never holds it for long."""

    def prune_batches(self, batch_size: int = 1000) -> Iterator[int]:
        """Delete expired records *batch_size* at a time, yielding how many each batch deleted."""
        ...


@runtime_checkable
class IndexSized(Protocol):
    """A store that can say how many entries its user index holds (tests and diagnostics)."""

    def index_size(self) -> int:
        """How many (user, session) entries the user index holds."""
        ...


@runtime_checkable
class ProcessLocal(Protocol):
    """A store whose sessions live in one process (``MemoryStore``): not for a multi-process server."""

    process_local: Literal[True]


class StoreBase:
    """The public :class:`Store` methods, written once; a backend writes the primitives.

    :meth:`load`, :meth:`save`, :meth:`touch`, :meth:`destroy` and
    :meth:`prune` check the key (a hostile one is absent, or ``ValueError``
    for ``save``), read the clock, turn the driver's own exceptions (the
    :attr:`failures` tuple) into :class:`~wsgisession.errors.StoreError` via
    :meth:`_failure`, decode records (a corrupt one is absent and logged once,
    as a security event) and log a dropped save. A backend implements:

    * ``_read(key, now)``: the live record as ``(data, created_at, expires_at,
      user_id)`` or ``None``; *data* is JSON text (str or bytes) of an object,
      or a mapping of top-level names to JSON text (one field per key).
    * ``_write(key, update, now) -> bool``: apply the update atomically: merge
      into the live record, create (``created_at``), rename (``replaces``,
      already checked to be a valid key), or return ``False`` ("destroy wins").
    * ``_touch(key, expires_at, now) -> bool``, ``_delete(key)``,
      ``_prune(now) -> int`` and ``_close()``.
    * optionally ``_ready()``: raise if the store cannot be used now; run
      before every primitive, inside the error mapping. A store refused once
      closed sets ``_ready = StoreBase._refuse_closed`` and ``_closed`` in ``_close()``.
    * optionally ``_after_fork()``: run in a forked child before any thread of
      its own, to forget what belongs to the parent (connections, held locks)
      without closing it, which would end the parent's server sessions or locks.

    :param clock: the time in epoch seconds; by default :func:`wsgisession._clock.now`
        (read at each call, so a test may move it).
    """

    #: The driver's exceptions that mean "the store failed" (mapped by :meth:`_failure`).
    failures: tuple[type[BaseException], ...] = ()
    _closed = False

    def __init__(self, *, clock: Callable[[], float] | None = None) -> None:
        self._clock = clock
        if type(self)._after_fork is not StoreBase._after_fork:
            _forkable.add(self)

    def now(self) -> float:
        """The store's clock."""
        return self._clock() if self._clock is not None else _clock.now()

    def _failure(self, action: str, exc: BaseException) -> StoreError:
        """The :class:`StoreError` for *exc*, raised by *action*: which store, what failed; never a key or password."""
        return StoreError(f"{self!r}: {action} failed: {type(exc).__name__}: {scrub(str(exc))}")

    def _ready(self) -> None:
        pass

    def _refuse_closed(self) -> None:
        if self._closed:
            raise StoreUnavailableError(f"{self!r} is closed")

    @contextmanager
    def _errors(self, action: str) -> Iterator[None]:
        try:
            self._ready()
            yield
        except StoreError:
            raise
        except self.failures as exc:
            raise self._failure(action, exc) from exc

    def decode(self, data: object, created_at: float, expires_at: float, user_id: str | None) -> Record | None:
        """The record these stored parts make, or ``None`` (logged once) if they are not ours to read."""
        try:
            cls = type(data)
            if cls is str or cls is bytes:
                values = _json.decode(data)  # type: ignore[arg-type]
                if type(values) is not dict:
                    raise ValueError("not a JSON object")
            elif isinstance(data, Mapping):
                values = {str(name): _json.decode(text) for name, text in data.items()}
            else:
                values = _json.decode(data)  # type: ignore[arg-type]
                if type(values) is not dict:
                    raise ValueError("not a JSON object")
            created_at, expires_at = float(created_at), float(expires_at)
            if not (math.isfinite(created_at) and math.isfinite(expires_at)):
                raise ValueError("times not finite")
            if user_id is not None and type(user_id) is not str:
                raise ValueError("user not text")
        except (ValueError, TypeError, UnicodeDecodeError):
            security_log.warning(
                "corrupt session record in %r treated as absent", self, extra={"security_event": "corrupt_record"}
            )
            return None
        return Record(values, created_at, expires_at, user_id)

    def load(self, key: str) -> Record | None:
        """Return the live record for *key*, or ``None`` if missing, expired or unreadable."""
        if not valid_key(key):
            return None
        now = self.now()
        # Not _errors() on the per-request path: its generator costs more than the read.
        try:
            self._ready()
            found = self._read(key, now)
        except StoreError:
            raise
        except self.failures as exc:
            raise self._failure("load", exc) from exc
        if found is None:
            return None
        record = self.decode(*found)
        return record if record is not None and record.expires_at > now else None

    def save(self, key: str, update: Update) -> bool:
        """Apply *update* atomically; return ``False`` if the record was gone and nothing was written."""
        if not valid_key(key):
            raise ValueError("not a store key")
        if update.user_id is not None:
            user_bytes(update.user_id)
        written = False
        if update.replaces is None or valid_key(update.replaces):
            try:
                self._ready()
                written = self._write(key, update, self.now())
            except StoreError:
                raise
            except self.failures as exc:
                raise self._failure("save", exc) from exc
        if not written:
            log.info("save dropped: the session was destroyed or expired meanwhile")
        return written

    def touch(self, key: str, expires_at: float) -> bool:
        """Set a live record's expiry without rewriting its data; ``False`` if it is gone."""
        if not valid_key(key):
            return False
        try:
            self._ready()
            return self._touch(key, float(expires_at), self.now())
        except StoreError:
            raise
        except self.failures as exc:
            raise self._failure("touch", exc) from exc

    def destroy(self, key: str) -> None:
        """Delete the record for *key* (no error if it does not exist)."""
        if valid_key(key):
            with self._errors("destroy"):
                self._delete(key)

    def prune(self) -> int:
        """Delete every expired record; return how many were deleted."""
        with self._errors("prune"):
            return self._prune(self.now())

    def close(self) -> None:
        """Release connections and files. The store may not be used afterwards."""
        self._close()

    def _read(self, key: str, now: float) -> tuple[object, float, float, str | None] | None:
        raise NotImplementedError

    def _write(self, key: str, update: Update, now: float) -> bool:
        raise NotImplementedError

    def _touch(self, key: str, expires_at: float, now: float) -> bool:
        raise NotImplementedError

    def _delete(self, key: str) -> None:
        raise NotImplementedError

    def _prune(self, now: float) -> int:
        raise NotImplementedError

    def _close(self) -> None:
        pass

    def _after_fork(self) -> None:
        pass


# The stores to tell of a fork: none shares a connection or a lock with the parent.
_forkable: weakref.WeakSet[StoreBase] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for store in list(_forkable):
        store._after_fork()


if hasattr(os, "register_at_fork"):  # not on Windows, which has no fork()
    os.register_at_fork(after_in_child=_after_fork_in_child)


class BatchPruneBase(StoreBase):
    """A :class:`StoreBase` that prunes in bounded batches (:class:`BatchedPrune`).

    The backend writes ``_prune_batches(now, batch_size)``, a generator of how
    many each batch deleted; ``prune()`` runs it to the end, 1000 at a time.
    """

    def prune_batches(self, batch_size: int = 1000) -> Iterator[int]:
        """Delete expired records *batch_size* at a time, yielding how many each batch deleted."""
        if type(batch_size) is not int or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, not {batch_size!r}")
        return self._pruning(self.now(), batch_size)

    def _pruning(self, now: float, batch_size: int) -> Iterator[int]:
        with self._errors("prune"):
            yield from self._prune_batches(now, batch_size)

    def _prune(self, now: float) -> int:
        return sum(self._prune_batches(now, 1000))

    def _prune_batches(self, now: float, batch_size: int) -> Iterator[int]:
        raise NotImplementedError


def query_options(url: str, allowed: Mapping[str, Callable[[str], object]]) -> dict[str, object]:
    """The options in *url*'s query string, each converted by its function in *allowed*.

    :raises ConfigurationError: an option not in *allowed*, given twice, or that its function refuses.
    """
    options: dict[str, object] = {}
    for name, value in parse_qsl(urlsplit(url).query, keep_blank_values=True, strict_parsing=False):
        if name not in allowed:
            known = ", ".join(sorted(allowed)) or "none"
            raise ConfigurationError(f"unknown store URL option {name!r} (known: {known})")
        if name in options:
            raise ConfigurationError(f"store URL option {name!r} given twice")
        try:
            options[name] = allowed[name](value)
        except (TypeError, ValueError) as exc:
            raise ConfigurationError(f"store URL option {name}={value!r}: {exc}") from None
    return options


def positive_seconds(value: object, name: str = "value") -> float:
    """*value* as a positive, finite number of seconds. :raises ConfigurationError: otherwise."""
    try:
        seconds = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        seconds = math.nan
    if isinstance(value, bool) or not (0 < seconds < math.inf):
        raise ConfigurationError(f"{name} must be a positive number of seconds, not {value!r}")
    return seconds


def expiry_slack(ttl: float) -> float:
    """How far an expiry may lag behind its exact value to spare a write: 1 % of the lifetime, at most a minute."""
    return min(60.0, ttl * 0.01)


def user_bytes(user_id: object) -> bytes:
    """*user_id* as UTF-8, for a store to index it under.

    :raises TypeError: it is not a str.
    :raises ValueError: it holds a lone surrogate, so it is not Unicode text.
    """
    if type(user_id) is not str:
        raise TypeError(f"a user ID must be a str, not {type(user_id).__name__}")
    try:
        return user_id.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("a user ID with a lone surrogate is not Unicode text") from None


def valid_key(key: object) -> bool:
    """Whether *key* has the shape of a store key (64 lowercase hex digits).

    Stores treat any other key as absent, so a hostile value can never reach a
    file path, a SQL statement or a Redis command.
    """
    return type(key) is str and _KEY.fullmatch(key) is not None


def scrub(text: str) -> str:
    """*text* with anything shaped like a store key blanked, for an error message (a key names a session)."""
    return _KEY.sub("<key>", text)
