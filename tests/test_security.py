"""Security properties, each tied to a threat in SECURITY.md."""

from __future__ import annotations

import base64
import json
import logging
import os
import pickle
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import webtest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wsgisession import SessionMiddleware, get_session, ids
from wsgisession.ids import new_id, store_key
from wsgisession.signing import Signer
from wsgisession.stores.base import Store, Update

from .conftest import SECRET, STORE_KINDS, open_store

ROOT = Path(__file__).resolve().parent.parent


# -- IDs ---------------------------------------------------------------------------------


def test_ids_are_unique_and_carry_256_random_bits() -> None:
    n = 100_000
    generated = [new_id() for _ in range(n)]
    assert len(set(generated)) == n
    raw = [base64.urlsafe_b64decode(i + "=") for i in generated]
    assert all(len(r) == 32 for r in raw)
    # Every one of the 256 bit positions is set in about half the IDs: no
    # constant or biased bits (each count is within ~6 sigma of n/2).
    counts = [0] * 256
    for r in raw[:20_000]:
        value = int.from_bytes(r, "big")
        for bit in range(256):
            counts[bit] += (value >> bit) & 1
    sigma = (20_000 * 0.25) ** 0.5
    assert all(abs(c - 10_000) < 6 * sigma for c in counts)


def test_ids_come_from_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def token_urlsafe(nbytes: int) -> str:
        calls.append(nbytes)
        return "x" * 43

    monkeypatch.setattr(ids.secrets, "token_urlsafe", token_urlsafe)
    assert new_id() == "x" * 43
    assert calls == [32]


# -- nothing leaks -------------------------------------------------------------------------


class Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def captured() -> Iterator[Capture]:
    handler = Capture()
    root = logging.getLogger("wsgisession")
    old = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield handler
    root.removeHandler(handler)
    root.setLevel(old)


def leak_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    session = get_session(environ)
    path = environ["PATH_INFO"]
    if path == "/login":
        session.login("alice")
    elif path == "/slow-write":
        session.get("n")
        environ["test.before_save"]()
        session["n"] = 1
    elif path == "/bad":
        session["x"] = object()
    elif path == "/logout":
        session.destroy()
    elif path == "/read":
        session.get("n")
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [repr(session).encode()]


def test_no_raw_id_or_secret_in_logs_errors_or_reprs(
    every_store: Store, captured: Capture, clock: Any, caplog: pytest.LogCaptureFixture
) -> None:
    mw = SessionMiddleware(leak_app, [SECRET, "older-secret-" + "o" * 32], every_store, max_age=60)
    app = webtest.TestApp(mw)
    app.get("/login")
    sid = str(app.cookies["session"]).split(".")[0]
    cookie = f"session={app.cookies['session']}"
    bodies = [app.get("/read").text]
    # Every security event: duplicate cookie, malformed and badly signed cookies...
    app.get("/read", headers={"Cookie": f"session={sid}.{'A' * 43}; {cookie}; session=junk.junk"})
    app.get("/read", headers={"Cookie": "session=" + "x" * 100})
    # ...a resurrection attempt (destroyed by another request meanwhile)...
    app.get(
        "/slow-write",
        extra_environ={"test.before_save": lambda: every_store.destroy(store_key(sid))},
        headers={"Cookie": cookie},
    )
    # ...a non-JSON value, an oversized header and a replay after expiry.
    app.get("/login")
    sid2 = str(app.cookies["session"]).split(".")[0]
    with pytest.raises(TypeError) as info:
        app.get("/bad")
    app.get("/read", headers={"Cookie": "a=" + "b" * 40_000})
    clock.advance(61)
    app.get("/read")

    events = {getattr(r, "security_event", None) for r in captured.records}
    assert {"duplicate_cookie", "bad_signature", "malformed_cookie", "resurrection_attempt"} <= events
    assert {"oversized_cookie_header", "expired_replay"} <= events
    texts = [r.getMessage() for r in captured.records]
    texts += [logging.Formatter().format(r) for r in captured.records]
    texts += [str(info.value), repr(mw), repr(every_store), *bodies]
    for text in texts:
        for secret_thing in (sid, sid2, SECRET, "older-secret"):
            assert secret_thing not in text, text


# -- no pickle, corrupt records ----------------------------------------------------------------


class Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> Any:
        return (Path.touch, (self.marker,))


_MYSQL_TABLES: set[str] = set()
_mysql_admin: Any = None


def plant(kind: str, store: Any, key: str, raw: bytes) -> None:
    """Write *raw* where *store* keeps a session's data, bypassing the store's own checks."""
    now = time.time()
    if kind == "memory":
        from wsgisession.stores.memory import _Entry

        store._records[key] = _Entry(raw.decode("latin-1"), now, now + 600, None)
    elif kind == "sqlite":
        store._connect().execute(
            f"INSERT OR REPLACE INTO {store.table} (key, data, created_at, expires_at) VALUES (?, ?, ?, ?)",
            (key, raw, now, now + 600),
        )
    elif kind == "file":
        from wsgisession.stores.base import Record
        from wsgisession.stores.file import encode_record_file

        # A well-formed record file whose data line is *raw*: the payload, not
        # the file format, is what is on trial.
        head = encode_record_file(Record({}, now, now + 600)).partition(b"\n")[0]
        Path(store._dir, key).write_bytes(head + b"\n" + raw)
    elif kind == "redis":
        name = store.prefix + key
        store._client.delete(name)
        store._client.hset(name, mapping={b"m:created": str(now), b"m:expires": str(now + 600), b"d:x": raw})
    elif kind == "postgres":
        import psycopg

        from . import servers

        text = raw.decode("latin-1").replace("\x00", "")
        with psycopg.connect(servers.require_postgres(), autocommit=True) as conn:
            store.load(key)  # makes sure the table exists
            conn.execute(
                psycopg.sql.SQL(
                    "INSERT INTO {} (key, data, created_at, expires_at) VALUES (%s, %s::jsonb, %s, %s) "
                    "ON CONFLICT (key) DO UPDATE SET data = excluded.data"
                ).format(store._table),
                (key, json.dumps({"x": text}), now, now + 600),
            )
    elif kind == "mysql":
        from . import servers

        # The data column only takes valid JSON: the raw bytes go in as the
        # text of one value, which is what the store decodes.
        text = raw.decode("latin-1").replace("\x00", "")
        if store.table not in _MYSQL_TABLES:
            store.load(key)  # makes sure the table exists
            _MYSQL_TABLES.add(store.table)
        global _mysql_admin
        if _mysql_admin is None or not _mysql_admin.open:
            # One connection for every planted record: the fuzz plants thousands.
            _mysql_admin = servers.mysql_connect()
        with _mysql_admin.cursor() as cur:
            cur.execute(
                f"REPLACE INTO `{store.table}` (`key`, data, created_at, expires_at) "
                "VALUES (%s, JSON_OBJECT('x', %s), %s, %s)",
                (key, text, now, now + 600),
            )
    else:
        raise ValueError(kind)


@pytest.mark.parametrize("kind", STORE_KINDS)
def test_a_pickle_planted_in_the_store_is_never_unpickled(
    kind: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    marker = tmp_path / "unpickled"
    payload = pickle.dumps(Evil(marker))
    with open_store(kind, tmp_path) as store:
        sid = new_id()
        plant(kind, store, store_key(sid), payload)
        app = webtest.TestApp(SessionMiddleware(leak_app, SECRET, store))
        with caplog.at_level(logging.WARNING, "wsgisession.security"):
            app.get("/read", headers={"Cookie": f"session={Signer(SECRET).sign(sid)}"})
            assert store.load(store_key(sid)) is None
        assert not marker.exists()
        assert any(getattr(r, "security_event", None) == "corrupt_record" for r in caplog.records)


def test_the_library_never_imports_pickle() -> None:
    for path in (ROOT / "wsgisession").rglob("*.py"):
        text = path.read_text()
        assert not re.search(r"^\s*(import|from)\s+(c?pickle|marshal|shelve|dill)\b", text, re.M), path


FUZZ = settings(deadline=None, suppress_health_check=list(HealthCheck))
# Every store decodes a record with the one StoreBase.decode: the memory store
# fuzzes it, through a whole request each time, at the profile's full count;
# the others, where each example also writes a file or makes round trips to a
# server, check the same path end to end with fewer.
FULL_COUNT_STORES = {"memory"}
STORE_EXAMPLES = 1500


@pytest.mark.parametrize("kind", STORE_KINDS)
def test_corrupt_records_are_absent_never_a_crash(kind: str, tmp_path: Path) -> None:
    with open_store(kind, tmp_path) as store:
        signer = Signer(SECRET)
        app = webtest.TestApp(SessionMiddleware(leak_app, SECRET, store))
        good = json.dumps({"created_at": 1.0, "expires_at": 4e9, "data": {"a": 1}}).encode()
        record = st.one_of(
            st.binary(max_size=200),
            st.builds(lambda n: good[:n], st.integers(0, len(good))),
            st.builds(lambda v: json.dumps(v).encode(), st.recursive(st.none() | st.integers() | st.text(), st.lists)),
            st.sampled_from([b"NaN", b"[]", b'{"data": []}', b"\xff\xfe", b"null", b'"x"', b"1e999"]),
        )

        fuzz = FUZZ
        if kind not in FULL_COUNT_STORES and settings().max_examples > STORE_EXAMPLES:
            fuzz = settings(FUZZ, max_examples=STORE_EXAMPLES)

        @fuzz
        @given(record)
        def check(raw: bytes) -> None:
            sid = new_id()
            key = store_key(sid)
            plant(kind, store, key, raw)
            res = app.get("/read", headers={"Cookie": f"session={signer.sign(sid)}"}, status=200)
            assert res.status_int == 200
            loaded = store.load(key)
            if loaded is not None:
                json.dumps(loaded.data, allow_nan=False)
            store.destroy(key)

        check()


def test_anonymous_requests_create_no_records(every_store: Store) -> None:
    app = webtest.TestApp(SessionMiddleware(leak_app, SECRET, every_store))
    for header in ("", "session=", "session=x.y", f"session={Signer('other' * 8).sign(new_id())}"):
        app.get("/read", headers={"Cookie": header} if header else {})
    count = getattr(every_store, "count", None)
    assert count is not None
    assert count() == 0


# -- files on disk -------------------------------------------------------------------------------


def test_file_and_sqlite_stores_are_private(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        with open_store("sqlite", tmp_path) as sqlite_store, open_store("file", tmp_path) as file_store:
            for store in (sqlite_store, file_store):
                store.save(store_key(new_id()), Update(set={"a": 1}, expires_at=4e9, created_at=1.0))
            for path in tmp_path.rglob("*"):
                mode = path.stat().st_mode & 0o777
                expected = 0o700 if path.is_dir() else 0o600
                if path.name.startswith("sessions"):
                    assert mode & 0o077 == 0, (path, oct(mode))
                    if path.is_dir():
                        assert mode == expected, (path, oct(mode))
    finally:
        os.umask(old)


# -- V3.1.1: the ID travels in the cookie only ------------------------------------------------


def test_session_id_in_the_url_is_ignored(every_store: Store) -> None:
    app = webtest.TestApp(SessionMiddleware(leak_app, SECRET, every_store))
    app.get("/login")
    signed = str(app.cookies["session"])
    app.cookiejar.clear()
    res = app.get(f"/read?session={signed}", extra_environ={"HTTP_X_SESSION": signed})
    assert res.text.startswith("<Session new"), "a session is never picked up from the URL or another header"


# -- redis-py CVE-2023-28858: no reply read on the wrong request -------------------------------


def test_a_timed_out_redis_command_never_answers_the_next_one(tmp_path: Path) -> None:
    from wsgisession.errors import StoreTimeoutError
    from wsgisession.stores.redis import RedisStore

    from . import servers

    with servers.ThrowawayRedis(tmp_path) as server:
        store = RedisStore(server.url, socket_timeout=0.5)
        try:
            now = time.time()
            first, second = store_key(new_id()), store_key(new_id())
            store.save(first, Update(set={"owner": "first"}, expires_at=now + 600, created_at=now))
            store.save(second, Update(set={"owner": "second"}, expires_at=now + 600, created_at=now))
            server.pause()
            with pytest.raises(StoreTimeoutError):
                store.load(first)
            server.resume()
            # The reply to the timed-out command is still on its way: it must be
            # discarded with its connection, never read as this command's answer.
            for _ in range(20):
                record = store.load(second)
                assert record is not None
                assert record.data == {"owner": "second"}
        finally:
            store.close()


# -- SECURITY.md names real tests ------------------------------------------------------------------


def test_every_test_named_in_security_md_exists() -> None:
    """Each `module::test` (or `::test`, continuing the previous module) in SECURITY.md is a real test."""
    text = (ROOT / "SECURITY.md").read_text()
    pattern = re.compile(
        r"`(?:(?P<mod>test_\w+\.py)|(?:wsgisession\.testing\.)?(?P<contract>StoreContract))?::(?P<test>\w+)`"
    )
    checked = 0
    for line in text.splitlines():
        current: str | None = None
        for match in pattern.finditer(line):
            if match["mod"] or match["contract"]:
                current = match["mod"] or "contract"
            assert current is not None, f"no module for ::{match['test']} in: {line}"
            path = (
                ROOT / "wsgisession" / "testing" / "contract.py" if current == "contract" else ROOT / "tests" / current
            )
            assert re.search(rf"def {match['test']}\b", path.read_text()), f"{current}::{match['test']} does not exist"
            checked += 1
    assert checked > 30
