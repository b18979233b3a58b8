"""The contract between a session and the place its data lives.

A store is keyed by an opaque *key*: a hash of the session ID, never the ID
itself (see :func:`wsgisession.ids.store_key`). It holds, per key, a record of
JSON data plus its creation and expiry times, and nothing else.

The rules every store follows, and :class:`wsgisession.testing.StoreContract`
checks:

* :meth:`Store.load` returns ``None`` for a key that is missing, expired or
  whose record cannot be read back as JSON (logged as a security event).
  It raises :class:`~wsgisession.errors.StoreError` only when the store itself
  fails (server down, disk unreadable).
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
* A failed write raises ``StoreError`` and leaves the previous record intact:
  never half-written.
* Data is stored as JSON text. No store ever pickles.
* A key that is not 64 lowercase hex digits (see :func:`valid_key`) is
  absent to ``load``, ``touch`` and ``destroy``; ``save`` refuses it with
  ``ValueError``. Hostile input never reaches a path, a query or a command.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

_KEY = re.compile(r"[0-9a-f]{64}")
security_log = logging.getLogger("wsgisession.security")
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

    ``replaces``, when set, is the key of a live record this update moves to
    the new key (a rename, for :meth:`Session.regenerate`): the store applies
    ``set`` and ``delete`` to that record's data as it is now, writes the
    result under the new key with the old record's ``created_at`` and user
    binding (unless ``user_id`` rebinds it) and the new ``expires_at``, and
    deletes the old record, all in one atomic step. If the old record is gone
    (destroyed or expired) nothing is written and ``save`` returns ``False``.
    ``created_at`` is ignored when ``replaces`` is set.
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

    def count(self) -> int:
        """How many live records the store holds."""
        ...


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
