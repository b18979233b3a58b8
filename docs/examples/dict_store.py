"""DictStore: a complete session store in a few dozen lines, on a dict.

The worked example of the documentation's "Writing a store" page, and proved
by the same suites as the built-in stores (tests/test_docs.py runs
StoreContract and SessionLifecycle against it). StoreBase does the rest:
key checks, the clock, JSON decoding, error mapping, logging.
"""

from __future__ import annotations

import json
import threading
from typing import Any

from wsgisession.stores.base import Record, StoreBase, Update


class DictStore(StoreBase):
    """Sessions in a dict of ``key -> [data as JSON text, created_at, expires_at, user_id]``."""

    def __init__(self) -> None:
        super().__init__()
        self._records: dict[str, list[Any]] = {}
        self._lock = threading.Lock()  # one lock makes every primitive atomic

    def _live(self, key: str, now: float) -> list[Any] | None:
        entry = self._records.get(key)
        return entry if entry is not None and entry[2] > now else None

    # -- the primitives StoreBase calls ---------------------------------------------

    def _read(self, key: str, now: float) -> tuple[object, float, float, str | None] | None:
        entry = self._live(key, now)
        return None if entry is None else (entry[0], entry[1], entry[2], entry[3])

    def _write(self, key: str, update: Update, now: float) -> bool:
        with self._lock:
            source = update.replaces or key
            entry = self._live(source, now)
            if entry is not None:  # merge into the record as it is now (or rename it)
                data, created_at, user_id = json.loads(entry[0]), entry[1], entry[3]
                if source != key:
                    del self._records[source]
            elif update.created_at is not None and update.replaces is None:  # a new session
                data, created_at, user_id = {}, update.created_at, None
            else:  # destroyed or expired meanwhile: destroy wins
                return False
            if update.user_id is not None:
                user_id = update.user_id
            self._records[key] = [
                json.dumps(update.apply(data), separators=(",", ":")),
                created_at,
                update.expires_at,
                user_id,
            ]
            return True

    def _touch(self, key: str, expires_at: float, now: float) -> bool:
        with self._lock:
            entry = self._live(key, now)
            if entry is None:
                return False
            entry[2] = expires_at
            return True

    def _delete(self, key: str) -> None:
        with self._lock:
            self._records.pop(key, None)

    def _prune(self, now: float) -> int:
        with self._lock:
            expired = [key for key, entry in self._records.items() if entry[2] <= now]
            for key in expired:
                del self._records[key]
            return len(expired)

    # -- an optional capability: UserIndex ("log out other devices") ---------------------

    def sessions_of(self, user_id: str) -> list[tuple[str, Record]]:
        """The live records bound to *user_id*, oldest first."""
        now = self.now()
        with self._lock:
            entries = [(k, e) for k, e in self._records.items() if e[3] == user_id and e[2] > now]
        found = [(key, self.decode(*entry)) for key, entry in entries]
        return sorted(((k, r) for k, r in found if r is not None), key=lambda item: item[1].created_at)

    def destroy_user(self, user_id: str) -> int:
        """Delete every record bound to *user_id*; return how many were live."""
        now = self.now()
        with self._lock:
            keys = [key for key, entry in self._records.items() if entry[3] == user_id]
            live = sum(1 for key in keys if self._records[key][2] > now)
            for key in keys:
                del self._records[key]
            return live
