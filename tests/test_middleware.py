"""SessionMiddleware through WebTest, on the memory and SQLite stores."""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Callable
from typing import Any

import pytest
import webtest

from wsgisession import ConfigurationError, MemoryStore, SessionMiddleware, get_session
from wsgisession.ids import store_key
from wsgisession.signing import Signer
from wsgisession.stores.base import Store
from wsgisession.testing import Clock

from .conftest import SECRET, demo_app
from .test_session import CountingStore

MakeApp = Callable[..., webtest.TestApp]


def cookie_of(res: webtest.TestResponse, name: str = "session") -> str | None:
    """The Set-Cookie header for *name*, or None."""
    headers = [v for k, v in res.headerlist if k == "Set-Cookie" and v.startswith(name + "=")]
    assert len(headers) <= 1
    return headers[0] if headers else None


def attrs(set_cookie: str) -> dict[str, str]:
    out = {}
    for part in set_cookie.split(";")[1:]:
        k, _, v = part.strip().partition("=")
        out[k.lower()] = v
    return out


def session_id(app: webtest.TestApp) -> str:
    value = app.cookies["session"]
    return str(value).split(".")[0]


# -- cookie basics ----------------------------------------------------------------


def test_default_cookie_is_signed_httponly_lax_root_one_day(make_app: MakeApp) -> None:
    app = make_app()
    res = app.get("/incr")
    header = cookie_of(res)
    assert header is not None
    a = attrs(header)
    assert a["max-age"] == "86400"
    assert a["path"] == "/"
    assert a["samesite"] == "Lax"
    assert "httponly" in a
    assert "secure" not in a
    assert "expires" in a
    assert "domain" not in a
    value = header.split(";")[0].split("=", 1)[1]
    sid, current = Signer(SECRET).unsign(value)
    assert current
    assert len(sid) == 43


def test_counter_survives_requests(make_app: MakeApp) -> None:
    app = make_app()
    assert [app.get("/incr").json for _ in range(3)] == [1, 2, 3]
    assert app.get("/read").json == 3


def test_untouched_request_sets_no_cookie_and_no_vary(make_app: MakeApp) -> None:
    app = make_app()
    res = app.get("/nothing")
    assert cookie_of(res) is None
    assert "Vary" not in res.headers


def test_anonymous_read_creates_nothing(make_app: MakeApp, store: Store) -> None:
    counting = CountingStore(store)
    app = make_app(store=counting)
    res = app.get("/read")
    assert res.json is None
    assert cookie_of(res) is None
    assert res.headers["Vary"] == "Cookie"
    assert counting.calls == [], "no cookie: nothing to load and nothing to save"


def test_read_only_request_writes_nothing_and_sets_no_cookie(make_app: MakeApp, store: Store) -> None:
    counting = CountingStore(store)
    app = make_app(store=counting)
    app.get("/incr")
    counting.calls.clear()
    res = app.get("/read")
    assert res.json == 1
    assert cookie_of(res) is None
    assert res.headers["Vary"] == "Cookie"
    assert counting.calls == ["load"]


def test_untouched_request_with_cookie_does_not_read_the_store(make_app: MakeApp, store: Store) -> None:
    counting = CountingStore(store)
    app = make_app(store=counting)
    app.get("/incr")
    counting.calls.clear()
    app.get("/nothing")
    assert counting.calls == []


# -- tampering ----------------------------------------------------------------------


def _flip(s: str, i: int) -> str:
    return s[:i] + ("A" if s[i] != "A" else "B") + s[i + 1 :]


@pytest.mark.parametrize(
    "mangle",
    [
        pytest.param(lambda v: _flip(v, 5), id="flipped-id-char"),
        pytest.param(lambda v: _flip(v, len(v) - 3), id="flipped-signature-char"),
        pytest.param(lambda v: v.split(".")[0], id="missing-signature"),
        pytest.param(lambda v: v + ".extra", id="extra-dots"),
        pytest.param(lambda v: v.replace(".", ".."), id="double-dot"),
        pytest.param(lambda v: "", id="empty"),
        pytest.param(lambda v: '"' + v, id="stray-quote"),
        pytest.param(lambda v: "x" * 200, id="garbage"),
    ],
)
def test_tampered_cookie_is_no_session_without_store_lookup(
    make_app: MakeApp, store: Store, mangle: Callable[[str], str]
) -> None:
    counting = CountingStore(store)
    app = make_app(store=counting)
    app.get("/incr")
    app.get("/incr")
    good = app.cookies["session"]
    counting.calls.clear()
    res = app.get("/read", headers={"Cookie": f"session={mangle(good)}"}, status=200)
    assert res.json is None
    assert "load" not in counting.calls


def test_forged_unknown_id_with_valid_signature_is_never_adopted(make_app: MakeApp, store: Store) -> None:
    forged = "F" * 43
    app = make_app()
    res = app.get("/incr", headers={"Cookie": f"session={Signer(SECRET).sign(forged)}"})
    assert res.json == 1
    header = cookie_of(res)
    assert header is not None
    assert forged not in header
    assert store.load(store_key(forged)) is None


# -- rotation -------------------------------------------------------------------------


def test_cookie_signed_by_old_secret_is_accepted_and_resigned(make_app: MakeApp) -> None:
    old_secret = "old-secret-" + "y" * 32
    old_app = make_app(secret=old_secret)
    old_app.get("/incr")
    sid = session_id(old_app)
    cookie = f"session={old_app.cookies['session']}"

    rotated = make_app(secret=[SECRET, old_secret])
    res = rotated.get("/read", headers={"Cookie": cookie})
    assert res.json == 1
    header = cookie_of(res)
    assert header is not None, "a read-only request still re-signs an old-key cookie"
    value = header.split(";")[0].split("=", 1)[1]
    assert Signer(SECRET).unsign(value) == (sid, True)

    retired = make_app(secret=SECRET)
    assert retired.get("/read", headers={"Cookie": cookie}).json is None


# -- lifecycle -------------------------------------------------------------------------


def test_login_regenerates_and_old_id_is_dead(make_app: MakeApp, store: Store) -> None:
    app = make_app()
    app.get("/incr")
    before = session_id(app)
    old_cookie = f"session={app.cookies['session']}"
    res = app.get("/login?user=alice")
    after = session_id(app)
    assert after != before
    assert res.json == after
    assert app.get("/dump").json == {"n": 1, "user": "alice"}
    assert store.load(store_key(before)) is None
    assert app.get("/read", headers={"Cookie": old_cookie}).json is None


def test_logout_expires_cookie_and_record(make_app: MakeApp, store: Store) -> None:
    app = make_app()
    app.get("/login")
    sid = session_id(app)
    old_cookie = f"session={app.cookies['session']}"
    res = app.get("/logout")
    header = cookie_of(res)
    assert header is not None
    assert header.startswith("session=;")
    assert attrs(header)["max-age"] == "0"
    assert store.load(store_key(sid)) is None
    assert "session" not in app.cookies
    assert app.get("/dump", headers={"Cookie": old_cookie}).json == {}


def test_flash_after_logout_gets_a_new_session(make_app: MakeApp) -> None:
    app = make_app()
    app.get("/login")
    sid = session_id(app)
    app.get("/logout-flash")
    assert session_id(app) != sid
    assert app.get("/dump").json == {"flash": "Logged out"}


def test_delete_key_is_saved(make_app: MakeApp) -> None:
    app = make_app()
    app.get("/set?key=a&value=1")
    app.get("/set?key=b&value=2")
    app.get("/delete?key=a")
    assert app.get("/dump").json == {"b": 2}


def test_nested_mutation_is_saved(make_app: MakeApp) -> None:
    app = make_app()
    app.get("/append?item=apple")
    app.get("/append?item=pear")
    assert app.get("/dump").json == {"cart": ["apple", "pear"]}
    app.get('/set?key=prefs&value={"theme":"light"}')
    app.get("/nested?theme=dark")
    assert app.get("/dump").json["prefs"] == {"theme": "dark"}


def test_non_json_value_fails_the_request_and_keeps_stored_data(make_app: MakeApp, store: Store) -> None:
    app = make_app()
    app.get("/incr")
    sid = session_id(app)
    with pytest.raises(TypeError, match=r"session\['obj'\]"):
        app.get("/bad")
    with pytest.raises(TypeError, match=r"session\['list'\]"):
        app.get("/bad-nested")
    record = store.load(store_key(sid))
    assert record is not None
    assert record.data == {"n": 1}


def test_no_save_on_5xx(make_app: MakeApp) -> None:
    app = make_app()
    app.get("/incr")
    res = app.get("/fail", status=500)
    assert cookie_of(res) is None
    assert app.get("/read").json == 1


def test_no_save_when_the_app_raises(make_app: MakeApp) -> None:
    app = make_app()
    app.get("/incr")
    with pytest.raises(RuntimeError, match="boom"):
        app.get("/raise")
    assert app.get("/read").json == 1


def test_no_save_when_start_response_gets_exc_info(make_app: MakeApp) -> None:
    def app_with_error_page(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        get_session(environ)["n"] = 42
        try:
            raise ValueError("handled")
        except ValueError:
            import sys

            start_response("400 Bad Request", [("Content-Type", "text/plain")], sys.exc_info())
        return [b"error page"]

    app = make_app(app_with_error_page)
    res = app.get("/", status=400)
    assert cookie_of(res) is None


# -- expiry ------------------------------------------------------------------------------


def test_expiry_is_enforced_on_the_server(make_app: MakeApp, clock: Clock) -> None:
    app = make_app(max_age=60)
    app.get("/incr")
    sid = session_id(app)
    cookie = f"session={app.cookies['session']}"
    clock.advance(61)
    res = app.get("/incr", headers={"Cookie": cookie})
    assert res.json == 1, "the replayed cookie is no session"
    header = cookie_of(res)
    assert header is not None
    assert sid not in header


def test_saving_refreshes_expiry(make_app: MakeApp, clock: Clock) -> None:
    app = make_app(max_age=60)
    for _ in range(4):
        app.get("/incr")
        clock.advance(40)
    assert app.get("/read").json == 4


def test_read_only_activity_does_not_extend_without_rolling(make_app: MakeApp, clock: Clock) -> None:
    app = make_app(max_age=60)
    app.get("/incr")
    clock.advance(40)
    assert app.get("/read").json == 1
    clock.advance(40)
    assert app.get("/read").json is None


def test_rolling_extends_on_every_response(make_app: MakeApp, clock: Clock) -> None:
    app = make_app(max_age=60, rolling=True)
    app.get("/incr")
    for _ in range(3):
        clock.advance(40)
        res = app.get("/nothing")
        header = cookie_of(res)
        assert header is not None
        assert attrs(header)["max-age"] == "60"
    assert app.get("/read").json == 1


def test_rolling_with_dead_session_clears_cookie(make_app: MakeApp, clock: Clock) -> None:
    app = make_app(max_age=60, rolling=True)
    app.get("/incr")
    clock.advance(61)
    header = cookie_of(app.get("/nothing"))
    assert header is not None
    assert attrs(header)["max-age"] == "0"


def test_absolute_timeout_ends_an_active_session(make_app: MakeApp, clock: Clock) -> None:
    app = make_app(max_age=60, absolute_timeout=100, rolling=True)
    app.get("/incr")
    clock.advance(50)
    res = app.get("/incr")
    assert res.json == 2
    header = cookie_of(res)
    assert header is not None
    assert int(attrs(header)["max-age"]) <= 50, "cookie lifetime capped by the absolute timeout"
    clock.advance(45)
    res = app.get("/incr")
    assert res.json == 3
    assert cookie_of(res) is None, "the expiry is still the absolute deadline: nothing to re-send"
    clock.advance(10)
    assert app.get("/read").json is None


def test_max_age_none_is_a_browser_session_cookie(make_app: MakeApp, clock: Clock, store: Store) -> None:
    app = make_app(max_age=None)
    header = cookie_of(app.get("/incr"))
    assert header is not None
    assert "max-age" not in attrs(header)
    assert "expires" not in attrs(header)
    record = store.load(store_key(session_id(app)))
    assert record is not None
    assert record.expires_at - clock() == pytest.approx(86400, abs=5)
    clock.advance(86401)
    assert app.get("/read").json is None


def test_touch_refreshes_cookie(make_app: MakeApp, clock: Clock) -> None:
    app = make_app(max_age=60)
    app.get("/incr")
    clock.advance(50)
    header = cookie_of(app.get("/touch"))
    assert header is not None
    assert attrs(header)["max-age"] == "60"
    clock.advance(50)
    assert app.get("/read").json == 1


def test_save_uninitialized_creates_a_session(make_app: MakeApp, store: Store) -> None:
    app = make_app(save_uninitialized=True)
    res = app.get("/nothing")
    assert cookie_of(res) is not None
    assert store.load(store_key(session_id(app))) is not None
    assert cookie_of(app.get("/nothing")) is None, "an existing session is not rewritten"


def test_stale_cookie_is_cleared_when_session_used(make_app: MakeApp, clock: Clock) -> None:
    app = make_app(max_age=60)
    app.get("/incr")
    clock.advance(61)
    header = cookie_of(app.get("/read"))
    assert header is not None
    assert attrs(header)["max-age"] == "0"


# -- secure, headers ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "extra_environ", "headers", "secure"),
    [
        pytest.param({}, {}, {}, False, id="http"),
        pytest.param({}, {"wsgi.url_scheme": "https"}, {}, True, id="https"),
        pytest.param({}, {}, {"X-Forwarded-Proto": "https"}, False, id="proxy-header-untrusted"),
        pytest.param({"trust_proxy": True}, {}, {"X-Forwarded-Proto": "https"}, True, id="proxy-header-trusted"),
        pytest.param({"trust_proxy": True}, {}, {"X-Forwarded-Proto": "http, https"}, False, id="proxy-first-hop"),
        pytest.param({"secure": True}, {}, {}, True, id="forced-on"),
        pytest.param({"secure": False}, {"wsgi.url_scheme": "https"}, {}, False, id="forced-off"),
    ],
)
def test_secure_flag(
    make_app: MakeApp, options: dict[str, Any], extra_environ: dict[str, str], headers: dict[str, str], secure: bool
) -> None:
    app = make_app(**options)
    res = app.get("/incr", extra_environ=extra_environ, headers=headers)
    header = cookie_of(res)
    assert header is not None
    assert ("secure" in attrs(header)) is secure


def test_custom_cookie_attributes(make_app: MakeApp) -> None:
    app = make_app(
        cookie_name="__Host-sid", secure=True, samesite="Strict", partitioned=True, httponly=True, max_age=3600
    )
    header = cookie_of(app.get("/incr", extra_environ={"wsgi.url_scheme": "https"}), "__Host-sid")
    assert header is not None
    a = attrs(header)
    assert a["samesite"] == "Strict"
    assert "partitioned" in a
    assert "secure" in a
    assert a["max-age"] == "3600"


def test_domain_and_path(make_app: MakeApp) -> None:
    app = make_app(domain="example.com", path="/app", samesite=None, httponly=False)
    header = cookie_of(app.get("/incr"))
    assert header is not None
    a = attrs(header)
    assert a["domain"] == "example.com"
    assert a["path"] == "/app"
    assert "samesite" not in a
    assert "httponly" not in a


def test_vary_is_merged_and_cache_made_private() -> None:
    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        get_session(environ)["x"] = 1
        start_response("200 OK", [("Vary", "Accept-Encoding"), ("Cache-Control", "public, max-age=60, s-maxage=600")])
        return [b""]

    res = webtest.TestApp(SessionMiddleware(app, SECRET, MemoryStore())).get("/")
    assert res.headers["Vary"] == "Accept-Encoding, Cookie"
    assert res.headers["Cache-Control"] == "private, max-age=60"


def test_no_store_cache_control_is_kept() -> None:
    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        get_session(environ)["x"] = 1
        start_response("200 OK", [("Vary", "cookie"), ("Cache-Control", "no-store")])
        return [b""]

    res = webtest.TestApp(SessionMiddleware(app, SECRET, MemoryStore())).get("/")
    assert res.headers.getall("Vary") == ["cookie"]
    assert res.headers["Cache-Control"] == "no-store"


# -- hostile cookie headers ------------------------------------------------------------------


def test_oversized_cookie_header_is_ignored(make_app: MakeApp, caplog: pytest.LogCaptureFixture) -> None:
    app = make_app()
    app.get("/incr")
    good = app.cookies["session"]
    huge = f"session={good}; junk=" + "a" * 40_000
    with caplog.at_level(logging.WARNING, "wsgisession.security"):
        assert app.get("/read", headers={"Cookie": huge}).json is None
    assert "ignored" in caplog.text


def test_long_run_without_equals_is_handled(make_app: MakeApp) -> None:
    app = make_app()
    app.get("/incr")
    good = app.cookies["session"]
    header = "a" * 30_000 + f"; session={good}"
    assert app.get("/read", headers={"Cookie": header}).json == 1


@pytest.mark.parametrize("order", ["valid-first", "garbage-first"])
def test_duplicate_cookie_keeps_the_valid_one(make_app: MakeApp, order: str) -> None:
    app = make_app()
    app.get("/incr")
    good = app.cookies["session"]
    pair = [f"session={good}", "session=garbage.garbage"]
    if order == "garbage-first":
        pair.reverse()
    app.cookiejar.clear()
    assert app.get("/read", headers={"Cookie": "; ".join(pair)}).json == 1


def test_session_cookie_found_among_others(make_app: MakeApp) -> None:
    app = make_app()
    app.get("/incr")
    good = app.cookies["session"]
    app.cookiejar.clear()
    header = f'theme=dark; xsession=1; session_x=2; session="{good}"; other=a=b'
    assert app.get("/read", headers={"Cookie": header}).json == 1


# -- construction --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        pytest.param({"cookie_name": "__Host-s"}, "secure=True", id="host-prefix-auto-secure"),
        pytest.param({"cookie_name": "__host-s", "secure": False}, "secure=True", id="host-prefix-lowercase"),
        pytest.param({"cookie_name": "__Host-s", "secure": True, "domain": "a.com"}, "no domain", id="host-domain"),
        pytest.param({"cookie_name": "__Host-s", "secure": True, "path": "/x"}, "path='/'", id="host-path"),
        pytest.param({"cookie_name": "__Secure-s"}, "secure=True", id="secure-prefix"),
        pytest.param({"samesite": "None"}, "secure=True", id="samesite-none-insecure"),
        pytest.param({"samesite": "Loose"}, "samesite", id="samesite-unknown"),
        pytest.param({"partitioned": True}, "secure=True", id="partitioned-insecure"),
        pytest.param({"cookie_name": "a;b"}, "token", id="name-semicolon"),
        pytest.param({"cookie_name": "a\r\nSet-Cookie: x"}, "token", id="name-crlf"),
        pytest.param({"cookie_name": ""}, "token", id="name-empty"),
        pytest.param({"path": "/a;Domain=evil.com"}, "path", id="path-semicolon"),
        pytest.param({"path": "/a\nb"}, "path", id="path-lf"),
        pytest.param({"path": "relative"}, "path", id="path-relative"),
        pytest.param({"domain": "a.com;HttpOnly"}, "domain", id="domain-semicolon"),
        pytest.param({"domain": "a.com\r"}, "domain", id="domain-cr"),
        pytest.param({"max_age": 0}, "max_age", id="max-age-zero"),
        pytest.param({"max_age": -5}, "max_age", id="max-age-negative"),
        pytest.param({"absolute_timeout": 0}, "absolute_timeout", id="absolute-zero"),
        pytest.param({"secure": "yes"}, "secure", id="secure-bad"),
        pytest.param({"store": "mongodb://x"}, "unknown store", id="bad-store-url"),
    ],
)
def test_bad_configuration_fails_at_construction(options: dict[str, Any], message: str) -> None:
    options.setdefault("store", MemoryStore())
    with pytest.raises(ConfigurationError, match=message):
        SessionMiddleware(demo_app, SECRET, **options)


def test_secret_is_required() -> None:
    with pytest.raises(ValueError, match="secret"):
        SessionMiddleware(demo_app, store=MemoryStore())
    with pytest.raises(ValueError, match="secret"):
        SessionMiddleware(demo_app, "", store=MemoryStore())


def test_short_secret_warns() -> None:
    with pytest.warns(UserWarning, match="at least 32 random bytes"):
        SessionMiddleware(demo_app, "tooshort", store=MemoryStore())


def test_default_store_is_sqlite_in_working_directory(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    mw = SessionMiddleware(demo_app, SECRET)
    app = webtest.TestApp(mw)
    assert app.get("/incr").json == 1
    assert (tmp_path / "sessions.sqlite3").exists()
    mw.store.close()


def test_store_url_is_accepted(tmp_path: Any) -> None:
    mw = SessionMiddleware(demo_app, SECRET, store=f"sqlite:///{tmp_path}/s.db")
    assert webtest.TestApp(mw).get("/incr").json == 1
    assert (tmp_path / "s.db").exists()
    mw.store.close()


def test_reprs_leak_neither_secret_nor_id(make_app: MakeApp) -> None:
    seen: list[str] = []

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        s = get_session(environ)
        s["x"] = 1
        s.save()
        seen.append(repr(s))
        seen.append(str(s.id))
        start_response("200 OK", [])
        return [b""]

    mw = SessionMiddleware(app, SECRET, MemoryStore())
    webtest.TestApp(mw).get("/")
    text, sid = seen
    assert sid not in text
    assert SECRET not in repr(mw)
    assert sid not in repr(mw.store)


def test_get_session_without_middleware() -> None:
    with pytest.raises(RuntimeError, match="SessionMiddleware"):
        get_session({})


def test_memory_store_warns_under_multiprocess_server() -> None:
    app = webtest.TestApp(SessionMiddleware(demo_app, SECRET, MemoryStore()))
    with pytest.warns(RuntimeWarning, match="several"):
        app.get("/incr", extra_environ={"wsgi.multiprocess": True})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        app.get("/incr", extra_environ={"wsgi.multiprocess": True})


def test_store_files_never_hold_a_raw_session_id(tmp_path: Any) -> None:
    from wsgisession import SQLiteStore

    store = SQLiteStore(tmp_path / "s.db")
    app = webtest.TestApp(SessionMiddleware(demo_app, SECRET, store))
    ids = []
    for _ in range(5):
        app.cookiejar.clear()
        app.get("/login")
        ids.append(session_id(app))
        app.get("/incr")
    store.close()
    blob = b"".join(p.read_bytes() for p in tmp_path.iterdir())
    assert blob
    for sid in ids:
        assert sid.encode() not in blob
        assert store_key(sid).encode() in blob, "records are filed under the hash"


def test_close_of_the_response_iterable_is_honoured(make_app: MakeApp) -> None:
    closed = []

    class Body:
        def __iter__(self) -> Any:
            yield b"hello"

        def close(self) -> None:
            closed.append(True)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Body:
        get_session(environ)["x"] = 1
        start_response("200 OK", [("Content-Type", "text/plain")])
        return Body()

    assert make_app(app).get("/").body == b"hello"
    assert closed == [True]


def test_json_dump_of_session(make_app: MakeApp) -> None:
    app = make_app()
    app.get('/set?key=data&value={"a":[1,2,{"b":null}]}')
    assert json.dumps(app.get("/dump").json) == '{"data": {"a": [1, 2, {"b": null}]}}'


def test_verified_cookie_cache_is_bounded_and_never_admits_forgeries(monkeypatch: pytest.MonkeyPatch) -> None:
    from wsgisession import middleware as mw_module

    monkeypatch.setattr(mw_module, "_VERIFIED_CACHE", 8)
    mw = SessionMiddleware(demo_app, SECRET, MemoryStore())
    app = webtest.TestApp(mw)
    for _ in range(20):
        app.cookiejar.clear()
        app.get("/incr")
        app.get("/read")
        assert len(mw._verified) <= 8
    good = app.cookies["session"]
    assert good in mw._verified
    forged = good[:-2] + ("AA" if not good.endswith("AA") else "BB")
    assert app.get("/read", headers={"Cookie": f"session={forged}"}).json is None
    assert forged not in mw._verified


def test_rolling_writes_at_most_once_per_slack(make_app: MakeApp, store: Store, clock: Clock) -> None:
    counting = CountingStore(store)
    app = make_app(store=counting, max_age=3600, rolling=True)
    app.get("/incr")
    counting.calls.clear()
    for _ in range(5):
        clock.advance(1)  # 1 % of an hour is 36 s: well within the slack
        res = app.get("/nothing")
        assert cookie_of(res) is None, "nothing to refresh: no cookie"
    assert "touch" not in counting.calls
    clock.advance(40)
    res = app.get("/nothing")
    header = cookie_of(res)
    assert header is not None
    assert attrs(header)["max-age"] == "3600"
    assert counting.calls.count("touch") == 1


# -- a session's own cookie lifetime ----------------------------------------------------


def _lifetime_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    session = get_session(environ)
    choice = environ.get("QUERY_STRING", "")
    if choice in ("true", "false", "none"):
        session.permanent = {"true": True, "false": False, "none": None}[choice]
    session["n"] = session.get("n", 0) + 1
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]


@pytest.mark.parametrize(
    ("max_age", "choice", "persistent"),
    [
        pytest.param(3600, "false", False, id="max_age-browser-session"),
        pytest.param(3600, "true", True, id="max_age-permanent"),
        pytest.param(3600, "none", True, id="max_age-default"),
        pytest.param(None, "true", True, id="none-permanent"),
        pytest.param(None, "none", False, id="none-default"),
    ],
)
def test_session_permanent_chooses_the_cookie_lifetime(
    make_app: MakeApp, store: Store, clock: Clock, max_age: int | None, choice: str, persistent: bool
) -> None:
    app = make_app(_lifetime_app, max_age=max_age)
    header = cookie_of(app.get("/?" + choice))
    assert header is not None
    ttl = 3600 if max_age else 86400
    assert ("max-age" in attrs(header)) is persistent
    assert ("expires" in attrs(header)) is persistent
    if persistent:
        assert attrs(header)["max-age"] == str(ttl)
    # The choice holds on later responses that set the cookie, and the
    # server-side lifetime stays what the middleware says.
    clock.advance(5)
    header = cookie_of(app.get("/"))
    assert header is not None
    assert ("max-age" in attrs(header)) is persistent
    record = store.load(store_key(session_id(app)))
    assert record is not None
    assert record.expires_at == pytest.approx(clock() + ttl)


def test_switching_permanent_off_sends_a_browser_session_cookie(make_app: MakeApp, clock: Clock) -> None:
    app = make_app(_lifetime_app, max_age=3600)
    assert "max-age" in attrs(cookie_of(app.get("/")) or "")
    header = cookie_of(app.get("/?false"))  # same second: the expiry alone would not resend it
    assert header is not None
    assert "max-age" not in attrs(header)


def test_open_and_commit_session_outside_a_request(store: Store) -> None:
    middleware = SessionMiddleware(demo_app, secret=SECRET, store=store)
    session = middleware.open_session({})
    session["a"] = 1
    headers = middleware.commit_session(session, {}, [("Content-Type", "text/plain")])
    names = [name for name, _ in headers]
    assert names[0] == "Content-Type"
    assert "Vary" in names
    assert dict(headers)["Cache-Control"] == "private"
    cookie = dict(headers)["Set-Cookie"]
    value = cookie.split(";")[0].split("=", 1)[1]
    # The cookie it set opens the same session, as a request would.
    environ = {"HTTP_COOKIE": f"session={value}"}
    again = middleware.open_session(environ)
    assert again["a"] == 1
    again.clear()
    again.destroy()
    headers = middleware.commit_session(again, environ)
    assert dict(headers)["Set-Cookie"].startswith("session=; Max-Age=0")
    # A forged cookie opens a new, empty session, without a store lookup.
    assert middleware.open_session({"HTTP_COOKIE": "session=" + value[:-2] + "AA"}).state.value == "new"
