"""MemoryStore: sessions in a dict in this process. For development and tests."""

from __future__ import annotations

import heapq
import os
import threading
import warnings
from collections.abc import Callable
from typing import Literal, NamedTuple

from .. import _json
from .base import Record, StoreBase, Update

#: Expired records each write removes (no full scan), so memory stays bounded without prune().
_SWEEP_PER_WRITE = 4


class _Entry(NamedTuple):
    text: str
    created_at: float
    expires_at: float
    user_id: str | None


class MemoryStore(StoreBase):
    """Sessions in a dict, guarded by a lock. One process only.

    Every worker process of a multi-process server (gunicorn ``-w 4``) would
    have its own dict and users would be logged out at random, so the
    middleware warns once when it sees ``wsgi.multiprocess``, and the store
    warns if it is used in a process it was not created in (a fork).

    Data is kept as JSON text, not as live objects: what the app stores is
    copied in and out, exactly as any other store would.
    """

    process_local: Literal[True] = True

    def __init__(self, *, clock: Callable[[], float] | None = None) -> None:
        super().__init__(clock=clock)
        self._records: dict[str, _Entry] = {}
        self._users: dict[str, set[str]] = {}
        # (expiry, key) for every write, earliest first. One whose key was written again later is
        # stale: skipped when popped; the heap is rebuilt when they pile up.
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
                stacklevel=4,
            )

    def _live(self, key: str, now: float) -> _Entry | None:
        entry = self._records.get(key)
        return entry if entry is not None and entry.expires_at > now else None

    def _read(self, key: str, now: float) -> tuple[object, float, float, str | None] | None:
        self._check_process()
        entry = self._live(key, now)
        return None if entry is None else (entry.text, entry.created_at, entry.expires_at, entry.user_id)

    def _write(self, key: str, update: Update, now: float) -> bool:
        self._check_process()
        source = key if update.replaces is None else update.replaces
        with self._lock:
            entry = self._live(source, now)
            current = None if entry is None else self.decode(*entry)
            if current is not None:
                data, created_at, user_id = current.data, current.created_at, current.user_id
                if source != key:  # a rename: the old key goes, the new one starts unindexed
                    self._remove_locked(source, now)
                    self._remove_locked(key, now)
                    indexed = None
                else:
                    indexed = user_id
            elif update.created_at is not None and update.replaces is None:
                self._remove_locked(key, now)
                data, created_at, user_id, indexed = {}, update.created_at, None, None
            else:
                return False
            if update.user_id is not None:
                user_id = update.user_id
            if user_id != indexed:
                self._unindex(key, indexed)
                if user_id is not None:
                    self._users.setdefault(user_id, set()).add(key)
            self._records[key] = _Entry(_json.encode(update.apply(data)), created_at, update.expires_at, user_id)
            self._expire_later(key, update.expires_at)
            self._prune_locked(_SWEEP_PER_WRITE, now)
        return True

    def _touch(self, key: str, expires_at: float, now: float) -> bool:
        with self._lock:
            entry = self._live(key, now)
            if entry is None:
                return False
            self._records[key] = entry._replace(expires_at=expires_at)
            self._expire_later(key, expires_at)
        return True

    def _delete(self, key: str) -> None:
        with self._lock:
            self._remove_locked(key, self.now())

    def _prune(self, now: float) -> int:
        with self._lock:
            return self._prune_locked(None, now)

    def _close(self) -> None:
        with self._lock:
            self._records.clear()
            self._users.clear()
            self._expiries.clear()

    def _remove_locked(self, key: str, now: float) -> bool:
        """Remove *key* and its index entry; return whether it was live."""
        entry = self._records.pop(key, None)
        if entry is None:
            return False
        self._unindex(key, entry.user_id)
        return entry.expires_at > now

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

    def _prune_locked(self, limit: int | None, now: float) -> int:
        """Remove expired records, earliest first, at most *limit* of them; return how many."""
        heap = self._expiries
        removed = 0
        while heap and heap[0][0] <= now and (limit is None or removed < limit):
            _, key = heapq.heappop(heap)
            entry = self._records.get(key)
            if entry is not None and entry.expires_at <= now:
                self._remove_locked(key, now)
                removed += 1
        return removed

    def sessions_of(self, user_id: str) -> list[tuple[str, Record]]:
        """The live records bound to *user_id*, oldest first."""
        now = self.now()
        with self._lock:
            entries = [(k, self._records[k]) for k in self._users.get(user_id, ())]
        found = []
        for key, entry in entries:
            if entry.expires_at > now:
                record = self.decode(*entry)
                if record is not None:
                    found.append((key, record))
        found.sort(key=lambda item: item[1].created_at)
        return found

    def destroy_user(self, user_id: str) -> int:
        """Delete every record bound to *user_id*; return how many were live."""
        now = self.now()
        with self._lock:
            return sum(self._remove_locked(k, now) for k in list(self._users.get(user_id, ())))

    def count(self) -> int:
        """How many live records the store holds."""
        now = self.now()
        return sum(1 for entry in list(self._records.values()) if entry.expires_at > now)

    def index_size(self) -> int:
        """How many entries the user index holds (for tests and diagnostics)."""
        return sum(len(keys) for keys in self._users.values())
