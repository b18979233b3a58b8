"""MemoryStore: sessions in a dict in this process. For development and tests."""

from __future__ import annotations

import os
import threading
import warnings

from .. import _clock, _json
from .base import Record, Update, log, security_log, valid_key

#: Expired records are swept after this many writes, so memory stays bounded
#: by the live set even when nobody calls prune().
_SWEEP_EVERY = 1000


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
        self._records: dict[str, tuple[str, float, float]] = {}
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._warned = False
        self._writes = 0

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

    def load(self, key: str) -> Record | None:
        self._check_process()
        entry = self._records.get(key)
        if entry is None:
            return None
        text, created_at, expires_at = entry
        if expires_at <= _clock.now():
            return None
        try:
            data = _json.decode(text)
        except ValueError:
            security_log.warning("corrupt session record in MemoryStore treated as absent")
            return None
        return Record(data, created_at, expires_at)

    def save(self, key: str, update: Update) -> bool:
        self._check_process()
        if not valid_key(key):
            raise ValueError("not a store key")
        with self._lock:
            entry = self._records.get(key)
            if entry is not None and entry[2] > _clock.now():
                data = _json.decode(entry[0])
                created_at = entry[1]
            elif update.created_at is not None:
                data = {}
                created_at = update.created_at
            else:
                log.info("save dropped: the session was destroyed or expired meanwhile")
                return False
            self._records[key] = (_json.encode(update.apply(data)), created_at, update.expires_at)
            self._writes += 1
            if self._writes % _SWEEP_EVERY == 0:
                self._prune_locked()
        return True

    def touch(self, key: str, expires_at: float) -> bool:
        with self._lock:
            entry = self._records.get(key)
            if entry is None or entry[2] <= _clock.now():
                return False
            self._records[key] = (entry[0], entry[1], expires_at)
        return True

    def destroy(self, key: str) -> None:
        with self._lock:
            self._records.pop(key, None)

    def prune(self) -> int:
        with self._lock:
            return self._prune_locked()

    def _prune_locked(self) -> int:
        cutoff = _clock.now()
        dead = [k for k, (_, _, expires_at) in self._records.items() if expires_at <= cutoff]
        for k in dead:
            del self._records[k]
        return len(dead)

    def close(self) -> None:
        with self._lock:
            self._records.clear()
