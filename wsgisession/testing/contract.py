"""The store conformance suite: the behaviour every session store must have.

To prove a store of your own behaves like ours, subclass :class:`StoreContract`
in a pytest module and provide a ``store`` fixture::

    from wsgisession.testing import StoreContract

    class TestMyStore(StoreContract):
        @pytest.fixture
        def store(self):
            s = MyStore(...)
            yield s
            s.close()

Every test in the suite then runs against your store. The race tests pit it
against the ``twin`` fixture, by default the same store object; a store that
several processes share should provide ``twin`` as a second store on the same
data (its own connections), so the races cross connections as they would
across processes.

The suite moves time
with the ``clock`` fixture (it patches :func:`wsgisession._clock.now`), so a
store must read the time through that function, not ``time.time``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import pytest

from .. import _clock
from ..ids import new_id, store_key
from ..stores.base import Countable, IndexSized, Store, Update, UserIndex

__all__ = ["Clock", "StoreContract", "at_once"]


class Clock:
    """A clock for tests: frozen at the real time it was made, moved only by :meth:`advance`.

    Frozen, so that a slow store (a busy database) cannot make a test's
    expected times drift.
    """

    def __init__(self) -> None:
        self.time = _clock.now()

    def __call__(self) -> float:
        return self.time

    def advance(self, seconds: float) -> None:
        """Move time forward by *seconds*."""
        self.time += seconds


def _key() -> str:
    return store_key(new_id())


class StoreContract:
    """The behaviour every session store must have. Subclass it and provide ``store``."""

    @pytest.fixture
    def store(self) -> Iterator[Store]:
        raise NotImplementedError("provide a `store` fixture that yields the store under test")

    @pytest.fixture
    def twin(self, store: Store) -> Store:
        """A second handle on the store's data, to race against: by default the store itself."""
        return store

    #: How many rounds each race test runs.
    race_rounds = 20

    @pytest.fixture
    def clock(self, monkeypatch: pytest.MonkeyPatch) -> Clock:
        clock = Clock()
        monkeypatch.setattr(_clock, "now", clock)
        return clock

    # -- helpers ---------------------------------------------------------------

    @staticmethod
    def create(store: Store, clock: Clock, data: dict[str, Any], ttl: float = 600) -> str:
        key = _key()
        now = clock()
        assert store.save(key, Update(set=data, expires_at=now + ttl, created_at=now)) is True
        return key

    # -- load and create -------------------------------------------------------

    def test_load_missing_is_none(self, store: Store) -> None:
        assert store.load(_key()) is None

    def test_create_then_load_round_trips_json(self, store: Store, clock: Clock) -> None:
        data = {
            "user": "zoë ☃ \u2028",
            "n": 2**62,
            "f": 0.1,
            "neg": -5,
            "t": True,
            "none": None,
            "nested": {"list": [1, "two", {"three": [3.5, None]}], "empty": {}},
            "quote\"key'": "' OR 1=1--",
        }
        key = self.create(store, clock, data)
        record = store.load(key)
        assert record is not None
        assert record.data == data
        assert type(record.data["t"]) is bool and type(record.data["n"]) is int

    def test_create_records_times(self, store: Store, clock: Clock) -> None:
        key = _key()
        now = clock()
        store.save(key, Update(set={"a": 1}, expires_at=now + 100, created_at=now - 5))
        record = store.load(key)
        assert record is not None
        assert record.created_at == pytest.approx(now - 5, abs=0.01)
        assert record.expires_at == pytest.approx(now + 100, abs=0.01)

    def test_empty_session_can_be_created(self, store: Store, clock: Clock) -> None:
        key = self.create(store, clock, {})
        record = store.load(key)
        assert record is not None and record.data == {}

    def test_loaded_data_is_a_copy(self, store: Store, clock: Clock) -> None:
        key = self.create(store, clock, {"cart": [1]})
        record = store.load(key)
        assert record is not None
        record.data["cart"].append(2)
        again = store.load(key)
        assert again is not None and again.data == {"cart": [1]}

    # -- merge semantics ---------------------------------------------------------

    def test_update_of_missing_record_writes_nothing(self, store: Store, clock: Clock) -> None:
        key = _key()
        assert store.save(key, Update(set={"a": 1}, expires_at=clock() + 60)) is False
        assert store.load(key) is None

    def test_updates_to_different_keys_both_land(self, store: Store, clock: Clock) -> None:
        key = self.create(store, clock, {"base": 0})
        expires = clock() + 600
        assert store.save(key, Update(set={"a": 1}, expires_at=expires))
        assert store.save(key, Update(set={"b": 2}, expires_at=expires))
        record = store.load(key)
        assert record is not None and record.data == {"base": 0, "a": 1, "b": 2}

    def test_update_deletes_only_named_keys(self, store: Store, clock: Clock) -> None:
        key = self.create(store, clock, {"a": 1, "b": 2, "c": 3})
        assert store.save(key, Update(set={"d": 4}, delete=frozenset({"a", "zz"}), expires_at=clock() + 60))
        record = store.load(key)
        assert record is not None and record.data == {"b": 2, "c": 3, "d": 4}

    def test_same_key_last_writer_wins(self, store: Store, clock: Clock) -> None:
        key = self.create(store, clock, {"a": 1})
        store.save(key, Update(set={"a": 2}, expires_at=clock() + 60))
        store.save(key, Update(set={"a": {"v": 3}}, expires_at=clock() + 60))
        record = store.load(key)
        assert record is not None and record.data == {"a": {"v": 3}}

    def test_update_keeps_created_at_and_sets_expiry(self, store: Store, clock: Clock) -> None:
        key = _key()
        t0 = clock()
        store.save(key, Update(set={"a": 1}, expires_at=t0 + 60, created_at=t0))
        clock.advance(30)
        store.save(key, Update(set={"a": 2}, expires_at=clock() + 60))
        record = store.load(key)
        assert record is not None
        assert record.created_at == pytest.approx(t0, abs=0.01)
        assert record.expires_at == pytest.approx(t0 + 90, abs=0.01)

    def test_create_onto_live_record_merges(self, store: Store, clock: Clock) -> None:
        key = self.create(store, clock, {"a": 1})
        store.save(key, Update(set={"b": 2}, expires_at=clock() + 60, created_at=clock()))
        record = store.load(key)
        assert record is not None and record.data == {"a": 1, "b": 2}

    def test_concurrent_updates_from_threads_all_land(self, store: Store, clock: Clock) -> None:
        key = self.create(store, clock, {})
        expires = clock() + 600
        errors: list[BaseException] = []

        def writer(n: int) -> None:
            try:
                for i in range(10):
                    assert store.save(key, Update(set={f"t{n}-{i}": i}, expires_at=expires))
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors
        record = store.load(key)
        assert record is not None and len(record.data) == 80

    # -- destroy wins -------------------------------------------------------------

    def test_destroy_removes_record(self, store: Store, clock: Clock) -> None:
        key = self.create(store, clock, {"a": 1})
        store.destroy(key)
        assert store.load(key) is None

    def test_destroy_missing_is_not_an_error(self, store: Store) -> None:
        store.destroy(_key())

    def test_update_after_destroy_does_not_resurrect(self, store: Store, clock: Clock) -> None:
        key = self.create(store, clock, {"user": "alice"})
        store.destroy(key)
        assert store.save(key, Update(set={"late": True}, expires_at=clock() + 60)) is False
        assert store.load(key) is None

    def test_touch_after_destroy_does_not_resurrect(self, store: Store, clock: Clock) -> None:
        key = self.create(store, clock, {"user": "alice"})
        store.destroy(key)
        assert store.touch(key, clock() + 60) is False
        assert store.load(key) is None

    # -- rename (regenerate) -------------------------------------------------------

    def test_rename_moves_the_record_with_its_creation_time(self, store: Store, clock: Clock) -> None:
        t0 = clock()
        old = self.create(store, clock, {"cart": [1], "keep": "yes"})
        clock.advance(30)
        new = _key()
        update = Update(set={"cart": [1, 2]}, delete=frozenset({"keep"}), expires_at=clock() + 90, replaces=old)
        assert store.save(new, update) is True
        assert store.load(old) is None
        record = store.load(new)
        assert record is not None
        assert record.data == {"cart": [1, 2]}
        assert record.created_at == pytest.approx(t0, abs=0.01), "a rename keeps the creation time"
        assert record.expires_at == pytest.approx(clock() + 90, abs=0.01)
        assert store.save(old, Update(set={"late": 1}, expires_at=clock() + 60)) is False, "the old key is dead"
        assert store.load(old) is None

    def test_rename_carries_changes_that_landed_on_the_old_key(self, store: Store, clock: Clock) -> None:
        old = self.create(store, clock, {"a": 1})
        assert store.save(old, Update(set={"b": 2}, expires_at=clock() + 60))
        new = _key()
        assert store.save(new, Update(set={"c": 3}, expires_at=clock() + 60, replaces=old))
        record = store.load(new)
        assert record is not None and record.data == {"a": 1, "b": 2, "c": 3}

    @pytest.mark.parametrize("how", ["destroyed", "expired", "missing"])
    def test_rename_of_a_dead_record_writes_nothing(self, store: Store, clock: Clock, how: str) -> None:
        old = self.create(store, clock, {"user": "alice"}, ttl=10) if how != "missing" else _key()
        if how == "destroyed":
            store.destroy(old)
        elif how == "expired":
            clock.advance(11)
        new = _key()
        now = clock()
        assert (
            store.save(new, Update(set={"user": "alice"}, expires_at=now + 60, created_at=now, replaces=old)) is False
        )
        assert store.load(new) is None
        assert store.load(old) is None

    def test_rename_of_a_hostile_key_writes_nothing(self, store: Store, clock: Clock) -> None:
        new = _key()
        assert store.save(new, Update(set={"a": 1}, expires_at=clock() + 60, replaces="../" * 21 + "a")) is False
        assert store.load(new) is None

    # -- expiry ---------------------------------------------------------------------

    def test_expired_record_is_absent(self, store: Store, clock: Clock) -> None:
        key = self.create(store, clock, {"a": 1}, ttl=10)
        clock.advance(11)
        assert store.load(key) is None

    def test_update_of_expired_record_writes_nothing(self, store: Store, clock: Clock) -> None:
        key = self.create(store, clock, {"a": 1}, ttl=10)
        clock.advance(11)
        assert store.save(key, Update(set={"b": 2}, expires_at=clock() + 60)) is False
        assert store.load(key) is None

    def test_create_over_expired_record_starts_fresh(self, store: Store, clock: Clock) -> None:
        key = self.create(store, clock, {"old": 1}, ttl=10)
        clock.advance(11)
        now = clock()
        assert store.save(key, Update(set={"new": 2}, expires_at=now + 60, created_at=now))
        record = store.load(key)
        assert record is not None and record.data == {"new": 2}
        assert record.created_at == pytest.approx(now, abs=0.01)

    def test_touch_extends_expiry_without_changing_data(self, store: Store, clock: Clock) -> None:
        key = self.create(store, clock, {"a": [1, 2]}, ttl=10)
        clock.advance(8)
        assert store.touch(key, clock() + 10) is True
        clock.advance(8)
        record = store.load(key)
        assert record is not None and record.data == {"a": [1, 2]}
        assert record.expires_at == pytest.approx(clock() + 2, abs=0.05)

    def test_touch_of_expired_or_missing_is_false(self, store: Store, clock: Clock) -> None:
        assert store.touch(_key(), clock() + 60) is False
        key = self.create(store, clock, {"a": 1}, ttl=10)
        clock.advance(11)
        assert store.touch(key, clock() + 60) is False
        assert store.load(key) is None

    def test_prune_removes_only_expired(self, store: Store, clock: Clock) -> None:
        dead = [self.create(store, clock, {"i": i}, ttl=10) for i in range(5)]
        live = [self.create(store, clock, {"i": i}, ttl=1000) for i in range(3)]
        clock.advance(11)
        removed = store.prune()
        assert removed == 5
        assert all(store.load(k) is None for k in dead)
        assert all(store.load(k) is not None for k in live)
        assert store.prune() == 0

    # -- hostile keys -----------------------------------------------------------------

    @pytest.mark.parametrize(
        "bad",
        [
            pytest.param("", id="empty"),
            pytest.param("a" * 10_000, id="overlong"),
            pytest.param("../" * 21 + "a", id="dotdot"),
            pytest.param("..\\..\\windows", id="backslash"),
            pytest.param("a" * 63 + "\x00", id="nul"),
            pytest.param("' OR 1=1--", id="sql"),
            pytest.param("A" * 64, id="uppercase-hex"),
            pytest.param("*", id="glob"),
        ],
    )
    def test_hostile_keys_are_absent(self, store: Store, clock: Clock, bad: str) -> None:
        self.create(store, clock, {"a": 1})
        assert store.load(bad) is None
        assert store.touch(bad, clock() + 60) is False
        store.destroy(bad)
        with pytest.raises(ValueError, match="not a store key"):
            store.save(bad, Update(set={"a": 1}, expires_at=clock() + 60, created_at=clock()))

    def test_close_is_idempotent(self, store: Store) -> None:
        store.close()
        store.close()

    # -- the user index ------------------------------------------------------------------

    #: How many logins the churn test makes and lets expire.
    user_churn = 10_000

    @pytest.fixture
    def users(self, store: Store) -> UserIndex:
        if not isinstance(store, UserIndex):
            pytest.skip(f"{type(store).__name__} has no user index (sessions_of, destroy_user, count)")
        return store

    @staticmethod
    def bind(store: Store, clock: Clock, user: str, ttl: float = 600, **data: Any) -> str:
        key = _key()
        now = clock()
        assert store.save(key, Update(set=data, expires_at=now + ttl, created_at=now, user_id=user))
        return key

    def test_sessions_of_lists_a_users_live_sessions(self, store: Store, users: UserIndex, clock: Clock) -> None:
        alice = []
        for device in ("phone", "laptop", "tablet"):
            alice.append(self.bind(store, clock, "alice", device=device))
            clock.advance(1)
        self.bind(store, clock, "bob", device="phone")
        self.create(store, clock, {"anonymous": True})
        found = users.sessions_of("alice")
        assert [k for k, _ in found] == alice
        assert [r.data["device"] for _, r in found] == ["phone", "laptop", "tablet"]
        assert all(r.user_id == "alice" for _, r in found)
        assert users.sessions_of("carol") == []
        record = store.load(alice[0])
        assert record is not None
        assert record.user_id == "alice"

    def test_binding_an_existing_session(self, store: Store, users: UserIndex, clock: Clock) -> None:
        key = self.create(store, clock, {"cart": [1]})
        loaded = store.load(key)
        assert loaded is not None
        assert loaded.user_id is None
        assert store.save(key, Update(set={"user": "alice"}, expires_at=clock() + 60, user_id="alice"))
        assert [k for k, _ in users.sessions_of("alice")] == [key]
        store.save(key, Update(set={"x": 1}, expires_at=clock() + 60))
        assert [k for k, _ in users.sessions_of("alice")] == [key], "an update without user_id keeps the binding"

    def test_rebinding_moves_a_session(self, store: Store, users: UserIndex, clock: Clock) -> None:
        key = self.bind(store, clock, "alice")
        store.save(key, Update(expires_at=clock() + 60, user_id="bob"))
        assert users.sessions_of("alice") == []
        assert [k for k, _ in users.sessions_of("bob")] == [key]

    def test_destroyed_and_expired_sessions_are_not_listed(self, store: Store, users: UserIndex, clock: Clock) -> None:
        gone = self.bind(store, clock, "alice")
        short = self.bind(store, clock, "alice", ttl=10)
        live = self.bind(store, clock, "alice", ttl=1000)
        store.destroy(gone)
        clock.advance(11)
        assert [k for k, _ in users.sessions_of("alice")] == [live]
        assert store.load(short) is None

    def test_destroy_user_ends_every_session_of_that_user_only(
        self, store: Store, users: UserIndex, clock: Clock
    ) -> None:
        alice = [self.bind(store, clock, "alice") for _ in range(3)]
        self.bind(store, clock, "alice", ttl=5)
        bob = self.bind(store, clock, "bob")
        anonymous = self.create(store, clock, {"a": 1})
        clock.advance(6)
        assert users.destroy_user("alice") == 3
        assert all(store.load(k) is None for k in alice)
        assert users.sessions_of("alice") == []
        assert store.load(bob) is not None
        assert store.load(anonymous) is not None
        assert users.destroy_user("alice") == 0
        assert users.destroy_user("nobody") == 0

    def test_a_destroyed_users_session_is_not_resurrected(self, store: Store, users: UserIndex, clock: Clock) -> None:
        key = self.bind(store, clock, "alice")
        users.destroy_user("alice")
        assert store.save(key, Update(set={"late": 1}, expires_at=clock() + 60)) is False
        assert users.sessions_of("alice") == []

    def test_rename_keeps_the_user_binding(self, store: Store, users: UserIndex, clock: Clock) -> None:
        old = self.bind(store, clock, "alice", device="phone")
        new = _key()
        assert store.save(new, Update(set={"x": 1}, expires_at=clock() + 60, replaces=old))
        assert [k for k, _ in users.sessions_of("alice")] == [new]
        record = store.load(new)
        assert record is not None and record.user_id == "alice" and record.data == {"device": "phone", "x": 1}
        assert users.destroy_user("alice") == 1
        assert store.load(new) is None

    def test_rename_can_bind_or_rebind(self, store: Store, users: UserIndex, clock: Clock) -> None:
        anonymous = self.create(store, clock, {"cart": [1]})
        alice = _key()
        assert store.save(alice, Update(expires_at=clock() + 60, replaces=anonymous, user_id="alice"))
        assert [k for k, _ in users.sessions_of("alice")] == [alice]
        bob = _key()
        assert store.save(bob, Update(expires_at=clock() + 60, replaces=alice, user_id="bob"))
        assert users.sessions_of("alice") == []
        assert [k for k, _ in users.sessions_of("bob")] == [bob]
        record = store.load(bob)
        assert record is not None and record.data == {"cart": [1]} and record.user_id == "bob"

    def test_rename_after_destroy_user_writes_nothing(self, store: Store, users: UserIndex, clock: Clock) -> None:
        old = self.bind(store, clock, "alice")
        assert users.destroy_user("alice") == 1
        new = _key()
        assert store.save(new, Update(set={"a": 1}, expires_at=clock() + 60, replaces=old, user_id="alice")) is False
        assert store.load(new) is None
        assert users.sessions_of("alice") == []

    def test_count_counts_live_sessions(self, store: Store, users: UserIndex, clock: Clock) -> None:
        if not isinstance(store, Countable):
            pytest.skip(f"{type(store).__name__} does not count its sessions")
        for _ in range(3):
            self.create(store, clock, {}, ttl=1000)
        self.bind(store, clock, "alice", ttl=1000)
        self.create(store, clock, {}, ttl=5)
        clock.advance(6)
        assert store.count() == 4

    @pytest.mark.parametrize("user", ["user@example.com", "../../etc", "' OR 1=1--", "ü", "a" * 300, "*", "{x}"])
    def test_user_ids_are_opaque_text(self, store: Store, users: UserIndex, clock: Clock, user: str) -> None:
        key = self.bind(store, clock, user)
        self.bind(store, clock, "other")
        assert [k for k, _ in users.sessions_of(user)] == [key]
        assert users.destroy_user(user) == 1
        assert [len(users.sessions_of("other"))] == [1]

    def test_index_stays_the_size_of_the_live_set(self, store: Store, users: UserIndex, clock: Clock) -> None:
        for i in range(self.user_churn):
            key = self.bind(store, clock, f"user{i % 50}", ttl=10)
            if i % 3 == 0:
                store.destroy(key)
        live = [self.bind(store, clock, f"user{i}", ttl=1000) for i in range(5)]
        clock.advance(11)
        store.prune()
        assert sum(len(users.sessions_of(f"user{i}")) for i in range(50)) == len(live)
        if isinstance(store, Countable):
            assert store.count() == len(live)
        if isinstance(store, IndexSized):
            assert store.index_size() == len(live)

    # -- sealed values (SessionMiddleware(encrypt=True)) -----------------------------------

    def test_sealed_values_come_back_exactly_and_merge_per_key(self, store: Store, clock: Clock) -> None:
        """What encrypt=True asks of a store: opaque strings, kept byte for byte, merged per key."""
        from ..sealing import Sealer

        try:
            import cryptography  # noqa: F401
        except ImportError:
            pytest.skip("the cryptography package is not installed (pip install 'wsgisession[encryption]')")
        sid = new_id()
        key = store_key(sid)
        sealer = Sealer()
        values = {"cart": [1, {"sku": "ü"}], "note": "x" * 3000, "n": 0}
        sealed = sealer.seal(sid, values)
        now = clock()
        assert store.save(key, Update(set=sealed, expires_at=now + 600, created_at=now))
        assert store.save(key, Update(set=sealer.seal(sid, {"n": 1}), expires_at=now + 600))
        assert store.save(key, Update(set=sealer.seal(sid, {"late": True}), expires_at=now + 600))
        record = store.load(key)
        assert record is not None
        assert record.data["cart"] == sealed["cart"] and record.data["note"] == sealed["note"]
        opened = {name: sealer.open(sid, name, text) for name, text in record.data.items()}
        assert opened == {**values, "n": 1, "late": True}
        new_sid = new_id()
        new_key = store_key(new_sid)
        resealed = sealer.seal(new_sid, opened)
        assert store.save(new_key, Update(set=resealed, expires_at=now + 600, replaces=key))
        moved = store.load(new_key)
        assert moved is not None and store.load(key) is None
        assert {name: sealer.open(new_sid, name, text) for name, text in moved.data.items()} == opened

    # -- races: a rename against a rival on another connection ----------------------------

    @pytest.mark.parametrize("rival", ["destroy", "destroy_user", "rename"])
    def test_a_rename_racing_a_rival_has_one_outcome(
        self, store: Store, twin: Store, users: UserIndex, clock: Clock, rival: str
    ) -> None:
        """Whichever lands first, the other sees its result: nothing comes back, nothing is doubled."""
        rival_users: Any = twin
        for _ in range(self.race_rounds):
            old, new, other_new = self.bind(store, clock, "alice", a=1), _key(), _key()
            moves = {
                new: Update(set={"b": 2}, expires_at=clock() + 60, replaces=old),
                other_new: Update(set={"c": 3}, expires_at=clock() + 60, replaces=old),
            }
            rivals = {
                "destroy": partial(twin.destroy, old),
                "destroy_user": partial(rival_users.destroy_user, "alice"),
                "rename": partial(twin.save, other_new, moves[other_new]),
            }
            renamed, outcome = at_once(partial(store.save, new, moves[new]), rivals[rival])
            assert store.load(old) is None
            moved = store.load(new)
            if rival == "destroy_user":
                assert outcome == 1, "one live session, ended once, under whichever key it had"
                assert moved is None
            else:
                assert (moved is not None) is renamed, "a rename landed if and only if it said so"
            if rival == "rename":
                assert renamed is not outcome, "exactly one of two renames of one record wins"
                assert (store.load(other_new) is not None) is outcome
            if moved is not None:
                assert moved.data == {"a": 1, "b": 2} and moved.user_id == "alice"
            assert [k for k, _ in users.sessions_of("alice")] == [k for k in (new, other_new) if store.load(k)]
            users.destroy_user("alice")
            assert users.sessions_of("alice") == []


def at_once(*calls: Callable[[], Any], timeout: float = 30.0) -> list[Any]:
    """Run *calls* in threads released at the same instant; what each returned, in order (the first error re-raised)."""
    barrier = threading.Barrier(len(calls), timeout=timeout)
    results: list[Any] = [None] * len(calls)
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            barrier.wait()
            results[i] = calls[i]()
        except BaseException as exc:  # re-raised in the caller
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout)
    if errors:
        raise errors[0]
    return results
