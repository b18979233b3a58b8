"""encrypt=True: a store, and a dump of it, holds nothing of a session's data that can be read."""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import sqlite3
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import webtest

from wsgisession import MemoryStore, SessionMiddleware, SQLiteStore, get_session
from wsgisession.ids import store_key
from wsgisession.sealing import PREFIX, is_sealed
from wsgisession.stores.base import Store, Update

from . import servers
from .conftest import SECRET

MARKER = "märker-" + os.urandom(6).hex()


@pytest.fixture(autouse=True)
def _cryptography() -> None:
    servers.require_module("cryptography", "cannot test encrypt=True")


def _encodings(marker: str) -> list[bytes]:
    """The marker as a dump might hold it: raw, JSON-escaped, base64 and hex at every alignment."""
    raw = marker.encode("utf-8")
    forms = {raw, json.dumps(marker).encode()[1:-1], json.dumps(marker, ensure_ascii=False).encode()[1:-1]}
    forms.add(marker.encode("utf-16-le"))
    forms.add(raw.hex().encode())
    for skip in range(3):
        # The marker's bytes from a 3-byte boundary on, whole groups only: what
        # base64 of any text holding the marker holds, at one of three alignments.
        part = raw[skip:]
        part = part[: len(part) - len(part) % 3]
        forms.add(base64.b64encode(part))
        forms.add(base64.urlsafe_b64encode(part))
    return sorted(forms, key=len)


def _assert_absent(dump: bytes, what: str) -> None:
    assert dump, f"nothing was read from the {what}"
    for form in _encodings(MARKER):
        assert form not in dump, f"the {what} holds the marker as {form!r}"


# -- an app that keeps the marker in every place a session has --------------------------------


def _app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    session = get_session(environ)
    path = environ["PATH_INFO"]
    body = b""
    if path == "/login":
        session.login("alice-" + MARKER[-4:])
        session["note"] = MARKER
        session["nested"] = {"list": [MARKER, 1], "n": 2}
        session.flash(MARKER)
    elif path == "/read":
        body = json.dumps([session.get("note"), session.get("nested"), session.peek_flashes()]).encode()
    elif path == "/update":
        session["visits"] = session.get("visits", 0) + 1
        session["other"] = MARKER + "-2"
    elif path == "/regenerate":
        session.regenerate()
        session["after"] = MARKER
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body]


def _exercise(store: Store) -> webtest.TestApp:
    client = webtest.TestApp(SessionMiddleware(_app, secret=SECRET, store=store, encrypt=True))
    client.get("/login")
    got = client.get("/read").json
    assert got == [MARKER, {"list": [MARKER, 1], "n": 2}, [["info", MARKER]]], "the app reads its data back"
    client.get("/update")
    client.get("/regenerate")
    assert client.get("/read").json[0] == MARKER, "the data survives a new ID"
    return client


# -- every store, and how to read all of it -----------------------------------------------


@contextlib.contextmanager
def _store(kind: str, tmp_path: Path) -> Iterator[tuple[Store, Callable[[], bytes]]]:
    """A fresh store of *kind*, and a function returning every byte it holds."""
    unique = servers.unique_name("wsgisession_sealed")
    if kind == "sqlite":
        path = tmp_path / "sessions.db"
        store: Store = SQLiteStore(path)

        def dump() -> bytes:
            with contextlib.closing(sqlite3.connect(path)) as conn:
                rows = repr(conn.execute("SELECT * FROM wsgisession_sessions").fetchall()).encode()
            return rows + b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith("sessions.db"))

        yield store, dump
        store.close()
    elif kind == "file":
        from wsgisession.stores.file import FileStore

        directory = tmp_path / "sessions"
        store = FileStore(directory)

        def dump() -> bytes:
            files = sorted(p for p in directory.rglob("*") if p.is_file())
            return b"".join(str(p).encode() + p.read_bytes() for p in files)

        yield store, dump
        store.close()
    elif kind == "redis":
        import redis

        from wsgisession.stores.redis import RedisStore

        url = servers.require_redis()
        store = RedisStore(url, prefix=unique + ":")
        client = redis.Redis.from_url(url)

        def dump() -> bytes:
            out = []
            for name in client.scan_iter(match=unique + ":*"):
                kind_of = client.type(name)
                out.append(name)
                if kind_of == b"hash":
                    out += [b for pair in client.hgetall(name).items() for b in pair]
                elif kind_of in (b"set", b"zset"):
                    out += list(client.smembers(name) if kind_of == b"set" else client.zrange(name, 0, -1))
                else:
                    out.append(client.dump(name) or b"")
            return b"\n".join(out)

        yield store, dump
        store.close()
        keys = list(client.scan_iter(match=unique + ":*"))
        if keys:
            client.delete(*keys)
        client.close()
    elif kind == "postgres":
        import psycopg

        from wsgisession.stores.postgres import PostgresStore

        url = servers.require_postgres()
        store = PostgresStore(url, table=unique)

        def dump() -> bytes:
            with psycopg.connect(url, autocommit=True) as conn:
                rows = conn.execute(f"SELECT t::text FROM {unique} t").fetchall()
            return "\n".join(r[0] for r in rows).encode()

        yield store, dump
        store.close()
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f"DROP TABLE IF EXISTS {unique}")
    elif kind == "mysql":
        from wsgisession.stores.mysql import MySQLStore

        url = servers.require_mysql()
        store = MySQLStore.from_url(f"{url}?table={unique}")

        def dump() -> bytes:
            with contextlib.closing(servers.mysql_connect(url)) as conn:
                cur = conn.cursor()
                cur.execute(f"SELECT * FROM `{unique}`")
                return repr(cur.fetchall()).encode()

        yield store, dump
        store.close()
        with contextlib.closing(servers.mysql_connect(url)) as conn:
            conn.cursor().execute(f"DROP TABLE IF EXISTS `{unique}`")
    else:
        raise ValueError(kind)


@pytest.mark.parametrize("kind", ["sqlite", "file", "redis", "postgres", "mysql"])
def test_no_byte_of_the_store_holds_the_data(kind: str, tmp_path: Path) -> None:
    with _store(kind, tmp_path) as (store, dump):
        _exercise(store)
        _assert_absent(dump(), f"{kind} store")


def test_the_marker_check_finds_plaintext(tmp_path: Path) -> None:
    """The check above can fail: without encrypt=True the same flow leaves the marker in the store."""
    with _store("sqlite", tmp_path) as (store, dump):
        client = webtest.TestApp(SessionMiddleware(_app, secret=SECRET, store=store))
        client.get("/login")
        with pytest.raises(AssertionError, match="holds the marker"):
            _assert_absent(dump(), "sqlite store")


def test_every_stored_value_is_sealed_and_the_user_index_still_works(every_store: Store) -> None:
    client = _exercise(every_store)
    client.get("/update")
    from wsgisession.stores.base import UserIndex

    assert isinstance(every_store, UserIndex)
    sessions = every_store.sessions_of("alice-" + MARKER[-4:])
    assert len(sessions) == 1
    _, record = sessions[0]
    assert record.data and all(is_sealed(v) for v in record.data.values()), record.data
    assert "_user_agent" not in record.data, "no user agent is kept when values are sealed"


# -- tampering: a value moved, swapped or changed is absent -------------------------------


def _login(store: Store, name: str = "alice") -> tuple[webtest.TestApp, str]:
    client = webtest.TestApp(SessionMiddleware(_app, secret=SECRET, store=store, encrypt=True))
    client.get("/login")
    client.get("/update")
    cookie = client.cookies["session"]
    return client, store_key(cookie.split(".", 1)[0])


def _stored(store: Store, key: str) -> dict[str, Any]:
    record = store.load(key)
    assert record is not None
    return record.data


def _replant(store: Store, key: str, **values: Any) -> None:
    assert store.save(key, Update(set=values, expires_at=_stored_expiry(store, key)))


def _stored_expiry(store: Store, key: str) -> float:
    record = store.load(key)
    assert record is not None
    return record.expires_at


@pytest.fixture
def security_events(caplog: pytest.LogCaptureFixture) -> Callable[[], list[str]]:
    caplog.set_level(logging.INFO, logger="wsgisession.security")

    def events() -> list[str]:
        return [getattr(r, "security_event", "") for r in caplog.records if r.name == "wsgisession.security"]

    return events


def test_a_value_moved_to_another_key_is_absent(every_store: Store, security_events: Any) -> None:
    client, key = _login(every_store)
    data = _stored(every_store, key)
    _replant(every_store, key, visits=data["note"])  # the note's sealed text, under "visits"
    assert client.get("/read").json[0] == MARKER
    client.get("/update")
    assert _stored_visits(every_store, key, client) == 1, "the moved value read as absent, so visits starts over"
    assert "sealed_value_refused" in security_events()


def _stored_visits(store: Store, key: str, client: webtest.TestApp) -> Any:
    def probe(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "application/json")])
        return [json.dumps(get_session(environ).get("visits")).encode()]

    app = webtest.TestApp(SessionMiddleware(probe, secret=SECRET, store=store, encrypt=True))
    app.set_cookie("session", client.cookies["session"])
    return app.get("/").json


def test_a_value_from_another_session_is_absent(every_store: Store, security_events: Any) -> None:
    client, key = _login(every_store)
    _, other_key = _login(every_store)
    _replant(every_store, key, note=_stored(every_store, other_key)["note"])
    assert client.get("/read").json[0] is None
    assert "sealed_value_refused" in security_events()


@pytest.mark.parametrize("where", [len(PREFIX), len(PREFIX) + 10, -1, -20])
def test_a_value_with_a_flipped_bit_is_absent(every_store: Store, where: int, security_events: Any) -> None:
    client, key = _login(every_store)
    sealed = _stored(every_store, key)["note"]
    i = where % len(sealed)
    flipped = sealed[:i] + ("A" if sealed[i] != "A" else "B") + sealed[i + 1 :]
    _replant(every_store, key, note=flipped)
    assert client.get("/read").json[0] is None
    assert "sealed_value_refused" in security_events()


def test_a_refused_value_costs_only_itself(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "s.db")
    client, key = _login(store)
    _replant(store, key, note=PREFIX + "garbage")
    note, nested, flashes = client.get("/read").json
    assert note is None and nested == {"list": [MARKER, 1], "n": 2} and flashes == [["info", MARKER]]
    store.close()


# -- turning it on and off ----------------------------------------------------------------------


def test_turning_encryption_on_seals_plaintext_sessions_on_their_next_request() -> None:
    store = MemoryStore()
    plain = webtest.TestApp(SessionMiddleware(_app, secret=SECRET, store=store))
    plain.get("/login", headers={"User-Agent": "Firefox " + MARKER})
    key = store_key(plain.cookies["session"].split(".", 1)[0])
    assert _stored(store, key)["note"] == MARKER
    assert _stored(store, key)["_user_agent"].startswith("Firefox")
    sealed = webtest.TestApp(SessionMiddleware(_app, secret=SECRET, store=store, encrypt=True))
    sealed.set_cookie("session", plain.cookies["session"])
    assert sealed.get("/read").json[0] == MARKER
    data = _stored(store, key)
    assert all(is_sealed(v) for v in data.values()), data
    assert "_user_agent" not in data, "the user agent is dropped, not sealed where no other session can read it"
    assert sealed.get("/read").json[0] == MARKER


def test_turning_encryption_off_opens_sealed_sessions_on_their_next_request() -> None:
    store = MemoryStore()
    sealed = webtest.TestApp(SessionMiddleware(_app, secret=SECRET, store=store, encrypt=True))
    sealed.get("/login")
    key = store_key(sealed.cookies["session"].split(".", 1)[0])
    plain = webtest.TestApp(SessionMiddleware(_app, secret=SECRET, store=store))
    plain.set_cookie("session", sealed.cookies["session"])
    assert plain.get("/read").json[0] == MARKER
    assert _stored(store, key)["note"] == MARKER


def _without_cryptography(monkeypatch: pytest.MonkeyPatch) -> None:
    """From here on, ``import cryptography`` fails as on a machine without the package."""
    from wsgisession import sealing

    monkeypatch.setattr(sealing, "_aead", None)
    for name in [name for name in sys.modules if name.partition(".")[0] == "cryptography"]:
        monkeypatch.setitem(sys.modules, name, None)


def test_encrypt_needs_cryptography(monkeypatch: pytest.MonkeyPatch) -> None:
    from wsgisession.errors import ConfigurationError

    _without_cryptography(monkeypatch)
    with pytest.raises(ConfigurationError, match=r"wsgisession\[encryption\]"):
        SessionMiddleware(_app, secret=SECRET, store=MemoryStore(), encrypt=True)


# -- a rename racing another request ------------------------------------------------------


def test_a_rename_reseals_what_it_has_and_drops_what_it_could_not_see(caplog: pytest.LogCaptureFixture) -> None:
    """Values another request added just before a rename stay sealed under the old ID: absent, then deleted."""
    from wsgisession.session import Session, SessionSettings

    store = MemoryStore()
    settings = SessionSettings(store, encrypt=True)
    first = Session(settings)
    first["a"] = 1
    first.commit()
    sid = first.id
    assert sid is not None
    renaming = Session(settings, sid)
    assert renaming["a"] == 1
    meanwhile = Session(settings, sid)
    meanwhile["extra"] = 2
    meanwhile.commit()
    renaming.regenerate()
    renaming["b"] = 3
    renaming.commit()
    new = renaming.id
    assert new is not None and new != sid
    assert set(_stored(store, store_key(new))) == {"a", "b", "extra"}, "the store carried the raced value"
    with caplog.at_level(logging.WARNING, logger="wsgisession.security"):
        after = Session(settings, new)
        assert dict(after) == {"a": 1, "b": 3}
        assert "sealed value 'extra'" in caplog.text and sid not in caplog.text and new not in caplog.text
        after.commit()
    assert set(_stored(store, store_key(new))) == {"a", "b"}, "the next save deleted the value it could not open"
    assert dict(Session(settings, new)) == {"a": 1, "b": 3}


def test_a_value_is_opened_when_first_used(monkeypatch: pytest.MonkeyPatch) -> None:
    """A request pays for the values it uses, not for every value the session holds."""
    from wsgisession.sealing import Sealer
    from wsgisession.session import CookieAction, Session, SessionSettings

    opened: list[str] = []
    real_open = Sealer.open

    def counting_open(self: Sealer, session_id: str, name: str, sealed: str) -> Any:
        opened.append(name)
        return real_open(self, session_id, name, sealed)

    monkeypatch.setattr(Sealer, "open", counting_open)
    store = MemoryStore()
    settings = SessionSettings(store, encrypt=True)
    first = Session(settings)
    first.update({"a": 1, "b": [2], "c": "three"})
    first.commit()
    sid = first.id
    session = Session(settings, sid)
    assert session["a"] == 1 and session.get("a") == 1 and "a" in session
    assert opened == ["a"]
    session["b"] = [2]  # the stored value decides whether this changes anything: opened
    assert opened == ["a", "b"]
    assert not session.modified and session.commit() is CookieAction.NONE
    session = Session(settings, sid)
    assert len(session) == 3 and dict(session) == {"a": 1, "b": [2], "c": "three"}
    assert sorted(opened[2:]) == ["a", "b", "c"]


def test_a_value_that_will_not_open_is_found_out_when_used(caplog: pytest.LogCaptureFixture) -> None:
    """Absent and logged when used, deleted by that request's save; left alone by a request that never uses it."""
    from wsgisession.session import Session, SessionSettings

    store = MemoryStore()
    settings = SessionSettings(store, encrypt=True)
    first = Session(settings)
    first.update({"a": 1, "b": 2})
    first.commit()
    sid = first.id
    assert sid is not None
    key = store_key(sid)
    _replant(store, key, b=_stored(store, key)["a"])  # "a"'s sealed value moved to "b": it will not open there
    with caplog.at_level(logging.WARNING, logger="wsgisession.security"):
        untouched = Session(settings, sid)
        assert untouched["a"] == 1
        assert not untouched.modified
        untouched.commit()
        assert "sealed value" not in caplog.text
        assert "b" in _stored(store, key), "a request that never used it leaves it be"
        used = Session(settings, sid)
        assert "b" not in used and used.get("b") is None
        assert "sealed value 'b'" in caplog.text and sid not in caplog.text
        assert used.modified
        used.commit()
    assert set(_stored(store, key)) == {"a"}, "the request that found it out deleted it"


# -- the command line needs no session ID --------------------------------------------------


def test_the_command_line_works_on_a_sealed_store(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from wsgisession import cli

    path = tmp_path / "sessions.db"
    url = f"sqlite:///{path}"
    store = SQLiteStore(path)
    user = "alice-" + MARKER[-4:]
    clients = [_exercise(store) for _ in range(2)]
    assert len(clients) == 2
    store.close()
    assert cli.main(["count", url]) == 0
    assert capsys.readouterr().out.strip() == "2"
    assert cli.main(["list", url, "--user", user]) == 0
    listing = capsys.readouterr().out
    assert len(listing.strip().splitlines()) == 3 and MARKER not in listing and PREFIX not in listing
    assert cli.main(["prune", url]) == 0
    capsys.readouterr()
    assert cli.main(["end", url, "--user", user]) == 0
    assert capsys.readouterr().out.strip() == f"ended 2 sessions of user {user!r}"
    assert cli.main(["count", url]) == 0
    assert capsys.readouterr().out.strip() == "0"


def test_without_cryptography_sealed_values_are_absent_but_kept(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Turned off on a machine without the package: nothing to open with, so nothing is deleted either."""
    store = MemoryStore()
    sealed = webtest.TestApp(SessionMiddleware(_app, secret=SECRET, store=store, encrypt=True))
    sealed.get("/login")
    key = store_key(sealed.cookies["session"].split(".", 1)[0])
    note = _stored(store, key)["note"]
    _without_cryptography(monkeypatch)
    plain = webtest.TestApp(SessionMiddleware(_app, secret=SECRET, store=store))
    plain.set_cookie("session", sealed.cookies["session"])
    with caplog.at_level(logging.WARNING, logger="wsgisession.security"):
        assert plain.get("/read").json[0] is None
        plain.get("/update")
    assert "cryptography package is not installed" in caplog.text
    assert _stored(store, key)["note"] == note, "the sealed value survives the save"
    monkeypatch.undo()
    assert sealed.get("/read").json[0] == MARKER, "and opens again where the package is"
