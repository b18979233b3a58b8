"""What is particular to MemoryStore."""

from __future__ import annotations

from wsgisession import MemoryStore
from wsgisession.ids import new_id, store_key
from wsgisession.stores.base import Update
from wsgisession.testing import Clock


def test_expired_records_are_swept_by_writes_without_prune(clock: Clock) -> None:
    store = MemoryStore()
    for _ in range(2000):
        now = clock()
        store.save(store_key(new_id()), Update(set={"x": 1}, expires_at=now + 10, created_at=now))
    clock.advance(11)
    for _ in range(1000):
        now = clock()
        store.save(store_key(new_id()), Update(set={"x": 1}, expires_at=now + 10, created_at=now))
    assert len(store._records) == 1000, "each write sweeps expired records: only the live ones are left"
    assert len(store._expiries) <= 2 * len(store._records) + 1024


def test_a_record_refreshed_after_an_earlier_expiry_is_kept(clock: Clock) -> None:
    store = MemoryStore()
    key = store_key(new_id())
    now = clock()
    store.save(key, Update(set={"x": 1}, expires_at=now + 10, created_at=now))
    store.touch(key, now + 100)
    clock.advance(50)
    assert store.prune() == 0
    assert store.load(key) is not None
    clock.advance(51)
    assert store.prune() == 1
