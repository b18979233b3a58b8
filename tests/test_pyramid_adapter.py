"""The Pyramid adapter, against the real framework.

Every behaviour that Pyramid's own session tests check of a session object is
checked here against :class:`~wsgisession.integrations.pyramid.PyramidSession`,
through a real Pyramid application (``Configurator``) driven by WebTest, and
through ``pyramid.testing`` where a view is tested on its own.

Pyramid's session tests that do not apply, and why:

* Cookie payload decoding (a cookie that does not deserialize, one that is not
  a ``(renewed, created, state)`` tuple, a renewal time that is not a number):
  the cookie carries only a signed session ID, no data. What does apply, a
  cookie that is tampered with, signed by another secret, or names a session
  the store no longer has, is tested here.
* ``timeout=None`` (a session that never expires): every session has a
  lifetime in the store (``max_age=None`` gives a browser-session cookie with
  a server lifetime of 86400 seconds).
* ``timeout``, ``reissue_time`` and ``max_age`` given as strings, or invalid:
  option parsing of ``SignedCookieSessionFactory``. The middleware's options
  are checked at construction, in ``tests/test_config_and_cookies.py``.
* ``set_on_exception`` and ``request.exception``: there is no such option; the
  rule is the response status (tested here: below 500 saves, 5xx and an
  exception that escapes Pyramid save nothing).
* The 4064-byte cookie limit: the data lives in the store (tested here: a
  100 kB value is saved and read back).
* ``salt``, ``hashalg``, ``serializer``, the pickle serializer, a bad pickle
  and a payload shorter than a digest: signing and serialization internals of
  the cookie session. Here the cookie is an ID signed with HMAC-SHA256 under a
  key derived from the secret, and the store keeps JSON only, never pickle.
* Flash tests that read or write ``session["_f_" + queue]``: the storage
  layout of Pyramid's cookie session. Queues here are categories of the flash
  list shared with ``Session.flash``; the behaviour is tested through
  ``flash``, ``peek_flash`` and ``pop_flash``.
* ``manage_accessed`` and ``manage_changed``: the ``accessed``/``renewed``
  timestamps and the ``_dirty`` flag that drive the cookie session's reissue.
  Their visible effects are tested here: a response that used the session
  varies on Cookie, a change sets the cookie, ``rolling`` refreshes the expiry.
"""

from __future__ import annotations

import datetime
import math
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import webtest

from wsgisession import MemoryStore, SessionMiddleware, get_session
from wsgisession.session import FLASH_KEY, Session, SessionSettings
from wsgisession.stores.base import Store
from wsgisession.testing import Clock

from .conftest import SECRET, STORE_KINDS, open_store
from .servers import require_module


def new_session(store: Store | None = None) -> Session:
    return Session(SessionSettings(store or MemoryStore()))


@pytest.fixture
def pyramid() -> ModuleType:
    require_module("pyramid")
    return require_module("pyramid.testing")


@pytest.fixture
def markupsafe() -> ModuleType:
    return require_module("markupsafe")


@pytest.fixture(params=STORE_KINDS)
def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """Each store in turn: what Pyramid stores must come back the same from every one."""
    with open_store(request.param, tmp_path) as store:
        yield store


View = Callable[[Any], Any]


def make_pyramid_app(
    views: dict[str, View],
    *,
    configure: Callable[[Any], None] | None = None,
    **options: Any,
) -> webtest.TestApp:
    """A Pyramid app with *views* (path -> view, JSON renderer) inside the middleware (*options*)."""
    from pyramid.config import Configurator

    with Configurator() as config:
        config.include("wsgisession.integrations.pyramid")
        if configure is not None:
            configure(config)
        for path, view in views.items():
            config.add_route(path, path)
            config.add_view(view, route_name=path, renderer="json")
        app = config.make_wsgi_app()
    options.setdefault("store", MemoryStore())
    options.setdefault("secret", SECRET)
    return webtest.TestApp(SessionMiddleware(app, **options))


def set_cookies(response: webtest.TestResponse) -> list[str]:
    return [value for name, value in response.headerlist if name.lower() == "set-cookie"]


def stored(path: str = "/dump") -> dict[str, View]:
    """A view at *path* that shows the session's data and state."""

    def dump(request: Any) -> Any:
        s = request.session
        return {"data": dict(s), "new": s.new, "created": s.created, "expires": s.wsgi_session.expires_at}

    return {path: dump}


# -- ISession: the object ----------------------------------------------------------------------


def test_session_provides_isession(pyramid: ModuleType) -> None:
    from pyramid.interfaces import ISession
    from zope.interface.verify import verifyObject

    from wsgisession.integrations.pyramid import PyramidSession

    assert verifyObject(ISession, PyramidSession(new_session()))

    def check(request: Any) -> Any:
        return {"conforms": verifyObject(ISession, request.session), "type": type(request.session).__name__}

    client = make_pyramid_app({"/check": check})
    assert client.get("/check").json == {"conforms": True, "type": "PyramidSession"}


def test_no_cookie_is_an_empty_new_session(pyramid: ModuleType, clock: Clock) -> None:
    client = make_pyramid_app(stored())
    response = client.get("/dump")
    assert response.json == {"data": {}, "new": True, "created": clock.time, "expires": None}
    # Reading an empty new session writes nothing and sets no cookie.
    assert set_cookies(response) == []
    assert response.headers["Vary"] == "Cookie"


def test_a_live_cookie_brings_the_data_back(pyramid: ModuleType, clock: Clock) -> None:
    def write(request: Any) -> Any:
        request.session["state"] = 1
        return {"new": request.session.new}

    client = make_pyramid_app({"/write": write, **stored()})
    created = clock.time
    assert client.get("/write").json == {"new": True}
    clock.advance(100)
    shown = client.get("/dump").json
    assert shown["data"] == {"state": 1}
    assert shown["new"] is False
    assert shown["created"] == created


def test_an_expired_or_forged_cookie_is_an_empty_session(pyramid: ModuleType, clock: Clock) -> None:
    def write(request: Any) -> Any:
        request.session["state"] = 1
        return "ok"

    store = MemoryStore()
    views = {"/write": write, **stored()}
    client = make_pyramid_app(views, store=store, max_age=60)
    client.get("/write")
    cookie = client.cookies["session"]

    # Past its lifetime (Pyramid's timeout): the data is gone, the session is new.
    clock.advance(61)
    assert client.get("/dump").json["data"] == {}
    assert client.get("/dump").json["new"] is True

    # A cookie that cannot be verified: tampered with, or signed by another secret.
    client.get("/write")
    cookie = client.cookies["session"]
    sid, _, signature = cookie.partition(".")
    tampered = webtest.TestApp(client.app)
    tampered.set_cookie("session", sid + "." + signature[::-1])
    shown = tampered.get("/dump").json
    assert shown["data"] == {} and shown["new"] is True
    other_secret = make_pyramid_app(views, store=store, secret="another-secret-" + "y" * 32)
    other_secret.set_cookie("session", cookie)
    assert other_secret.get("/dump").json["data"] == {}
    # The original browser is unaffected.
    assert client.get("/dump").json["data"] == {"state": 1}


def test_a_very_long_secret_signs(pyramid: ModuleType) -> None:
    def write(request: Any) -> Any:
        request.session["a"] = 1
        return "ok"

    client = make_pyramid_app({"/write": write, **stored()}, secret=b"a" * 1024)
    assert len(set_cookies(client.get("/write"))) == 1
    assert client.get("/dump").json["data"] == {"a": 1}


def test_a_large_value_is_not_limited_by_the_cookie(pyramid: ModuleType) -> None:
    def write(request: Any) -> Any:
        request.session["abc"] = "x" * 100_000
        return "ok"

    client = make_pyramid_app({"/write": write, **stored()})
    (cookie,) = set_cookies(client.get("/write"))
    assert len(cookie) < 400
    assert client.get("/dump").json["data"] == {"abc": "x" * 100_000}


def test_the_cookie_carries_the_middleware_options(pyramid: ModuleType) -> None:
    def write(request: Any) -> Any:
        request.session["abc"] = "x"
        return "ok"

    client = make_pyramid_app(
        {"/foo/write": write},
        cookie_name="abc",
        path="/foo",
        domain="example.com",
        secure=True,
        httponly=True,
        samesite="Lax",
    )
    (cookie,) = set_cookies(client.get("/foo/write"))
    name_value, *attributes = (part.strip() for part in cookie.split(";"))
    assert name_value.startswith("abc=")
    assert {"Path=/foo", "Domain=example.com", "Secure", "HttpOnly", "SameSite=Lax"} <= set(attributes)


# -- the mapping ---------------------------------------------------------------------------------


def test_the_mapping_api_behaves_like_a_dict(pyramid: ModuleType) -> None:
    from wsgisession.integrations.pyramid import PyramidSession

    core = new_session()
    s = PyramidSession(core)
    assert dict(s) == {} and s == {} and not s and len(s) == 0
    s["a"] = 1
    s.update({"b": [1]}, c={"x": 1})
    s.update([("d", "four")])
    assert s.setdefault("a", 99) == 1
    assert s.setdefault("e") is None
    assert s == {"a": 1, "b": [1], "c": {"x": 1}, "d": "four", "e": None}
    assert "a" in s and "zz" not in s and 1 not in s
    assert s.get("a") == 1 and s.get("zz") is None and s.get("zz", 5) == 5
    assert sorted(s.keys()) == ["a", "b", "c", "d", "e"]
    assert [1] in s.values() and ("d", "four") in s.items()
    assert len(s) == 5 and bool(s)
    assert s.pop("a") == 1
    assert s.pop("a", "gone") == "gone"
    with pytest.raises(KeyError):
        s.pop("a")
    key, value = s.popitem()
    assert key not in s and value == {"b": [1], "c": {"x": 1}, "d": "four", "e": None}[key]
    assert len(s) == 3
    with pytest.raises(KeyError):
        s["missing"]
    with pytest.raises(KeyError):
        del s["missing"]
    s.clear()
    assert s == {} and len(s) == 0
    with pytest.raises(KeyError):
        s.popitem()
    assert s.wsgi_session is core


def test_mapping_changes_last_across_requests(pyramid: ModuleType) -> None:
    def fill(request: Any) -> Any:
        s = request.session
        s["a"] = 1
        s.update(b=2, c=3)
        s.setdefault("cart", []).append("apple")
        s["prefs"] = {"theme": "light"}
        return "ok"

    def change(request: Any) -> Any:
        s = request.session
        s.pop("a")
        del s["b"]
        s.setdefault("cart", []).append("pear")  # in place, without changed()
        s["prefs"]["theme"] = "dark"  # in place, without changed()
        s.update({"c": 30})
        return "ok"

    def empty(request: Any) -> Any:
        request.session.clear()
        return "ok"

    client = make_pyramid_app({"/fill": fill, "/change": change, "/empty": empty, **stored()})
    client.get("/fill")
    assert client.get("/dump").json["data"] == {"a": 1, "b": 2, "c": 3, "cart": ["apple"], "prefs": {"theme": "light"}}
    client.get("/change")
    assert client.get("/dump").json["data"] == {"c": 30, "cart": ["apple", "pear"], "prefs": {"theme": "dark"}}
    client.get("/empty")
    assert client.get("/dump").json["data"] == {}


def test_values_must_be_json_data(pyramid: ModuleType) -> None:
    from wsgisession.integrations.pyramid import PyramidSession

    s = PyramidSession(new_session())
    with pytest.raises(TypeError, match="'t'"):
        s["t"] = (1, 2)
    with pytest.raises(TypeError, match="'o'"):
        s.update(o=object())
    assert "t" not in s and "o" not in s


def test_changed_is_harmless_and_not_needed(pyramid: ModuleType, clock: Clock) -> None:
    from wsgisession.integrations.pyramid import PyramidSession

    s = PyramidSession(new_session())
    assert s.changed() is None

    def write(request: Any) -> Any:
        request.session["n"] = {"count": 0}
        return "ok"

    def only_changed(request: Any) -> Any:
        request.session.get("n")
        request.session.changed()
        return "ok"

    def bump(request: Any) -> Any:
        request.session["n"]["count"] += 1  # no changed() call
        return "ok"

    client = make_pyramid_app({"/write": write, "/changed": only_changed, "/bump": bump, **stored()})
    client.get("/write")
    before = client.get("/dump").json
    clock.advance(100)
    # changed() on an unchanged session neither writes nor reissues the cookie.
    assert set_cookies(client.get("/changed")) == []
    assert client.get("/dump").json == before
    # An in-place change is saved without changed(), and the expiry moves with the write.
    assert len(set_cookies(client.get("/bump"))) == 1
    after = client.get("/dump").json
    assert after["data"] == {"n": {"count": 1}}
    assert after["expires"] == before["expires"] + 100


# -- invalidate, new, created --------------------------------------------------------------------


def test_invalidate_dissociates_the_data(pyramid: ModuleType) -> None:
    from wsgisession.integrations.pyramid import PyramidSession

    store = MemoryStore()
    first = new_session(store)
    first["a"] = 1
    first.save()
    old_id = first.id
    core = Session(SessionSettings(store), old_id)
    s = PyramidSession(core)
    assert not s.new and s["a"] == 1
    assert s.invalidate() is None
    assert "a" not in s and dict(s) == {}
    assert s.new
    # Gone from the store at once, not at the end of the request.
    assert Session(SessionSettings(store), old_id).get("a") is None
    # Used after invalidate: a new session, with a new ID.
    s["after"] = True
    core.save()
    assert core.id not in (None, old_id)
    assert dict(Session(SessionSettings(store), core.id)) == {"after": True}


def test_invalidate_then_write_starts_a_new_session_across_requests(pyramid: ModuleType, clock: Clock) -> None:
    def login(request: Any) -> Any:
        request.session["user"] = "ada"
        return {"token": request.session.get_csrf_token()}

    def logout(request: Any) -> Any:
        old_token = request.session.get_csrf_token()
        request.session.invalidate()
        gone = "user" not in request.session and request.session.new
        request.session.flash("Logged out")
        return {"gone": gone, "same_token": request.session.get_csrf_token() == old_token}

    client = make_pyramid_app({"/login": login, "/logout": logout, **stored()})
    client.get("/login")
    old_cookie = client.cookies["session"]
    clock.advance(10)
    response = client.get("/logout")
    assert response.json == {"gone": True, "same_token": False}
    new_cookie = client.cookies["session"]
    assert new_cookie.split(".")[0] != old_cookie.split(".")[0]
    shown = client.get("/dump").json
    assert set(shown["data"]) == {"_flashes", "_csrf_token"}
    assert shown["created"] == clock.time  # a new session: created when it was started again
    # The old cookie names nothing any more.
    replay = webtest.TestApp(client.app)
    replay.set_cookie("session", old_cookie)
    assert replay.get("/dump").json["data"] == {}
    assert replay.get("/dump").json["new"] is True


def test_a_session_invalidated_elsewhere_is_gone(pyramid: ModuleType) -> None:
    def write(request: Any) -> Any:
        request.session["a"] = 1
        return "ok"

    def invalidate(request: Any) -> Any:
        request.session.invalidate()
        return "ok"

    client = make_pyramid_app({"/write": write, "/invalidate": invalidate, **stored()})
    client.get("/write")
    other_tab = webtest.TestApp(client.app)
    other_tab.set_cookie("session", client.cookies["session"])
    assert other_tab.get("/dump").json["data"] == {"a": 1}
    response = client.get("/invalidate")
    assert any(c.startswith("session=;") and "Max-Age=0" in c for c in set_cookies(response))
    # The other tab's cookie is still well signed, but names a session that is gone.
    assert other_tab.get("/dump").json["data"] == {}


# -- what saves and when ---------------------------------------------------------------------------


def test_a_cookie_only_when_the_session_is_written(pyramid: ModuleType) -> None:
    def write(request: Any) -> Any:
        request.session["a"] = 1
        return "ok"

    def read(request: Any) -> Any:
        return request.session.get("a")

    def untouched(request: Any) -> Any:
        return "ok"

    client = make_pyramid_app({"/write": write, "/read": read, "/untouched": untouched})
    response = client.get("/untouched")
    assert set_cookies(response) == [] and "Vary" not in response.headers
    response = client.get("/write")
    assert len(set_cookies(response)) == 1 and response.headers["Vary"] == "Cookie"
    response = client.get("/read")
    assert response.json == 1
    assert set_cookies(response) == [] and response.headers["Vary"] == "Cookie"


def test_rolling_refreshes_the_expiry_of_a_used_session(pyramid: ModuleType, clock: Clock) -> None:
    def write(request: Any) -> Any:
        request.session["state"] = 1
        return "ok"

    def read(request: Any) -> Any:
        return request.session["state"]

    views = {"/write": write, "/read": read, **stored()}
    rolling = make_pyramid_app(views, max_age=600, rolling=True)
    rolling.get("/write")
    first = rolling.get("/dump").json["expires"]
    clock.advance(300)
    # A read refreshes the expiry (Pyramid's reissue), with a new cookie lifetime...
    (cookie,) = set_cookies(rolling.get("/read"))
    assert "Max-Age=600" in cookie
    assert rolling.get("/dump").json["expires"] == first + 300
    # ...but not again moments later (1 % of the lifetime, at most a minute, is not worth a write).
    clock.advance(1)
    assert set_cookies(rolling.get("/read")) == []
    # With 300 s more, the session would have died without the refresh.
    clock.advance(400)
    assert rolling.get("/read").json == 1

    # Without rolling, reading never refreshes it (Pyramid's reissue_time=None).
    fixed = make_pyramid_app(views, max_age=600)
    fixed.get("/write")
    clock.advance(300)
    assert set_cookies(fixed.get("/read")) == []
    clock.advance(301)
    assert fixed.get("/dump").json["data"] == {}


def test_an_http_exception_below_500_saves(pyramid: ModuleType) -> None:
    from pyramid.httpexceptions import HTTPForbidden, HTTPSeeOther

    def redirect(request: Any) -> Any:
        request.session["step"] = "redirected"
        raise HTTPSeeOther(location="/dump")

    def forbidden(request: Any) -> Any:
        request.session.flash("Not allowed", "error")
        raise HTTPForbidden()

    client = make_pyramid_app({"/redirect": redirect, "/forbidden": forbidden, **stored()})
    assert len(set_cookies(client.get("/redirect", status=303))) == 1
    client.get("/forbidden", status=403)
    assert client.get("/dump").json["data"]["step"] == "redirected"
    assert client.get("/dump").json["data"]["_flashes"] == [["error", "Not allowed"]]


def test_an_error_saves_nothing(pyramid: ModuleType) -> None:
    from pyramid.httpexceptions import HTTPInternalServerError
    from pyramid.response import Response

    class Handled(Exception):
        pass

    def write(request: Any) -> Any:
        request.session["n"] = 1
        return "ok"

    def raises(request: Any) -> Any:
        request.session["n"] = 666
        raise ValueError("boom")

    def handled(request: Any) -> Any:
        request.session["n"] = 667
        raise Handled()

    def server_error(request: Any) -> Any:
        request.session["n"] = 668
        raise HTTPInternalServerError()

    def returns_500(request: Any) -> Any:
        request.session["n"] = 669
        return Response("no", status=500)

    def configure(config: Any) -> None:
        config.add_view(lambda exc, request: Response("handled", status=500), context=Handled)

    client = make_pyramid_app(
        {"/write": write, "/raises": raises, "/handled": handled, "/500": server_error, "/returns-500": returns_500}
        | stored(),
        configure=configure,
    )
    client.get("/write")
    with pytest.raises(ValueError, match="boom"):
        client.get("/raises")
    for path in ("/handled", "/500", "/returns-500"):
        assert set_cookies(client.get(path, status=500)) == []
    assert client.get("/dump").json["data"] == {"n": 1}


# -- flash -------------------------------------------------------------------------------------------


def test_flash_queues(pyramid: ModuleType) -> None:
    from wsgisession.integrations.pyramid import PyramidSession

    s = PyramidSession(new_session())
    s.flash("msg1")
    s.flash("msg2")
    assert s.peek_flash() == ["msg1", "msg2"]
    s.flash("msg1", allow_duplicate=True)
    assert s.peek_flash() == ["msg1", "msg2", "msg1"]
    s.flash("msg1", allow_duplicate=False)
    s.flash("msg3", allow_duplicate=False)
    assert s.peek_flash() == ["msg1", "msg2", "msg1", "msg3"]
    s.flash("warn1", "warn")
    s.flash("warn2", "warn")
    s.flash("err1", "error")
    s.flash("msg1", "error", allow_duplicate=False)  # a duplicate only within its own queue
    assert s.peek_flash("warn") == ["warn1", "warn2"]
    assert s.peek_flash("error") == ["err1", "msg1"]
    assert s.peek_flash("nothing") == []
    # peek leaves the queue in place.
    assert s.peek_flash("warn") == ["warn1", "warn2"]
    # pop empties that queue only.
    assert s.pop_flash("warn") == ["warn1", "warn2"]
    assert s.pop_flash("warn") == [] and s.peek_flash("warn") == []
    assert s.pop_flash() == ["msg1", "msg2", "msg1", "msg3"]
    assert s.peek_flash("error") == ["err1", "msg1"]
    assert s.pop_flash("error") == ["err1", "msg1"]
    assert FLASH_KEY not in s.wsgi_session  # nothing left behind
    assert s.pop_flash() == []


def test_flash_across_a_redirect(pyramid: ModuleType) -> None:
    from pyramid.httpexceptions import HTTPSeeOther

    def submit(request: Any) -> Any:
        request.session.flash("Saved")
        request.session.flash("Saved", allow_duplicate=False)
        request.session.flash("Check the date", "warning")
        return HTTPSeeOther(location="/show")

    def show(request: Any) -> Any:
        return {"peek": request.session.peek_flash(), "default": request.session.pop_flash()}

    def warnings(request: Any) -> Any:
        return request.session.pop_flash("warning")

    client = make_pyramid_app({"/submit": submit, "/show": show, "/warnings": warnings})
    client.post("/submit", status=303)
    assert client.get("/show").json == {"peek": ["Saved"], "default": ["Saved"]}
    assert client.get("/show").json == {"peek": [], "default": []}
    assert client.get("/warnings").json == ["Check the date"]
    assert client.get("/warnings").json == []


def test_flash_queues_are_shared_with_the_core(pyramid: ModuleType) -> None:
    from wsgisession.integrations.pyramid import DEFAULT_QUEUE_CATEGORY, PyramidSession

    core = new_session()
    s = PyramidSession(core)
    s.flash("one")
    s.flash("bad", "error")
    assert DEFAULT_QUEUE_CATEGORY == "info"
    assert core.peek_flashes() == [("info", "one"), ("error", "bad")]
    core.flash("from the core")
    core.flash("also an error", "error")
    assert s.pop_flash("error") == ["bad", "also an error"]
    assert core.peek_flashes() == [("info", "one"), ("info", "from the core")]
    assert s.pop_flash() == ["one", "from the core"]
    assert core.pop_flashes() == []


def test_flash_refuses_a_queue_that_is_not_text(pyramid: ModuleType) -> None:
    from wsgisession.integrations.pyramid import PyramidSession

    s = PyramidSession(new_session())
    with pytest.raises(TypeError, match="queue"):
        s.flash("text", queue=None)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="queue"):
        s.peek_flash(1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="queue"):
        s.pop_flash(b"error")  # type: ignore[arg-type]
    assert FLASH_KEY not in s.wsgi_session


JSON_MESSAGES: list[Any] = [
    {"text": "Saved", "level": 2, "links": ["/a", "/b"]},
    ["a", "list", 1],
    42,
    2.5,
    True,
    None,
    "",
    {"nested": {"deeper": [{"x": None}]}},
]


def test_flash_takes_json_data(pyramid: ModuleType) -> None:
    from wsgisession.integrations.pyramid import PyramidSession

    s = PyramidSession(new_session())
    for message in JSON_MESSAGES:
        s.flash(message)
    assert s.peek_flash() == JSON_MESSAGES
    s.flash({"text": "Saved", "level": 2, "links": ["/a", "/b"]}, allow_duplicate=False)
    s.flash(42, allow_duplicate=False)
    assert len(s.peek_flash()) == len(JSON_MESSAGES)
    # What peek returns is a copy: changing it does not change the queue.
    s.wsgi_session.save()
    s.peek_flash()[0]["text"] = "changed"
    assert not s.wsgi_session.modified
    assert s.pop_flash() == JSON_MESSAGES
    # The other values the tagged encoding keeps come back as themselves too.
    when = datetime.datetime(2024, 5, 1, 12, 30, tzinfo=datetime.timezone.utc)
    s.flash(("a", 1))
    s.flash(when)
    (pair, moment) = s.pop_flash()
    assert type(pair) is tuple and pair == ("a", 1)
    assert moment == when and moment.tzinfo is not None


def test_flash_markup_comes_back_as_markup(pyramid: ModuleType, markupsafe: ModuleType) -> None:
    from wsgisession.integrations.pyramid import PyramidSession

    Markup = markupsafe.Markup
    s = PyramidSession(new_session())
    s.flash(Markup("<b>Saved</b>"))
    s.flash("<b>plain</b>")
    s.flash(Markup("<b>Saved</b>"), allow_duplicate=False)
    (markup, plain) = s.peek_flash()
    assert type(markup) is Markup and markup == "<b>Saved</b>"
    assert type(plain) is str
    (markup, plain) = s.pop_flash()
    assert type(markup) is Markup and markup.__html__() == "<b>Saved</b>"
    assert type(plain) is str and markupsafe.escape(plain) == "&lt;b&gt;plain&lt;/b&gt;"


def test_flash_refuses_what_cannot_be_stored(pyramid: ModuleType) -> None:
    from wsgisession.integrations.pyramid import PyramidSession

    s = PyramidSession(new_session())
    for message in (object(), {1, 2}, math.nan, {"when": object()}):
        with pytest.raises(TypeError, match="flash message"):
            s.flash(message)
    assert s.peek_flash() == []
    assert FLASH_KEY not in s.wsgi_session


def test_flash_data_and_markup_survive_every_store(
    pyramid: ModuleType, markupsafe: ModuleType, any_store: Store
) -> None:
    from pyramid.httpexceptions import HTTPSeeOther

    Markup = markupsafe.Markup

    def submit(request: Any) -> Any:
        for message in JSON_MESSAGES:
            request.session.flash(message, "data")
        request.session.flash(Markup("<i>Welcome</i>"), "html")
        return HTTPSeeOther(location="/show")

    def show(request: Any) -> Any:
        html = request.session.pop_flash("html")
        return {"data": request.session.pop_flash("data"), "html": [[type(m).__name__, str(m)] for m in html]}

    client = make_pyramid_app({"/submit": submit, "/show": show}, store=any_store)
    client.post("/submit", status=303)
    assert client.get("/show").json == {"data": JSON_MESSAGES, "html": [["Markup", "<i>Welcome</i>"]]}
    assert client.get("/show").json == {"data": [], "html": []}


def test_messages_flashed_by_pyramid_do_not_break_the_core_or_flask(
    pyramid: ModuleType, markupsafe: ModuleType
) -> None:
    flask = require_module("flask")
    from pyramid.httpexceptions import HTTPSeeOther

    from wsgisession.integrations.flask import init_app

    Markup = markupsafe.Markup
    store = MemoryStore()

    def submit(request: Any) -> Any:
        request.session.flash("text")
        request.session.flash({"text": "Saved", "level": 2})
        request.session.flash(Markup("<b>bold</b>"), "html")
        return HTTPSeeOther(location="/core")

    def core(request: Any) -> Any:
        return [list(pair) for pair in get_session(request.environ).peek_flashes()]

    pyramid_client = make_pyramid_app({"/submit": submit, "/core": core}, store=store)
    pyramid_client.post("/submit", status=303)
    assert pyramid_client.get("/core").json == [
        ["info", "text"],
        ["info", '{"text":"Saved","level":2}'],
        ["html", "<b>bold</b>"],
    ]

    flask_app = flask.Flask(__name__)
    init_app(flask_app, secret=SECRET, store=store)

    @flask_app.get("/flashes")
    def flashes() -> Any:
        shown = flask.get_flashed_messages(with_categories=True)
        return {"flashes": [[c, type(m).__name__, m] for c, m in shown]}

    flask_client = webtest.TestApp(flask_app)
    flask_client.set_cookie("session", pyramid_client.cookies["session"])
    # One storage for every adapter: [category, tagged message].
    assert flask_client.get("/flashes").json["flashes"] == [
        ["info", "str", "text"],
        ["info", "dict", {"text": "Saved", "level": 2}],
        ["html", "Markup", "<b>bold</b>"],
    ]
    assert flask_client.get("/flashes").json == {"flashes": []}


def test_core_pop_flashes_reads_what_pyramid_stored(pyramid: ModuleType, markupsafe: ModuleType) -> None:
    from wsgisession.integrations.pyramid import PyramidSession

    core = new_session()
    s = PyramidSession(core)
    s.flash({"text": "Saved"})
    s.flash(markupsafe.Markup("<b>x</b>"))
    s.flash(3)
    popped = core.pop_flashes()
    assert popped == [("info", '{"text":"Saved"}'), ("info", "<b>x</b>"), ("info", "3")]
    assert all(type(m) is str for _, m in popped)
    assert s.peek_flash() == []


# -- CSRF --------------------------------------------------------------------------------------------


def test_csrf_token_methods(pyramid: ModuleType) -> None:
    from wsgisession.integrations.pyramid import PyramidSession

    core = new_session()
    s = PyramidSession(core)
    token = s.get_csrf_token()
    assert token and type(token) is str
    assert "_csrft_" in s and s["_csrft_"] == token == core.csrf_token
    assert s.get_csrf_token() == token
    fresh = s.new_csrf_token()
    assert fresh != token and s["_csrft_"] == fresh and core.check_csrf(fresh)
    # A token set under Pyramid's key is the token.
    s["_csrft_"] = "token"
    assert s.get_csrf_token() == "token" and core.check_csrf("token")
    del s["_csrft_"]
    assert "_csrft_" not in s
    assert s.get_csrf_token() not in ("token", fresh, token)


def test_pyramid_csrf_checks_with_dummy_requests(pyramid: ModuleType) -> None:
    from pyramid.csrf import SessionCSRFStoragePolicy, check_csrf_token, get_csrf_token, new_csrf_token

    from wsgisession.integrations.pyramid import PyramidSession

    core = new_session()
    s = PyramidSession(core)

    def request(**kw: Any) -> Any:
        return pyramid.DummyRequest(session=s, **kw)

    # The default policy (LegacySessionCSRFStoragePolicy) asks the session.
    with pyramid.testConfig():
        token = get_csrf_token(request())
        assert token == s.get_csrf_token() == core.csrf_token
        assert check_csrf_token(request(post={"csrf_token": token}))
        assert check_csrf_token(request(headers={"X-CSRF-Token": token}))
        assert check_csrf_token(request(post={"other": token}), token="other")
        assert not check_csrf_token(request(post={"csrf_token": "forged"}), raises=False)
        assert not check_csrf_token(request(), raises=False)
        fresh = new_csrf_token(request())
        assert fresh != token and core.check_csrf(fresh)
        assert not check_csrf_token(request(post={"csrf_token": token}), raises=False)

    # SessionCSRFStoragePolicy keeps its token under "_csrft_": the same token.
    with pyramid.testConfig() as config:
        config.set_csrf_storage_policy(SessionCSRFStoragePolicy())
        assert get_csrf_token(request()) == fresh
        by_policy = new_csrf_token(request())
        assert by_policy != fresh and s.get_csrf_token() == by_policy and core.check_csrf(by_policy)
        assert check_csrf_token(request(post={"csrf_token": by_policy}))
        from pyramid.exceptions import BadCSRFToken

        with pytest.raises(BadCSRFToken):
            check_csrf_token(request(post={"csrf_token": fresh}))


@pytest.mark.parametrize("policy", ["legacy", "session"])
def test_pyramid_csrf_protection_in_an_app(pyramid: ModuleType, policy: str) -> None:
    from pyramid.csrf import SessionCSRFStoragePolicy

    def configure(config: Any) -> None:
        if policy == "session":
            config.set_csrf_storage_policy(SessionCSRFStoragePolicy())
        config.set_default_csrf_options(require_csrf=True)

    def form(request: Any) -> Any:
        return {"token": request.session.get_csrf_token()}

    def submit(request: Any) -> Any:
        request.session["submitted"] = request.session.get("submitted", 0) + 1
        return request.session["submitted"]

    def logout(request: Any) -> Any:
        request.session.invalidate()
        return "bye"

    client = make_pyramid_app({"/form": form, "/submit": submit, "/logout": logout}, configure=configure)
    token = client.get("/form").json["token"]
    assert client.get("/form").json["token"] == token  # kept across requests
    client.post("/submit", status=400)
    client.post("/submit", {"csrf_token": "forged"}, status=400)
    assert client.post("/submit", {"csrf_token": token}).json == 1
    assert client.post("/submit", headers={"X-CSRF-Token": token}).json == 2
    client.post("/logout", {"csrf_token": token})
    # A new session after invalidate: the old token is worthless.
    client.post("/submit", {"csrf_token": token}, status=400)
    assert client.get("/form").json["token"] != token


# -- wsgisession's own API through the adapter ------------------------------------------------------------


def test_regenerate_changes_the_id(pyramid: ModuleType) -> None:
    from wsgisession.integrations.pyramid import PyramidSession

    core = new_session()
    core["a"] = 1
    core.save()
    before = core.id
    s = PyramidSession(core)
    s.regenerate()
    assert core.id != before
    assert s["a"] == 1


def test_login_binds_the_user(pyramid: ModuleType) -> None:
    from wsgisession.integrations.pyramid import PyramidSession

    core = new_session()
    s = PyramidSession(core)
    token = s.get_csrf_token()
    core.save()
    before = core.id
    assert s.user_id is None
    s.login("ada")
    assert s.user_id == core.user_id == "ada"
    assert core.id != before
    assert s.get_csrf_token() != token


def test_a_view_tested_on_its_own_with_pyramid_testing(pyramid: ModuleType) -> None:
    from wsgisession.integrations.pyramid import PyramidSession

    def view(request: Any) -> Any:
        request.session["seen"] = request.session.get("seen", 0) + 1
        request.session.flash("hello")
        return request.session["seen"]

    store = MemoryStore()
    core = new_session(store)
    with pyramid.testConfig():
        assert view(pyramid.DummyRequest(session=PyramidSession(core))) == 1
    core.save()
    again = PyramidSession(Session(SessionSettings(store), core.id))
    with pyramid.testConfig():
        assert view(pyramid.DummyRequest(session=again)) == 2
    assert again.pop_flash() == ["hello", "hello"]


def test_session_factory_without_middleware_says_so(pyramid: ModuleType) -> None:
    from wsgisession.integrations.pyramid import session_factory

    with pytest.raises(RuntimeError, match="SessionMiddleware"):
        session_factory(pyramid.DummyRequest(environ={}))
