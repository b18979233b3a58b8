"""MemoryStore: sessions in a dict in this process. For development and tests."""

from __future__ import annotations

import heapq
import os
import threading
import warnings
from typing import NamedTuple

from .. import _clock, _json
from .base import Record, Update, log, security_log, valid_key

#: Each write removes up to this many expired records, so memory stays bounded
#: by the live set even when nobody calls prune(), without a full scan.
_SWEEP_PER_WRITE = 4


class _Entry(NamedTuple):
    text: str
    created_at: float
    expires_at: float
    user_id: str | None


class MemoryStore:
    """Sessions in a dict, guarded by a lock. One process only.

    Every worker process of a multi-process server (gunicorn ``-w 4``) would
    have its own dict and users would be logged out at random, so the
    middleware warns once when it sees ``wsgi.multiprocess``, and the store
    warns if it is used in a process it was not created in (a fork).

    Data is kept as JSON text, not as live objects: what the app stores is
    copied in and out, exactly as any other store would.
    """

    single_process = True

    def __init__(self) -> None:
        self._records: dict[str, _Entry] = {}
        self._users: dict[str, set[str]] = {}
        # (expiry, key) for every write: the earliest expiries come off first.
        # An entry is stale when its key was written again later; stale entries
        # are skipped when popped, and the heap is rebuilt when they pile up.
        self._expiries: list[tuple[float, str]] = []
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._warned = False

    def __repr__(self) -> str:
        return f"<MemoryStore with {len(self._records)} record(s)>"

    def _check_process(self) -> None:
        if self._pid != os.getpid() and not self._warned:
            self._warned = True
            warnings.warn(
                "MemoryStore is used in a forked process: each process has its own sessions. "
                "Use SQLiteStore, RedisStore or PostgresStore with more than one worker.",
                RuntimeWarning,
                stacklevel=3,
            )

    @staticmethod
    def _record(entry: _Entry) -> Record | None:
        try:
            data = _json.decode(entry.text)
            if type(data) is not dict:
                raise ValueError("not an object")
        except ValueError:
            security_log.warning(
                "corrupt session record in MemoryStore treated as absent", extra={"security_event": "corrupt_record"}
            )
            return None
        return Record(data, entry.created_at, entry.expires_at, entry.user_id)

    def load(self, key: str) -> Record | None:
        self._check_process()
        entry = self._records.get(key)
        if entry is None or entry.expires_at <= _clock.now():
            return None
        return self._record(entry)

    def save(self, key: str, update: Update) -> bool:
        self._check_process()
        if not valid_key(key):
            raise ValueError("not a store key")
        source = key if update.replaces is None else update.replaces
        with self._lock:
            entry = self._records.get(source) if source is key or valid_key(source) else None
            current = self._record(entry) if entry is not None and entry.expires_at > _clock.now() else None
            if current is not None:
                data, created_at, user_id = current.data, current.created_at, current.user_id
                if source != key:
                    # A rename: the old key goes, the new one starts unindexed.
                    self._remove_locked(source)
                    self._remove_locked(key)
                    indexed = None
                else:
                    indexed = user_id
            elif update.created_at is not None and update.replaces is None:
                self._remove_locked(key)
                data, created_at, user_id = {}, update.created_at, None
                indexed = None
            else:
                log.info("save dropped: the session was destroyed or expired meanwhile")
                return False
            if update.user_id is not None:
                user_id = update.user_id
            if user_id != indexed:
                self._unindex(key, indexed)
                if user_id is not None:
                    self._users.setdefault(user_id, set()).add(key)
            self._records[key] = _Entry(_json.encode(update.apply(data)), created_at, update.expires_at, user_id)
            self._expire_later(key, update.expires_at)
            self._prune_locked(_SWEEP_PER_WRITE)
        return True

    def touch(self, key: str, expires_at: float) -> bool:
        with self._lock:
            entry = self._records.get(key)
            if entry is None or entry.expires_at <= _clock.now():
                return False
            self._records[key] = entry._replace(expires_at=expires_at)
            self._expire_later(key, expires_at)
        return True

    def destroy(self, key: str) -> None:
        with self._lock:
            self._remove_locked(key)

    def _remove_locked(self, key: str) -> bool:
        """Remove *key* and its index entry; return whether it was live."""
        entry = self._records.pop(key, None)
        if entry is None:
            return False
        self._unindex(key, entry.user_id)
        return entry.expires_at > _clock.now()

    def _unindex(self, key: str, user_id: str | None) -> None:
        if user_id is None:
            return
        keys = self._users.get(user_id)
        if keys is not None:
            keys.discard(key)
            if not keys:
                del self._users[user_id]

    def _expire_later(self, key: str, expires_at: float) -> None:
        heap = self._expiries
        heapq.heappush(heap, (expires_at, key))
        if len(heap) > 2 * len(self._records) + 1024:
            self._expiries = [(entry.expires_at, k) for k, entry in self._records.items()]
            heapq.heapify(self._expiries)

    def prune(self) -> int:
        with self._lock:
            return self._prune_locked(None)

    def _prune_locked(self, limit: int | None) -> int:
        """Remove expired records, earliest first, at most *limit* of them; return how many."""
        cutoff = _clock.now()
        heap = self._expiries
        removed = 0
        while heap and heap[0][0] <= cutoff and (limit is None or removed < limit):
            _, key = heapq.heappop(heap)
            entry = self._records.get(key)
            if entry is not None and entry.expires_at <= cutoff:
                self._remove_locked(key)
                removed += 1
        return removed

    # -- the user index ------------------------------------------------------------

    def sessions_of(self, user_id: str) -> list[tuple[str, Record]]:
        """The live records bound to *user_id*, oldest first."""
        now = _clock.now()
        with self._lock:
            entries = [(k, self._records[k]) for k in self._users.get(user_id, ())]
        found = []
        for key, entry in entries:
            if entry.expires_at > now:
                record = self._record(entry)
                if record is not None:
                    found.append((key, record))
        found.sort(key=lambda item: item[1].created_at)
        return found

    def destroy_user(self, user_id: str) -> int:
        """Delete every record bound to *user_id*; return how many were live."""
        with self._lock:
            return sum(self._remove_locked(k) for k in list(self._users.get(user_id, ())))

    def count(self) -> int:
        """How many live records the store holds."""
        now = _clock.now()
        return sum(1 for entry in list(self._records.values()) if entry.expires_at > now)

    def index_size(self) -> int:
        """How many entries the user index holds (for tests and diagnostics)."""
        return sum(len(keys) for keys in self._users.values())

    def close(self) -> None:
        with self._lock:
            self._records.clear()
            self._users.clear()
            self._expiries.clear()
