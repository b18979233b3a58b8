"""The Session object on its own, against real stores (no middleware)."""

from __future__ import annotations

import math
from typing import Any

import pytest

from wsgisession import _clock
from wsgisession.ids import store_key
from wsgisession.session import Session, SessionSettings
from wsgisession.stores.base import Record, Store, Update
from wsgisession.testing import Clock


class CountingStore:
    """Wraps a real store and counts the calls made to it."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.calls: list[str] = []

    def load(self, key: str) -> Record | None:
        self.calls.append("load")
        return self.inner.load(key)

    def save(self, key: str, update: Update) -> bool:
        self.calls.append("save")
        return self.inner.save(key, update)

    def touch(self, key: str, expires_at: float) -> bool:
        self.calls.append("touch")
        return self.inner.touch(key, expires_at)

    def destroy(self, key: str) -> None:
        self.calls.append("destroy")
        self.inner.destroy(key)

    def prune(self) -> int:
        return self.inner.prune()

    def close(self) -> None:
        self.inner.close()


def new_saved(store: Store, **data: Any) -> str:
    s = Session(SessionSettings(store))
    s.update(data)
    s.save()
    assert s.id is not None
    return s.id


def test_new_session_has_no_id_until_saved(store: Store) -> None:
    s = Session(SessionSettings(store))
    assert s.id is None
    assert s.is_new
    s["a"] = 1
    s.save()
    assert s.id is not None
    assert len(s.id) == 43


def test_lazy_no_store_read_until_used(store: Store) -> None:
    sid = new_saved(store, a=1)
    counting = CountingStore(store)
    s = Session(SessionSettings(counting), sid)
    assert counting.calls == []
    assert not s.accessed
    assert s["a"] == 1
    assert counting.calls == ["load"]
    assert s.accessed


def test_round_trip_and_is_new(store: Store) -> None:
    sid = new_saved(store, user="alice", cart=[1, 2])
    s = Session(SessionSettings(store), sid)
    assert dict(s) == {"user": "alice", "cart": [1, 2]}
    assert not s.is_new
    assert s.id == sid
    assert not s.modified


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        pytest.param(object(), "object", id="object"),
        pytest.param((1, 2), "tuple", id="tuple"),
        pytest.param({1, 2}, "set", id="set"),
        pytest.param(b"bytes", "bytes", id="bytes"),
        pytest.param(float("nan"), "finite", id="nan"),
        pytest.param(math.inf, "finite", id="inf"),
        pytest.param({1: "int key"}, "dict key", id="int-dict-key"),
        pytest.param([[[{"deep": object()}]]], "object", id="deeply-nested"),
    ],
)
def test_non_json_value_is_a_type_error_naming_the_key(store: Store, value: Any, fragment: str) -> None:
    s = Session(SessionSettings(store))
    with pytest.raises(TypeError, match=rf"session\['the_key'\].*{fragment}"):
        s["the_key"] = value
    assert "the_key" not in s


def test_non_str_key_is_refused(store: Store) -> None:
    s = Session(SessionSettings(store))
    with pytest.raises(TypeError, match="keys must be str"):
        s[1] = "x"  # type: ignore[index]


def test_nested_non_json_found_at_save_leaves_store_untouched(store: Store) -> None:
    sid = new_saved(store, items=[1])
    s = Session(SessionSettings(store), sid)
    s["items"].append(object())
    with pytest.raises(TypeError, match=r"session\['items'\]"):
        s.save()
    record = store.load(store_key(sid))
    assert record is not None
    assert record.data == {"items": [1]}


def test_nested_mutation_is_detected(store: Store) -> None:
    sid = new_saved(store, cart=["a"], prefs={"theme": "light"}, n=1)
    s = Session(SessionSettings(store), sid)
    s["cart"].append("b")
    s["prefs"]["theme"] = "dark"
    assert s.modified
    s.save()
    again = Session(SessionSettings(store), sid)
    assert dict(again) == {"cart": ["a", "b"], "prefs": {"theme": "dark"}, "n": 1}


def test_reading_mutable_values_is_not_a_modification(store: Store) -> None:
    sid = new_saved(store, cart=["a"], prefs={"x": [1, {"y": 2}]})
    s = Session(SessionSettings(store), sid)
    assert s["cart"] == ["a"]
    assert list(s.items())
    assert not s.modified


def test_changing_one_to_true_in_place_is_a_modification(store: Store) -> None:
    # 1 == True in Python; the stored JSON differs, so this must be saved.
    sid = new_saved(store, flags=[1])
    s = Session(SessionSettings(store), sid)
    s["flags"][0] = True
    assert s.modified


def test_concurrent_sessions_changing_different_keys_both_land(store: Store) -> None:
    sid = new_saved(store, base=0)
    a = Session(SessionSettings(store), sid)
    b = Session(SessionSettings(store), sid)
    assert a["base"] == b["base"] == 0  # both loaded before either saves
    a["from_a"] = 1
    b["from_b"] = 2
    a.save()
    b.save()
    final = Session(SessionSettings(store), sid)
    assert dict(final) == {"base": 0, "from_a": 1, "from_b": 2}


def test_concurrent_delete_and_set_both_land(store: Store) -> None:
    sid = new_saved(store, keep=1, drop=2)
    a = Session(SessionSettings(store), sid)
    b = Session(SessionSettings(store), sid)
    len(a), len(b)
    del a["drop"]
    b["new"] = 3
    a.save()
    b.save()
    assert dict(Session(SessionSettings(store), sid)) == {"keep": 1, "new": 3}


def test_destroy_wins_over_a_request_in_flight(store: Store) -> None:
    sid = new_saved(store, user="alice")
    slow = Session(SessionSettings(store), sid)
    assert slow["user"] == "alice"
    logout = Session(SessionSettings(store), sid)
    logout.destroy()
    slow["late"] = True
    slow.save()
    assert store.load(store_key(sid)) is None
    assert slow.id is None


def test_regenerate_keeps_data_and_kills_old_id_on_save(store: Store) -> None:
    sid = new_saved(store, cart=[1])
    s = Session(SessionSettings(store), sid)
    s.regenerate()
    assert store.load(store_key(sid)) is not None, "old record must survive until the save"
    s.save()
    assert s.id is not None
    assert s.id != sid
    assert store.load(store_key(sid)) is None
    record = store.load(store_key(s.id))
    assert record is not None
    assert record.data == {"cart": [1]}


def test_destroy_clears_and_later_writes_start_a_new_session(store: Store) -> None:
    sid = new_saved(store, user="alice")
    s = Session(SessionSettings(store), sid)
    s.destroy()
    assert len(s) == 0
    assert store.load(store_key(sid)) is None
    s["flash"] = "bye"
    s.save()
    assert s.id not in (None, sid)


def test_reload_discards_unsaved_changes(store: Store) -> None:
    sid = new_saved(store, n=1)
    s = Session(SessionSettings(store), sid)
    s["n"] = 2
    other = Session(SessionSettings(store), sid)
    other["m"] = 5
    other.save()
    s.reload()
    assert dict(s) == {"n": 1, "m": 5}
    assert not s.modified


def test_touch_refreshes_expiry_without_rewriting(store: Store, clock: Clock) -> None:
    sid = new_saved(store, n=1)
    before = store.load(store_key(sid))
    assert before is not None
    clock.advance(100)
    counting = CountingStore(store)
    s = Session(SessionSettings(counting), sid)
    s.touch()
    assert counting.calls == ["load", "touch"]
    after = store.load(store_key(sid))
    assert after is not None
    assert after.expires_at == pytest.approx(before.expires_at + 100, abs=0.1)


def test_absolute_timeout_caps_expiry_and_kills_old_sessions(store: Store, clock: Clock) -> None:
    settings = SessionSettings(store, ttl=100, absolute_timeout=250)
    s = Session(settings)
    s["n"] = 1
    s.save()
    sid = s.id
    assert sid is not None
    for _ in range(2):
        clock.advance(90)
        s = Session(settings, sid)
        s["n"] += 1
        s.save()
    assert s.expires_at == pytest.approx(s.created_at + 250, abs=0.1)
    clock.advance(80)
    s = Session(settings, sid)
    assert s.id is None
    assert len(s) == 0
    assert store.load(store_key(sid)) is None


def test_unknown_id_is_never_adopted(store: Store) -> None:
    forged = "A" * 43
    s = Session(SessionSettings(store), forged)
    s["x"] = 1
    s.save()
    assert s.id != forged
    assert store.load(store_key(forged)) is None


def test_mapping_methods(store: Store) -> None:
    s = Session(SessionSettings(store))
    s.update(a=1, b=2)
    assert s.pop("a") == 1
    assert s.setdefault("c", [3]) == [3]
    assert "b" in s
    assert "zz" not in s
    assert sorted(s) == ["b", "c"]
    s.clear()
    assert len(s) == 0
    assert repr(s).startswith("<Session")


def test_clock_is_patchable(clock: Clock) -> None:
    t = _clock.now()
    clock.advance(1000)
    assert _clock.now() >= t + 1000


def test_flash_survives_exactly_one_pop(store: Store) -> None:
    s = Session(SessionSettings(store))
    s.flash("Logged out")
    s.flash("Careful", category="warning")
    s.save()
    sid = s.id
    nxt = Session(SessionSettings(store), sid)
    assert nxt.peek_flashes() == [("info", "Logged out"), ("warning", "Careful")]
    assert nxt.pop_flashes() == [("info", "Logged out"), ("warning", "Careful")]
    nxt.save()
    after = Session(SessionSettings(store), sid)
    assert after.pop_flashes() == []
    assert not after.modified


def test_flash_rejects_non_text(store: Store) -> None:
    s = Session(SessionSettings(store))
    with pytest.raises(TypeError):
        s.flash(object())  # type: ignore[arg-type]


def test_csrf_token_is_stable_and_checked_in_constant_time(store: Store) -> None:
    s = Session(SessionSettings(store))
    token = s.csrf_token
    assert len(token) >= 43
    assert s.csrf_token == token
    s.save()
    again = Session(SessionSettings(store), s.id)
    assert again.check_csrf(token)
    assert not again.check_csrf(token[:-1])
    assert not again.check_csrf("")
    assert not again.check_csrf(None)
    assert not again.check_csrf("é" * 43)
    other = Session(SessionSettings(store))
    assert not other.check_csrf(token), "a foreign token is refused"
    assert not Session(SessionSettings(store)).check_csrf(""), "no token in the session: always False"


def test_new_csrf_token_replaces_the_old(store: Store) -> None:
    s = Session(SessionSettings(store))
    old = s.csrf_token
    new = s.new_csrf_token()
    assert new != old
    assert s.check_csrf(new)
    assert not s.check_csrf(old)


@pytest.mark.parametrize(
    "value",
    [pytest.param("\ud800", id="lone-surrogate"), pytest.param({"k\udfff": 1}, id="surrogate-dict-key")],
)
def test_text_that_is_not_unicode_is_refused(store: Store, value: Any) -> None:
    s = Session(SessionSettings(store))
    with pytest.raises(TypeError, match="surrogate"):
        s["x"] = value
    with pytest.raises(TypeError, match="surrogate"):
        s["\udc80"] = 1
    s["ok"] = "zoë ☃ 𝄞"
    s.save()
    assert dict(Session(SessionSettings(store), s.id)) == {"ok": "zoë ☃ 𝄞"}


def test_flashes_that_are_not_text_come_back_as_text(store: Store) -> None:
    # What an integration may queue: Pyramid's flash() takes JSON data and Markup (tagged).
    s = Session(SessionSettings(store))
    s.flash("plain")
    s["_flashes"] = [
        *s["_flashes"],
        ["info", {"text": "Saved", "level": 2}],
        ["html", {" markup": "<b>bold</b>"}],
        ["info", {" tuple": [1, "two"]}],
        ["info", 3],
        ["info", None],
        ["info", {" unknown": "tag"}],
        ["broken"],
        "not a pair",
    ]
    s.save()
    again = Session(SessionSettings(store), s.id)
    expected = [
        ("info", "plain"),
        ("info", '{"text":"Saved","level":2}'),
        ("html", "<b>bold</b>"),
        ("info", '[1,"two"]'),
        ("info", "3"),
        ("info", "null"),
        ("info", '{" unknown":"tag"}'),
    ]
    assert again.peek_flashes() == expected
    popped = again.pop_flashes()
    assert popped == expected
    assert all(type(category) is str and type(message) is str for category, message in popped)
    assert again.pop_flashes() == []


# -- the cookie's own lifetime (permanent) --------------------------------------------------


def test_permanent_is_kept_with_the_session(store: Store) -> None:
    from wsgisession.session import PERMANENT_KEY

    s = Session(SessionSettings(store))
    assert s.permanent is None
    s.permanent = False
    assert s.permanent is False
    assert s[PERMANENT_KEY] is False
    s.save()
    assert s.id is not None
    again = Session(SessionSettings(store), s.id)
    assert again.permanent is False
    again.permanent = None
    assert PERMANENT_KEY not in again
    assert again.permanent is None
    again.save()
    assert Session(SessionSettings(store), s.id).permanent is None


def test_permanent_ignores_a_stored_value_that_is_not_a_bool(store: Store) -> None:
    from wsgisession.session import PERMANENT_KEY

    s = Session(SessionSettings(store))
    s[PERMANENT_KEY] = "yes"
    assert s.permanent is None


def test_changing_permanent_resends_the_cookie_even_if_the_expiry_is_the_same(store: Store, clock: Clock) -> None:
    from wsgisession.session import CookieAction

    s = Session(SessionSettings(store))
    s["a"] = 1
    s.save()
    sid = s.id
    # The clock stands still: the save below gives the same expiry, but the
    # browser's cookie must change from persistent to browser-session.
    again = Session(SessionSettings(store), sid)
    again.permanent = False
    assert again.commit() is CookieAction.SET
    unchanged = Session(SessionSettings(store), sid)
    unchanged["a"] = 2
    assert unchanged.commit() is CookieAction.NONE


def test_rolling_refresh_is_not_an_access(store: Store, clock: Clock) -> None:
    settings = SessionSettings(store, ttl=600, rolling=True)
    s = Session(settings)
    s["a"] = 1
    s.save()
    clock.advance(120)
    ignored = Session(settings, s.id)
    ignored.commit()
    assert ignored.expires_at == pytest.approx(clock() + 600)  # refreshed...
    ignored.accessed = False  # (reading expires_at above was a use)
    clock.advance(120)
    again = Session(settings, s.id)
    again.commit()
    assert not again.accessed  # ...without counting as a use of the session
