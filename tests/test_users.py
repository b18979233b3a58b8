"""Sessions per user: login binding, other devices, logout everywhere, on every store."""

from __future__ import annotations

from typing import Any

import pytest
import webtest

from wsgisession import Session, SessionMiddleware, UserIndex, get_session
from wsgisession.errors import WSGISessionError
from wsgisession.ids import store_key
from wsgisession.session import SessionSettings
from wsgisession.stores.base import Record, Store, Update
from wsgisession.testing import Clock

from .conftest import SECRET


def user_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    import json

    session = get_session(environ)
    path = environ["PATH_INFO"]
    body: Any = None
    if path.startswith("/login/"):
        session.login(path.rsplit("/", 1)[1])
        body = session.user_id
    elif path == "/others":
        body = [[o.handle, o.user_agent, o.created_at, o.last_seen, o.expires_at] for o in session.other_sessions()]
    elif path == "/end-others":
        body = session.end_other_sessions()
    elif path.startswith("/end/"):
        body = session.end_session(path.rsplit("/", 1)[1])
    elif path == "/me":
        body = session.user_id
    elif path == "/logout":
        session.destroy()
    payload = json.dumps(body).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [payload]


def device(mw: SessionMiddleware, agent: str) -> webtest.TestApp:
    return webtest.TestApp(mw, extra_environ={"HTTP_USER_AGENT": agent})


def test_three_devices_of_one_user_and_one_of_another(every_store: Store, clock: Clock) -> None:
    mw = SessionMiddleware(user_app, SECRET, every_store)
    phone, laptop, tablet = (device(mw, ua) for ua in ("Phone/1.0", "Laptop/2.0", "Tablet/3.0"))
    bob = device(mw, "Bob/1.0")
    for client in (phone, laptop, tablet):
        client.get("/login/alice")
        clock.advance(10)
    bob.get("/login/bob")
    assert phone.get("/me").json == "alice"

    others = laptop.get("/others").json
    assert sorted(o[1] for o in others) == ["Phone/1.0", "Tablet/3.0"]
    for handle, _, created, seen, expires in others:
        assert len(handle) == 32
        assert created <= seen <= expires
    assert bob.get("/others").json == []

    assert laptop.get("/end-others").json == 2
    assert laptop.get("/me").json == "alice", "the current session lives on"
    assert phone.get("/me").json is None
    assert tablet.get("/me").json is None
    assert bob.get("/me").json == "bob", "another user's sessions are untouched"
    assert laptop.get("/others").json == []


def test_handles_end_one_session_and_reveal_no_id(every_store: Store) -> None:
    mw = SessionMiddleware(user_app, SECRET, every_store)
    phone, laptop = device(mw, "Phone"), device(mw, "Laptop")
    phone.get("/login/alice")
    laptop.get("/login/alice")
    phone_id = str(phone.cookies["session"]).split(".")[0]
    [[handle, *_]] = laptop.get("/others").json
    assert handle not in (phone_id, store_key(phone_id))
    assert phone_id not in laptop.get("/others").text
    assert laptop.get("/end/not-a-handle").json is False
    assert laptop.get(f"/end/{handle}").json is True
    assert phone.get("/me").json is None
    assert laptop.get("/me").json == "alice"


def test_a_handle_from_another_user_ends_nothing(every_store: Store) -> None:
    mw = SessionMiddleware(user_app, SECRET, every_store)
    a1, a2, mallory = device(mw, "A1"), device(mw, "A2"), device(mw, "M")
    a1.get("/login/alice")
    a2.get("/login/alice")
    mallory.get("/login/mallory")
    [[handle, *_]] = a2.get("/others").json
    assert mallory.get(f"/end/{handle}").json is False
    assert a1.get("/me").json == "alice"


def test_expired_sessions_are_never_listed(every_store: Store, clock: Clock) -> None:
    mw = SessionMiddleware(user_app, SECRET, every_store, max_age=60)
    old, new = device(mw, "Old"), device(mw, "New")
    old.get("/login/alice")
    clock.advance(50)
    new.get("/login/alice")
    assert len(new.get("/others").json) == 1
    clock.advance(20)
    assert new.get("/others").json == []


def test_destroy_user_ends_every_session(every_store: Store) -> None:
    mw = SessionMiddleware(user_app, SECRET, every_store)
    clients = [device(mw, f"D{i}") for i in range(3)]
    for c in clients:
        c.get("/login/alice")
    bob = device(mw, "B")
    bob.get("/login/bob")
    assert isinstance(every_store, UserIndex)
    assert every_store.destroy_user("alice") == 3
    assert all(c.get("/me").json is None for c in clients)
    assert bob.get("/me").json == "bob"


def test_login_regenerates_binds_and_rotates_csrf(every_store: Store) -> None:
    s = Session(SessionSettings(every_store), user_agent="UA")
    s["cart"] = [1]
    token = s.csrf_token
    s.save()
    before = s.id
    s.login(42)
    assert s.user_id == "42"
    assert s.id != before
    assert not s.check_csrf(token)
    s.save()
    assert s.id is not None
    record = every_store.load(store_key(s.id))
    assert record is not None
    assert record.user_id == "42"
    assert record.data["cart"] == [1]
    assert record.data["_user_agent"] == "UA"
    assert before is not None
    assert every_store.load(store_key(before)) is None


def test_user_binding_survives_later_saves_and_regenerate(every_store: Store) -> None:
    s = Session(SessionSettings(every_store))
    s.login("alice")
    s.save()
    again = Session(SessionSettings(every_store), s.id)
    assert again.user_id == "alice"
    again["x"] = 1
    again.regenerate()
    again.save()
    assert again.id is not None
    record = every_store.load(store_key(again.id))
    assert record is not None
    assert record.user_id == "alice"
    assert isinstance(every_store, UserIndex)
    assert [k for k, _ in every_store.sessions_of("alice")] == [store_key(again.id)]


@pytest.mark.parametrize("bad", ["", None, 1.5, ["a"]])
def test_login_refuses_bad_user_ids(bad: Any) -> None:
    from wsgisession import MemoryStore

    s = Session(SessionSettings(MemoryStore()))
    with pytest.raises(TypeError, match="user ID"):
        s.login(bad)


def test_anonymous_session_has_no_others() -> None:
    from wsgisession import MemoryStore

    s = Session(SessionSettings(MemoryStore()))
    assert s.user_id is None
    assert s.other_sessions() == []
    assert s.end_other_sessions() == 0


def test_store_without_index_is_a_clear_error() -> None:
    class Plain:
        def __init__(self) -> None:
            from wsgisession import MemoryStore

            self.inner = MemoryStore()

        def load(self, key: str) -> Record | None:
            return self.inner.load(key)

        def save(self, key: str, update: Update) -> bool:
            return self.inner.save(key, update)

        def touch(self, key: str, expires_at: float) -> bool:
            return self.inner.touch(key, expires_at)

        def destroy(self, key: str) -> None:
            self.inner.destroy(key)

        def prune(self) -> int:
            return self.inner.prune()

        def close(self) -> None:
            self.inner.close()

    s = Session(SessionSettings(Plain()))
    s.login("alice")
    s.save()
    with pytest.raises(WSGISessionError, match="no index"):
        s.other_sessions()


@pytest.mark.parametrize("bad", ["\ud800", "a\x00b", "line\nbreak"])
def test_login_refuses_user_ids_that_are_not_printable_text(bad: str) -> None:
    from wsgisession import MemoryStore

    s = Session(SessionSettings(MemoryStore()))
    with pytest.raises(TypeError, match="user ID"):
        s.login(bad)
