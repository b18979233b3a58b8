"""The Flask adapter, against the real framework: a Flask app and its tests keep working.

The session and flash cases of Flask's own test suite (``tests/test_basic.py``
and ``tests/test_testing.py``) are covered here, written from the behaviour
they check. These do not apply, or apply differently, and why:

- ``test_missing_session`` and ``test_session_transactions_no_null_sessions``
  (no ``SECRET_KEY``: a null session that raises on write): ``init_app``
  without a secret and without ``SECRET_KEY`` refuses to start
  (``ConfigurationError``). The null session remains for an interface
  installed without a middleware, and that is tested.
- ``test_session_using_server_name*``, ``test_session_localhost_warning``,
  ``test_session_ip_warning``: ``SERVER_NAME`` plays no part in the cookie's
  domain (as in Flask 2.3 and later); only ``SESSION_COOKIE_DOMAIN`` does,
  checked when ``init_app`` is called.
- ``test_session_dynamic_cookie_name`` (a ``SessionInterface`` subclass
  overriding ``get_cookie_name`` per request), a changed ``SESSION_COOKIE_NAME``
  meaning a different itsdangerous salt, ``session_interface.serializer`` and
  registering custom tags on Flask's ``TaggedJSONSerializer``: signed-cookie
  internals. The cookie holds only a signed ID; the middleware names and signs
  it, with the options fixed when ``init_app`` is called.
- ``test_session_using_samesite_attribute`` with an invalid value fails at
  ``init_app`` (``ConfigurationError``), not on the first request; with
  ``SESSION_COOKIE_SAMESITE = None`` (Flask's default) the cookie keeps
  ``SameSite=Lax``, and ``SESSION_COOKIE_SECURE = False`` (Flask's default)
  keeps ``secure="auto"``.
- ``test_session_expiration`` expects the Expires of Flask's default
  ``PERMANENT_SESSION_LIFETIME`` (31 days); that default is not taken (one day
  stays), a configured lifetime is. Tested with a configured one.
- ``test_session_cookie_setting`` and ``test_session_refresh_vary``: with
  ``SESSION_REFRESH_EACH_REQUEST`` a live session's expiry is refreshed at
  most once per 1 % of its lifetime (a minute at most), not on every request,
  so the tests move the clock; a browser-session cookie is sent again when the
  server-side expiry is refreshed (harmless: same value, no Max-Age).
- ``test_session_special_types``: a naive ``datetime`` comes back naive and
  microseconds are kept (Flask returns an aware UTC one, to the second).
- ``session.modified = True`` after an in-place change is not needed (nested
  changes are detected) and never forces a write of unchanged data.

A framework that is not installed skips its tests; with
``WSGISESSION_REQUIRE_ALL=1`` (CI) a missing framework fails them instead.
"""

from __future__ import annotations

import re
import uuid
from datetime import datetime, timedelta, timezone
from types import ModuleType
from typing import Any

import pytest
import webtest

from wsgisession import MemoryStore, get_session
from wsgisession.errors import BadSignature, ConfigurationError
from wsgisession.ids import store_key
from wsgisession.session import Session, SessionSettings
from wsgisession.signing import Signer
from wsgisession.testing import Clock

from .conftest import SECRET
from .servers import require_module

OTHER_SECRET = "another-secret-" + "y" * 32


def new_session() -> Session:
    return Session(SessionSettings(MemoryStore()))


@pytest.fixture
def flask() -> ModuleType:
    return require_module("flask")


def make_flask_app(flask: ModuleType, config: dict[str, Any] | None = None, **options: Any) -> tuple[Any, Any]:
    """A Flask app with our sessions (MemoryStore unless given) and Flask's test client."""
    from wsgisession.integrations.flask import init_app

    app = flask.Flask(__name__)
    app.config.update(config or {})
    options.setdefault("store", MemoryStore())
    if "SECRET_KEY" not in app.config or app.config["SECRET_KEY"] is None:
        options.setdefault("secret", SECRET)
    init_app(app, **options)
    return app, app.test_client()


def set_cookie_header(response: Any) -> str | None:
    values = response.headers.getlist("Set-Cookie")
    assert len(values) <= 1
    return values[0] if values else None


def stored_record(store: MemoryStore, cookie_value: str) -> Any:
    session_id = cookie_value.split(".")[0]
    return store.load(store_key(session_id))


# -- the basics ----------------------------------------------------------------------------------


def test_flask_session_is_ours_and_lasts(flask: ModuleType) -> None:
    from wsgisession.integrations.flask import FlaskSession, current_session

    app, _ = make_flask_app(flask)
    client = webtest.TestApp(app)

    @app.get("/incr")
    def incr() -> Any:
        session = flask.session
        assert isinstance(session, FlaskSession)
        assert current_session().wsgi_session is session.wsgi_session
        assert session.wsgi_session is get_session(flask.request.environ)
        session["n"] = session.get("n", 0) + 1
        return {"n": session["n"], "new": session.new}

    assert client.get("/incr").json == {"n": 1, "new": True}
    assert client.get("/incr").json == {"n": 2, "new": False}
    with app.test_client() as flask_client:
        assert flask_client.get("/incr").json == {"n": 1, "new": True}
        assert flask_client.get("/incr").json == {"n": 2, "new": False}


def test_flask_session_accessed_and_modified(flask: ModuleType) -> None:
    """Flask's test_session: modified as a view sees it; accessed as Flask 3.1 sets it (any use of flask.session)."""
    app, client = make_flask_app(flask)

    @app.post("/set")
    def set_value() -> Any:
        assert not flask.session.modified
        assert flask.session.accessed
        flask.session["value"] = flask.request.form["value"]
        assert flask.session.modified
        return "value set"

    @app.get("/get")
    def get_value() -> Any:
        assert not flask.session.modified
        value = flask.session.get("value", "None")
        assert flask.session.accessed
        assert not flask.session.modified
        return value

    @app.get("/accessed-off")
    def accessed_off() -> Any:
        flask.session.get("value")
        flask.session.accessed = False  # as Flask allows: the response then does not vary
        return ""

    response = client.post("/set", data={"value": "42"})
    assert response.data == b"value set"
    assert response.headers["Vary"] == "Cookie"
    assert client.get("/get").data == b"42"
    with app.test_request_context():
        session = flask.globals.request_ctx._get_current_object().session
        assert session.wsgi_session.accessed  # Flask marks it on the way out of the context
    assert client.get("/accessed-off").headers.get("Vary") is None


def test_flask_modified_still_reads_what_the_request_did_after_the_response(flask: ModuleType) -> None:
    app, client = make_flask_app(flask)

    @app.get("/write")
    def write() -> Any:
        flask.session["n"] = 1
        return ""

    @app.get("/read")
    def read() -> Any:
        return str(flask.session.get("n"))

    @app.get("/nothing")
    def nothing() -> Any:
        return ""

    with client:
        client.get("/write")
        assert flask.session.modified
        assert flask.session.accessed
        client.get("/read")
        assert not flask.session.modified
        assert flask.session.accessed
        response = client.get("/nothing")
        assert "Vary" not in response.headers
        assert not flask.session.modified


def test_flask_modified_flag_reads_back_but_forces_no_write(flask: ModuleType) -> None:
    app, client = make_flask_app(flask)

    @app.get("/state")
    def state() -> Any:
        before = flask.session.modified
        flask.session.modified = True  # what Flask code does after a nested change
        after_flag = flask.session.modified
        flask.session.setdefault("cart", []).append("x")
        return {"before": before, "after_flag": after_flag, "keys": sorted(flask.session)}

    @app.get("/touch")
    def touch() -> Any:
        flask.session.get("cart")
        flask.session.modified = True
        return {"modified": flask.session.modified}

    @app.get("/read")
    def read() -> Any:
        return {"cart": flask.session.get("cart"), "modified": flask.session.modified}

    assert client.get("/state").json == {"before": False, "after_flag": True, "keys": ["cart"]}
    response = client.get("/touch")
    assert response.json == {"modified": True}
    assert set_cookie_header(response) is None  # unchanged data: nothing written
    response = client.get("/read")
    assert response.json == {"cart": ["x"], "modified": False}
    assert response.headers["Vary"] == "Cookie"


def test_flask_request_that_ignores_the_session_sets_no_cookie(flask: ModuleType) -> None:
    app, client = make_flask_app(flask)

    @app.get("/plain")
    def plain() -> Any:
        return "plain"

    response = client.get("/plain")
    assert "Set-Cookie" not in response.headers
    assert "Vary" not in response.headers
    assert client.get_cookie("session") is None


def test_flask_session_stored_last(flask: ModuleType) -> None:
    """Flask's test_session_stored_last: an after_request hook's change is saved."""
    app, client = make_flask_app(flask)

    @app.after_request
    def modify_session(response: Any) -> Any:
        flask.session["foo"] = 42
        return response

    @app.get("/")
    def dump() -> Any:
        return repr(flask.session.get("foo"))

    assert client.get("/").data == b"None"
    assert client.get("/").data == b"42"


def test_flask_error_saves_nothing(flask: ModuleType) -> None:
    app, client = make_flask_app(flask)

    @app.get("/boom")
    def boom() -> Any:
        flask.session["n"] = 1
        raise RuntimeError("boom")

    assert client.get("/boom").status_code == 500
    assert client.get_cookie("session") is None


# -- Flask's settings ----------------------------------------------------------------------------


def test_flask_session_path_follows_application_root(flask: ModuleType) -> None:
    """Flask's test_session_path and test_session_using_application_root."""
    app, client = make_flask_app(flask, {"APPLICATION_ROOT": "/foo"})

    @app.get("/")
    def index() -> Any:
        flask.session["testing"] = 42
        return "Hello World"

    response = client.get("/", "http://example.com:8080/foo")
    assert "path=/foo" in set_cookie_header(response).lower()  # type: ignore[union-attr]

    app, client = make_flask_app(flask, {"APPLICATION_ROOT": "/foo", "SESSION_COOKIE_PATH": "/bar"})
    app.add_url_rule("/", view_func=index)
    response = client.get("/", "http://example.com:8080/foo")
    assert "path=/bar" in set_cookie_header(response).lower()  # type: ignore[union-attr]


def test_flask_session_cookie_settings(flask: ModuleType) -> None:
    """Flask's test_session_using_session_settings, and the cookie that expires the session."""
    config = {
        "APPLICATION_ROOT": "/test",
        "SESSION_COOKIE_DOMAIN": "example.com",
        "SESSION_COOKIE_HTTPONLY": False,
        "SESSION_COOKIE_SECURE": True,
        "SESSION_COOKIE_PARTITIONED": True,
        "SESSION_COOKIE_SAMESITE": "Strict",
        "SESSION_COOKIE_PATH": "/",
        "SESSION_COOKIE_NAME": "app_session",
    }
    app, client = make_flask_app(flask, config)

    @app.get("/")
    def index() -> Any:
        flask.session["testing"] = 42
        return "Hello World"

    @app.get("/clear")
    def clear() -> Any:
        flask.session.pop("testing", None)
        return "Goodbye World"

    response = client.get("/", "https://www.example.com/test/")
    cookie = set_cookie_header(response)
    assert cookie is not None
    attributes = {part.strip().split("=")[0].lower(): part.strip() for part in cookie.split(";")}
    assert cookie.startswith("app_session=")
    assert attributes["domain"] == "Domain=example.com"
    assert attributes["path"] == "Path=/"
    assert "secure" in attributes
    assert "httponly" not in attributes
    assert attributes["samesite"] == "SameSite=Strict"
    assert "partitioned" in attributes

    response = client.get("/clear", "https://www.example.com/test/")
    cookie = set_cookie_header(response)
    assert cookie is not None
    assert cookie.startswith("app_session=;")
    for attribute in ("Domain=example.com", "Path=/", "Secure", "SameSite=Strict", "Partitioned", "Max-Age=0"):
        assert attribute in cookie


def test_flask_defaults_weaker_than_ours_are_not_taken(flask: ModuleType) -> None:
    app, client = make_flask_app(flask)  # Flask's defaults: SameSite None, Secure False, 31 days

    @app.get("/")
    def index() -> Any:
        flask.session["testing"] = 42
        return ""

    cookie = set_cookie_header(client.get("/"))
    assert cookie is not None
    assert "SameSite=Lax" in cookie
    assert "HttpOnly" in cookie
    assert "Max-Age=86400" in cookie
    assert "Secure" not in cookie  # "auto": plain http
    https_client = app.test_client()
    assert "Secure" in set_cookie_header(https_client.get("/", "https://localhost/"))  # type: ignore[operator]


def test_flask_explicit_options_win_over_the_config(flask: ModuleType) -> None:
    config = {
        "SESSION_COOKIE_NAME": "from_config",
        "SESSION_COOKIE_SAMESITE": "Strict",
        "PERMANENT_SESSION_LIFETIME": timedelta(hours=2),
        "SESSION_REFRESH_EACH_REQUEST": True,
    }
    app, client = make_flask_app(flask, config, cookie_name="explicit", samesite=None, max_age=600, rolling=False)
    middleware = app.wsgi_app
    assert (middleware.cookie_name, middleware.max_age, middleware.rolling) == ("explicit", 600, False)

    @app.get("/")
    def index() -> Any:
        flask.session["testing"] = 42
        return ""

    cookie = set_cookie_header(client.get("/"))
    assert cookie is not None
    assert cookie.startswith("explicit=")
    assert "SameSite" not in cookie
    assert "Max-Age=600" in cookie


@pytest.mark.parametrize(
    ("lifetime", "max_age"),
    [
        pytest.param(timedelta(hours=2), 7200, id="timedelta"),
        pytest.param(3600, 3600, id="seconds"),
        pytest.param(timedelta(days=31), 86400, id="flask-default-keeps-ours"),
    ],
)
def test_flask_permanent_session_lifetime_is_max_age(flask: ModuleType, lifetime: Any, max_age: int) -> None:
    app, _ = make_flask_app(flask, {"PERMANENT_SESSION_LIFETIME": lifetime})
    assert app.wsgi_app.max_age == max_age


@pytest.mark.parametrize("refresh", [True, False])
def test_flask_refresh_each_request_is_rolling(flask: ModuleType, refresh: bool) -> None:
    app, _ = make_flask_app(flask, {"SESSION_REFRESH_EACH_REQUEST": refresh})
    assert app.wsgi_app.rolling is refresh


def test_flask_invalid_settings_fail_at_init_app(flask: ModuleType) -> None:
    with pytest.raises(ConfigurationError, match="samesite"):
        make_flask_app(flask, {"SESSION_COOKIE_SAMESITE": "invalid"})
    with pytest.raises(ConfigurationError, match="secure=True"):
        make_flask_app(flask, {"SESSION_COOKIE_SAMESITE": "None"})
    with pytest.raises(ConfigurationError, match="secure=True"):
        make_flask_app(flask, {"SESSION_COOKIE_PARTITIONED": True})
    with pytest.raises(ConfigurationError, match="PERMANENT_SESSION_LIFETIME"):
        make_flask_app(flask, {"PERMANENT_SESSION_LIFETIME": "a month"})
    with pytest.raises(ConfigurationError):
        make_flask_app(flask, store=MemoryStore(), samesite="None")


def test_flask_secret_key_signs_and_fallbacks_verify(flask: ModuleType) -> None:
    from wsgisession.integrations.flask import init_app

    store = MemoryStore()

    def app_with(config: dict[str, Any]) -> Any:
        app = flask.Flask(__name__)
        app.config.update(config)
        init_app(app, store=store)

        @app.get("/")
        def index() -> Any:
            flask.session["n"] = flask.session.get("n", 0) + 1
            return str(flask.session["n"])

        return app

    old = app_with({"SECRET_KEY": OTHER_SECRET})
    client = old.test_client()
    assert client.get("/").data == b"1"
    old_cookie = client.get_cookie("session").value
    assert Signer(OTHER_SECRET).unsign(old_cookie)[1] is True

    # The key rotated: the old one is a fallback, so the browser's cookie still
    # works and comes back signed with the new key.
    new = app_with({"SECRET_KEY": SECRET, "SECRET_KEY_FALLBACKS": [OTHER_SECRET]})
    client = new.test_client()
    client.set_cookie("session", old_cookie)
    response = client.get("/")
    assert response.data == b"2"
    new_cookie = client.get_cookie("session").value
    assert new_cookie != old_cookie
    assert Signer(SECRET).unsign(new_cookie)[1] is True

    # Without the fallback the old cookie is no session at all.
    client = app_with({"SECRET_KEY": SECRET}).test_client()
    client.set_cookie("session", old_cookie)
    assert client.get("/").data == b"1"

    # An explicit secret wins over SECRET_KEY.
    app = flask.Flask(__name__)
    app.config["SECRET_KEY"] = OTHER_SECRET
    init_app(app, secret=SECRET, store=store)
    app.add_url_rule("/", view_func=old.view_functions["index"])
    client = app.test_client()
    client.get("/")
    cookie = client.get_cookie("session").value
    assert Signer(SECRET).unsign(cookie)[1] is True
    with pytest.raises(BadSignature):
        Signer(OTHER_SECRET).unsign(cookie)


def test_flask_without_any_secret_refuses_to_start(flask: ModuleType) -> None:
    from wsgisession.integrations.flask import init_app

    with pytest.raises(ConfigurationError, match="SECRET_KEY"):
        init_app(flask.Flask(__name__), store=MemoryStore())
    with pytest.raises(ValueError, match="secret"):
        init_app(flask.Flask(__name__), secret="", store=MemoryStore())


# -- permanent -----------------------------------------------------------------------------------


def test_flask_session_expiration(flask: ModuleType, clock: Clock) -> None:
    """Flask's test_session_expiration: permanent gives Max-Age/Expires, not permanent none; it lasts."""
    store = MemoryStore()
    app, client = make_flask_app(
        flask, {"PERMANENT_SESSION_LIFETIME": timedelta(hours=3), "SESSION_REFRESH_EACH_REQUEST": False}, store=store
    )
    permanent = True

    @app.get("/")
    def index() -> Any:
        flask.session["test"] = 42
        flask.session.permanent = permanent
        return ""

    @app.get("/test")
    def test() -> Any:
        return str(flask.session.permanent)

    @app.get("/bump")
    def bump() -> Any:
        flask.session["n"] = flask.session.get("n", 0) + 1
        return ""

    cookie = set_cookie_header(client.get("/"))
    assert cookie is not None
    expires = re.search(r"(?i)\bexpires=([^;]+)", cookie)
    assert expires is not None
    assert abs(datetime.strptime(expires.group(1), "%a, %d %b %Y %H:%M:%S GMT").timestamp() - (clock() + 3 * 3600)) < 2
    assert "Max-Age=10800" in cookie
    assert client.get("/test").data == b"True"

    permanent = False
    cookie = set_cookie_header(client.get("/"))
    assert cookie is not None
    assert re.search(r"(?i)\b(expires|max-age)=", cookie) is None
    assert client.get("/test").data == b"False"
    # Every later cookie of this session is a browser-session cookie too...
    clock.advance(10)
    cookie = set_cookie_header(client.get("/bump"))
    assert cookie is not None
    assert re.search(r"(?i)\b(expires|max-age)=", cookie) is None
    # ...while the server keeps it for the configured lifetime.
    record = stored_record(store, client.get_cookie("session").value)
    assert record.expires_at == pytest.approx(clock() + 3 * 3600)

    permanent = True
    cookie = set_cookie_header(client.get("/"))
    assert cookie is not None
    assert "Max-Age=10800" in cookie


def test_flask_permanent_defaults_to_the_middleware_max_age(flask: ModuleType) -> None:
    app, client = make_flask_app(flask, max_age=None)

    @app.get("/")
    def index() -> Any:
        return {"permanent": flask.session.permanent}

    @app.get("/keep")
    def keep() -> Any:
        flask.session.permanent = True
        return {"permanent": flask.session.permanent}

    assert client.get("/").json == {"permanent": False}
    assert client.get_cookie("session") is None
    response = client.get("/keep")
    assert response.json == {"permanent": True}
    assert "Max-Age=86400" in set_cookie_header(response)  # type: ignore[operator]

    app, client = make_flask_app(flask)
    app.add_url_rule("/", view_func=index)
    assert client.get("/").json == {"permanent": True}


# -- refreshing the cookie ------------------------------------------------------------------------


def test_flask_session_cookie_setting(flask: ModuleType, clock: Clock) -> None:
    """Flask's test_session_cookie_setting: a read re-sends the cookie only when refreshing a permanent one."""

    def run(permanent: bool, refresh: bool) -> str | None:
        app, client = make_flask_app(flask, {"SESSION_REFRESH_EACH_REQUEST": refresh})

        @app.get("/bump")
        def bump() -> Any:
            value = flask.session["foo"] = flask.session.get("foo", 0) + 1
            flask.session.permanent = permanent
            return str(value)

        @app.get("/read")
        def read() -> Any:
            return str(flask.session.get("foo", 0))

        assert client.get("/bump").data == b"1"
        assert client.get("/bump").data == b"2"
        assert client.get("/bump").data == b"3"
        clock.advance(120)  # past the refresh throttle
        response = client.get("/read")
        assert response.data == b"3"
        return set_cookie_header(response)

    refreshed = run(permanent=True, refresh=True)
    assert refreshed is not None
    assert "Max-Age=86400" in refreshed
    assert run(permanent=True, refresh=False) is None
    assert run(permanent=False, refresh=False) is None
    browser_session = run(permanent=False, refresh=True)  # the same value again, no Max-Age
    assert browser_session is not None
    assert "Max-Age" not in browser_session


def test_flask_session_refresh_vary(flask: ModuleType, clock: Clock) -> None:
    """Flask's test_session_refresh_vary: a refreshed cookie varies on Cookie even when the view ignored it."""
    app, client = make_flask_app(flask)

    @app.get("/login")
    def login() -> Any:
        flask.session["user_id"] = 1
        flask.session.permanent = True
        return ""

    @app.get("/ignored")
    def ignored() -> Any:
        return ""

    assert client.get("/login").headers["Vary"] == "Cookie"
    clock.advance(120)
    response = client.get("/ignored")
    assert response.headers["Vary"] == "Cookie"
    assert set_cookie_header(response) is not None
    # Refreshed moments ago: nothing to send, and nothing depends on the cookie.
    response = client.get("/ignored")
    assert "Vary" not in response.headers
    assert set_cookie_header(response) is None


def test_flask_session_vary_cookie(flask: ModuleType) -> None:
    """Flask's test_session_vary_cookie: every use of the session adds one Vary: Cookie."""
    app, client = make_flask_app(flask)

    @app.get("/set")
    def set_session() -> Any:
        flask.session["test"] = "test"
        return ""

    @app.get("/get")
    def get() -> Any:
        return flask.session.get("test")

    @app.get("/getitem")
    def getitem() -> Any:
        return flask.session["test"]

    @app.get("/setdefault")
    def setdefault() -> Any:
        return flask.session.setdefault("test", "default")

    @app.get("/clear")
    def clear() -> Any:
        flask.session.clear()
        return ""

    @app.get("/vary-cookie-header-set")
    def vary_cookie_header_set() -> Any:
        response = flask.Response()
        response.vary.add("Cookie")
        flask.session["test"] = "test"
        return response

    @app.get("/vary-header-set")
    def vary_header_set() -> Any:
        response = flask.Response()
        response.vary.update(("Accept-Encoding", "Accept-Language"))
        flask.session["test"] = "test"
        return response

    @app.get("/no-vary-header")
    def no_vary_header() -> Any:
        return ""

    def expect(path: str, header_value: str | None = "Cookie") -> None:
        response = client.get(path)
        if header_value:
            assert len(response.headers.getlist("Vary")) == 1
            assert response.headers["Vary"] == header_value
        else:
            assert "Vary" not in response.headers

    expect("/set")
    expect("/get")
    expect("/getitem")
    expect("/setdefault")
    expect("/clear")
    expect("/vary-cookie-header-set")
    expect("/vary-header-set", "Accept-Encoding, Accept-Language, Cookie")
    expect("/no-vary-header", None)


# -- emptied sessions ------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["clear", "pop"])
def test_flask_emptied_session_is_destroyed_and_its_cookie_deleted(flask: ModuleType, how: str) -> None:
    store = MemoryStore()
    app, client = make_flask_app(flask, store=store)

    @app.get("/set")
    def set_value() -> Any:
        flask.session["a"] = 1
        return ""

    @app.get("/empty")
    def empty() -> Any:
        if how == "clear":
            flask.session.clear()
        else:
            flask.session.pop("a")
        return ""

    client.get("/set")
    cookie = client.get_cookie("session").value
    assert stored_record(store, cookie) is not None
    response = client.get("/empty")
    deleted = set_cookie_header(response)
    assert deleted is not None
    assert deleted.startswith("session=;")
    assert "Max-Age=0" in deleted
    assert client.get_cookie("session") is None
    assert stored_record(store, cookie) is None


def test_flask_session_emptied_by_a_failing_request_lives_on(flask: ModuleType) -> None:
    store = MemoryStore()
    app, client = make_flask_app(flask, store=store)

    @app.get("/set")
    def set_value() -> Any:
        flask.session["a"] = 1
        return ""

    @app.get("/boom")
    def boom() -> Any:
        flask.session.pop("a")
        raise RuntimeError("boom")

    @app.get("/fail")
    def fail() -> Any:
        flask.session.clear()
        return "unavailable", 503

    client.get("/set")
    cookie = client.get_cookie("session").value
    assert client.get("/boom").status_code == 500
    assert client.get("/fail").status_code == 503
    assert stored_record(store, cookie).data == {"a": 1}
    assert client.get_cookie("session").value == cookie


def test_flask_session_of_a_user_is_not_empty(flask: ModuleType) -> None:
    """A login is more than the data: clearing a logged-in session's keys does not log the user out."""
    from wsgisession.integrations.flask import current_session

    store = MemoryStore()
    app, client = make_flask_app(flask, store=store)

    @app.post("/login")
    def login() -> Any:
        current_session().login("ada")
        return ""

    @app.get("/clear")
    def clear() -> Any:
        flask.session.clear()
        return ""

    @app.get("/whoami")
    def whoami() -> Any:
        return {"user": current_session().user_id, "keys": list(flask.session)}

    client.post("/login")
    response = client.get("/clear")
    cookie = set_cookie_header(response)
    assert cookie is not None
    assert "Max-Age=86400" in cookie  # saved (its keys changed), not deleted
    assert client.get("/whoami").json == {"user": "ada", "keys": []}


def test_flask_read_of_an_empty_session_destroys_nothing(flask: ModuleType) -> None:
    """Only a request that empties the session ends it: one saved empty (save_uninitialized) lives on."""
    store = MemoryStore()
    app, client = make_flask_app(flask, store=store, save_uninitialized=True)

    @app.get("/")
    def index() -> Any:
        return str(len(flask.session))

    assert client.get("/").data == b"0"
    cookie = client.get_cookie("session").value
    response = client.get("/")
    assert set_cookie_header(response) is None
    assert stored_record(store, cookie) is not None


# -- values ----------------------------------------------------------------------------------------


def test_flask_session_special_types(flask: ModuleType) -> None:
    """Flask's test_session_special_types, and the values come back on the next request too."""
    markupsafe = require_module("markupsafe")
    app, client = make_flask_app(flask)
    now = datetime.now(timezone.utc).replace(microsecond=0)
    naive = datetime(2024, 5, 17, 12, 30, 15, 123456)
    the_uuid = uuid.uuid4()

    @app.get("/")
    def dump() -> Any:
        flask.session["t"] = (1, 2, 3)
        flask.session["b"] = b"\xff"
        flask.session["m"] = markupsafe.Markup("<html>")
        flask.session["u"] = the_uuid
        flask.session["d"] = now
        flask.session["naive"] = naive
        flask.session["t_tag"] = {" tuple": "not-a-tuple"}
        flask.session["di_t_tag"] = {" tuple__": "not-a-tuple"}
        flask.session["di_tag"] = {" dict": "not-a-dict"}
        flask.session["nested"] = {"pairs": [(1, b"a")], "when": [now]}
        return "", 204

    @app.get("/again")
    def again() -> Any:
        return "", 204

    def check(s: Any) -> None:
        assert s["t"] == (1, 2, 3)
        assert type(s["b"]) is bytes
        assert s["b"] == b"\xff"
        assert type(s["m"]) is markupsafe.Markup
        assert s["m"] == markupsafe.Markup("<html>")
        assert s["u"] == the_uuid
        assert s["d"] == now
        assert s["naive"] == naive
        assert s["naive"].tzinfo is None
        assert s["t_tag"] == {" tuple": "not-a-tuple"}
        assert s["di_t_tag"] == {" tuple__": "not-a-tuple"}
        assert s["di_tag"] == {" dict": "not-a-dict"}
        assert s["nested"] == {"pairs": [(1, b"a")], "when": [now]}

    with client:
        client.get("/")
        check(flask.session)
        client.get("/again")
        check(flask.session)  # read back from the store, in a new request


def test_flask_values_are_tagged_json_per_key_in_the_store(flask: ModuleType) -> None:
    app, client = make_flask_app(flask)

    @app.get("/")
    def index() -> Any:
        flask.session["pair"] = (1, 2)
        flask.session["plain"] = [1, 2]
        return {"core": {key: get_session(flask.request.environ)[key] for key in ("pair", "plain")}}

    assert client.get("/").json == {"core": {"pair": {" tuple": [1, 2]}, "plain": [1, 2]}}


def test_flask_value_that_cannot_be_stored_names_its_key(flask: ModuleType) -> None:
    from wsgisession.integrations.flask import FlaskSession

    session = FlaskSession(new_session())
    with pytest.raises(TypeError, match=r"'thing'.*object"):
        session["thing"] = object()
    with pytest.raises(TypeError, match=r"'keys'.*int"):
        session["keys"] = {1: "a"}
    with pytest.raises(TypeError, match="'nan'"):
        session["nan"] = (float("nan"),)
    assert "thing" not in session


def test_flask_in_place_change_of_a_tagged_value_is_saved(flask: ModuleType) -> None:
    app, client = make_flask_app(flask)

    @app.get("/start")
    def start() -> Any:
        flask.session["log"] = [(1, "a")]
        return ""

    @app.get("/append")
    def append() -> Any:
        flask.session["log"].append((2, "b"))  # no session.modified = True needed
        return {"modified": flask.session.modified}

    @app.get("/read")
    def read() -> Any:
        return {"log": [list(pair) for pair in flask.session["log"]], "tuples": type(flask.session["log"][1]).__name__}

    client.get("/start")
    assert client.get("/append").json == {"modified": True}
    assert client.get("/read").json == {"log": [[1, "a"], [2, "b"]], "tuples": "tuple"}


def test_flask_in_place_change_of_plain_data_is_saved(flask: ModuleType) -> None:
    app, client = make_flask_app(flask)

    @app.get("/add")
    def add() -> Any:
        flask.session.setdefault("cart", []).append("x")
        return ""

    @app.get("/read")
    def read() -> Any:
        return {"cart": flask.session.get("cart")}

    client.get("/add")
    client.get("/add")
    assert client.get("/read").json == {"cart": ["x", "x"]}


# -- flashing --------------------------------------------------------------------------------------


def test_flask_flashes(flask: ModuleType) -> None:
    """Flask's test_flashes, in a bare test_request_context()."""
    app, _ = make_flask_app(flask)
    with app.test_request_context():
        assert not flask.session.modified
        flask.flash("Zap")
        flask.session.modified = False
        flask.flash("Zip")
        assert flask.session.modified
        assert list(flask.get_flashed_messages()) == ["Zap", "Zip"]


def test_flask_extended_flashing(flask: ModuleType) -> None:
    """Flask's test_extended_flashing: categories, filters and Markup messages across requests."""
    markupsafe = require_module("markupsafe")
    app, client = make_flask_app(flask)
    markup = markupsafe.Markup("<em>Testing</em>")

    @app.get("/")
    def index() -> Any:
        flask.flash("Hello World")
        flask.flash("Hello World", "error")
        flask.flash(markup, "warning")
        return ""

    @app.get("/test/")
    def test() -> Any:
        messages = flask.get_flashed_messages()
        assert list(messages) == ["Hello World", "Hello World", markup]
        assert type(messages[2]) is markupsafe.Markup
        return ""

    @app.get("/test_with_categories/")
    def test_with_categories() -> Any:
        messages = flask.get_flashed_messages(with_categories=True)
        assert len(messages) == 3
        assert list(messages) == [("message", "Hello World"), ("error", "Hello World"), ("warning", markup)]
        return ""

    @app.get("/test_filter/")
    def test_filter() -> Any:
        messages = flask.get_flashed_messages(category_filter=["message"], with_categories=True)
        assert list(messages) == [("message", "Hello World")]
        return ""

    @app.get("/test_filters/")
    def test_filters() -> Any:
        messages = flask.get_flashed_messages(category_filter=["message", "warning"], with_categories=True)
        assert list(messages) == [("message", "Hello World"), ("warning", markup)]
        return ""

    @app.get("/test_filters_without_returning_categories/")
    def test_filters2() -> Any:
        messages = flask.get_flashed_messages(category_filter=["message", "warning"])
        assert len(messages) == 2
        assert messages[0] == "Hello World"
        assert messages[1] == markup
        return ""

    for path in (
        "/test/",
        "/test_with_categories/",
        "/test_filter/",
        "/test_filters/",
        "/test_filters_without_returning_categories/",
    ):
        client.get("/")
        assert client.get(path).status_code == 200
    assert flask.get_flashed_messages is not None


def test_flask_flash_across_a_redirect(flask: ModuleType) -> None:
    app, client = make_flask_app(flask)

    @app.post("/save")
    def save() -> Any:
        flask.flash("Saved")
        flask.flash("Careful", "warning")
        return flask.redirect("/show", 303)

    @app.get("/show")
    def show() -> Any:
        flashes = flask.get_flashed_messages(with_categories=True)
        again = flask.get_flashed_messages(with_categories=True)
        return {
            "flashes": flashes,
            "same_in_request": again == flashes,
            "tuples": all(type(f) is tuple for f in flashes),
        }

    shown = client.post("/save", follow_redirects=True).json
    assert shown == {"flashes": [["message", "Saved"], ["warning", "Careful"]], "same_in_request": True, "tuples": True}
    assert client.get("/show").json["flashes"] == []


def test_flask_flash_is_shared_with_the_core_api(flask: ModuleType) -> None:
    markupsafe = require_module("markupsafe")
    app, client = make_flask_app(flask)

    @app.get("/flash")
    def flash() -> Any:
        get_session(flask.request.environ).flash("from the core", "info")
        flask.flash("from flask", "error")
        flask.flash(markupsafe.Markup("<b>bold</b>"), "error")
        return {"core": get_session(flask.request.environ)["_flashes"]}

    @app.get("/show")
    def show() -> Any:
        return {"only_errors": [str(m) for m in flask.get_flashed_messages(category_filter=["error"])]}

    assert client.get("/flash").json == {
        "core": [["info", "from the core"], ["error", "from flask"], ["error", {" markup": "<b>bold</b>"}]]
    }
    assert client.get("/show").json == {"only_errors": ["from flask", "<b>bold</b>"]}


# -- request contexts and the test client ------------------------------------------------------------


def test_flask_test_request_context_session_is_writable(flask: ModuleType) -> None:
    from wsgisession.integrations.flask import FlaskSession, current_session

    store = MemoryStore()
    app, client = make_flask_app(flask, store=store)

    @app.get("/")
    def index() -> Any:
        return {"n": flask.session.get("n")}

    with app.test_request_context("/"):
        assert isinstance(flask.session._get_current_object(), FlaskSession)
        assert current_session().wsgi_session is get_session(flask.request.environ)
        flask.session["n"] = 1
        flask.flash("hi")
        assert flask.session["n"] == 1
        assert flask.get_flashed_messages() == ["hi"]

    # Flask's own way to run a request by hand saves it on the response.
    with app.test_request_context("/"):
        flask.session["n"] = 2
        response = app.process_response(app.make_response("done"))
        cookie = set_cookie_header(response)
        assert cookie is not None
        assert cookie.startswith("session=")
        assert response.headers["Vary"] == "Cookie"
    client.set_cookie("session", cookie.split(";")[0].split("=", 1)[1])
    assert client.get("/").json == {"n": 2}
    # Nothing is saved by a bare context: the n = 1 above went nowhere.
    assert store.count() == 1
    # Nor by a failed response.
    with app.test_request_context("/"):
        flask.session["n"] = 3
        response = app.process_response(app.make_response(("down", 503)))
        assert set_cookie_header(response) is None
    assert store.count() == 1


def test_flask_session_transactions(flask: ModuleType) -> None:
    """Flask's test_session_transactions: the test client's session, opened and saved."""
    app, client = make_flask_app(flask)

    @app.get("/")
    def index() -> Any:
        return str(flask.session["foo"])

    with client:
        with client.session_transaction() as sess:
            assert len(sess) == 0
            sess["foo"] = [42]
            assert len(sess) == 1
        response = client.get("/")
        assert response.data == b"[42]"
        with client.session_transaction() as sess:
            assert len(sess) == 1
            assert sess["foo"] == [42]
            sess["foo"] = (1, b"x")
        assert client.get("/").data == b"(1, b'x')"


def test_flask_session_transaction_sees_what_requests_saved(flask: ModuleType) -> None:
    from wsgisession.integrations.flask import FlaskSession

    app, client = make_flask_app(flask)

    @app.post("/login")
    def login() -> Any:
        flask.session.login("ada")  # type: ignore[attr-defined]
        flask.flash("Welcome")
        return ""

    @app.get("/who")
    def who() -> Any:
        return {"user": flask.session.user_id, "role": flask.session.get("role")}  # type: ignore[attr-defined]

    client.post("/login")
    with client.session_transaction() as sess:
        assert isinstance(sess, FlaskSession)
        assert sess.user_id == "ada"
        assert sess["_flashes"] == [("message", "Welcome")]
        sess["role"] = "admin"
    assert client.get("/who").json == {"user": "ada", "role": "admin"}
    # A transaction that changes nothing sets no cookie and keeps the session.
    with client.session_transaction() as sess:
        assert sess["role"] == "admin"
    assert client.get("/who").json == {"user": "ada", "role": "admin"}
    # One that empties it deletes the cookie.
    with client.session_transaction() as sess:
        sess.pop("role")
        sess.pop("_flashes")
        sess.pop("_csrf_token")
        sess.pop("_user_agent")
    assert client.get_cookie("session") is not None  # a user is bound: not empty


def test_flask_session_transaction_that_empties_the_session(flask: ModuleType) -> None:
    store = MemoryStore()
    _, client = make_flask_app(flask, store=store)
    with client.session_transaction() as sess:
        sess["a"] = 1
    cookie = client.get_cookie("session").value
    assert stored_record(store, cookie) is not None
    with client.session_transaction() as sess:
        sess.clear()
    assert client.get_cookie("session") is None
    assert stored_record(store, cookie) is None


def test_flask_session_transactions_keep_context(flask: ModuleType) -> None:
    """Flask's test_session_transactions_keep_context."""
    app, client = make_flask_app(flask)

    @app.get("/")
    def index() -> Any:
        return ""

    with app.test_request_context():
        client.get("/")
        request = flask.request._get_current_object()
        with client.session_transaction():
            assert request is flask.request._get_current_object()


def test_flask_session_transaction_needs_cookies(flask: ModuleType) -> None:
    """Flask's test_session_transaction_needs_cookies."""
    app, _ = make_flask_app(flask)
    client = app.test_client(use_cookies=False)
    with pytest.raises(TypeError, match="Cookies are disabled"), client.session_transaction():
        pass


def test_flask_without_middleware_has_a_read_only_session(flask: ModuleType) -> None:
    from wsgisession.integrations.flask import NoMiddlewareSession, WSGISessionInterface, current_session

    app = flask.Flask(__name__)
    app.session_interface = WSGISessionInterface()
    with app.test_request_context("/"):
        assert isinstance(flask.session._get_current_object(), NoMiddlewareSession)
        assert flask.session.get("x") is None
        with pytest.raises(RuntimeError, match="SessionMiddleware"):
            flask.session["x"] = 1
        with pytest.raises(RuntimeError, match="init_app"):
            current_session()
    with pytest.raises(RuntimeError, match="outside a request"):
        current_session()
    with pytest.raises(RuntimeError, match="did not open a session"), app.test_client().session_transaction():
        pass


# -- wsgisession's own API through flask.session ----------------------------------------------------


def test_flask_login_helpers(flask: ModuleType) -> None:
    from wsgisession.integrations.flask import current_session

    app, _ = make_flask_app(flask)
    client = webtest.TestApp(app)

    @app.get("/form")
    def form() -> Any:
        return {"token": current_session().csrf_token}

    @app.post("/login")
    def login() -> Any:
        session = current_session()
        if not session.check_csrf(flask.request.form.get("csrf_token")):
            flask.abort(403)
        session.login("ada")
        session["name"] = "Ada"
        return {"token": session.csrf_token}

    @app.post("/regenerate")
    def regenerate() -> Any:
        current_session().regenerate()
        return {}

    @app.post("/logout")
    def logout() -> Any:
        session = current_session()
        if not session.check_csrf(flask.request.form.get("csrf_token")):
            flask.abort(403)
        session.destroy()
        return {"user": session.user_id, "name": session.get("name")}

    @app.get("/whoami")
    def whoami() -> Any:
        session = current_session()
        return {"user": session.user_id, "name": session.get("name"), "has_id": session.id is not None}

    anonymous_token = client.get("/form").json["token"]
    anonymous_cookie = client.cookies["session"]
    client.post("/login", {"csrf_token": "forged"}, status=403)
    token = client.post("/login", {"csrf_token": anonymous_token}).json["token"]
    assert token != anonymous_token
    logged_in_cookie = client.cookies["session"]
    assert logged_in_cookie.split(".")[0] != anonymous_cookie.split(".")[0]
    assert client.get("/whoami").json == {"user": "ada", "name": "Ada", "has_id": True}
    client.post("/regenerate")
    assert client.cookies["session"] != logged_in_cookie
    assert client.get("/whoami").json == {"user": "ada", "name": "Ada", "has_id": True}
    client.post("/logout", {"csrf_token": "forged"}, status=403)
    assert client.post("/logout", {"csrf_token": token}).json == {"user": None, "name": None}
    assert client.get("/whoami").json == {"user": None, "name": None, "has_id": False}
    for replayed in (anonymous_cookie, logged_in_cookie):
        client.reset()
        client.set_cookie("session", replayed)
        assert client.get("/whoami").json == {"user": None, "name": None, "has_id": False}
