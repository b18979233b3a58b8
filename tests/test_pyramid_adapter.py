"""The Pyramid adapter, against the real framework.

A framework that is not installed skips its tests; with
``WSGISESSION_REQUIRE_ALL=1`` (CI) a missing framework fails them instead.
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import Any

import pytest
import webtest

from wsgisession import MemoryStore, SessionMiddleware
from wsgisession.session import Session, SessionSettings

from .conftest import SECRET
from .servers import require_module


def new_session() -> Session:
    return Session(SessionSettings(MemoryStore()))


# -- Pyramid ---------------------------------------------------------------------------------------


@pytest.fixture
def pyramid() -> ModuleType:
    require_module("pyramid")
    return require_module("pyramid.testing")


def test_pyramid_session_provides_isession(pyramid: ModuleType) -> None:
    from pyramid.interfaces import ISession
    from zope.interface.verify import verifyObject

    from wsgisession.integrations.pyramid import PyramidSession

    assert verifyObject(ISession, PyramidSession(new_session()))


def test_pyramid_session_mapping_and_state(pyramid: ModuleType) -> None:
    from wsgisession.integrations.pyramid import PyramidSession

    core = new_session()
    s = PyramidSession(core)
    assert s.new
    assert s.created == core.created_at
    s["a"] = 1
    s.update(b=[1])
    s.setdefault("c", {"x": 1})
    assert dict(s) == {"a": 1, "b": [1], "c": {"x": 1}}
    assert "a" in s and "zz" not in s and 1 not in s
    assert len(s) == 3
    assert s.pop("a") == 1
    del s["c"]
    assert list(s.keys()) == ["b"]
    s["b"].append(2)
    s.changed()  # not needed, harmless
    assert core.modified
    with pytest.raises(TypeError, match="'t'"):
        s["t"] = (1, 2)
    s.clear()
    assert len(s) == 0
    assert s.wsgi_session is core


def test_pyramid_session_is_not_new_once_saved(pyramid: ModuleType) -> None:
    from wsgisession.integrations.pyramid import PyramidSession

    store = MemoryStore()
    first = Session(SessionSettings(store))
    first["a"] = 1
    first.save()
    again = PyramidSession(Session(SessionSettings(store), first.id))
    assert not again.new
    assert again["a"] == 1
    assert again.created == first.created_at


def test_pyramid_invalidate_destroys_and_later_writes_start_afresh(pyramid: ModuleType) -> None:
    from wsgisession.integrations.pyramid import PyramidSession

    store = MemoryStore()
    core = Session(SessionSettings(store))
    core["user"] = "ada"
    core.save()
    old_id = core.id
    s = PyramidSession(core)
    s.invalidate()
    assert dict(s) == {}
    assert Session(SessionSettings(store), old_id).get("user") is None
    s["after"] = True
    core.save()
    assert core.id != old_id


def test_pyramid_regenerate_changes_the_id(pyramid: ModuleType) -> None:
    from wsgisession.integrations.pyramid import PyramidSession

    core = new_session()
    core["a"] = 1
    core.save()
    before = core.id
    s = PyramidSession(core)
    s.regenerate()
    assert core.id != before
    assert s["a"] == 1


def test_pyramid_login_binds_the_user(pyramid: ModuleType) -> None:
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


def test_pyramid_flash_queues_are_categories(pyramid: ModuleType) -> None:
    from wsgisession.integrations.pyramid import PyramidSession

    core = new_session()
    s = PyramidSession(core)
    s.flash("one")
    s.flash("bad", "error")
    s.flash("one")
    s.flash("one", allow_duplicate=False)
    s.flash("bad", queue="error", allow_duplicate=False)
    assert s.peek_flash() == ["one", "one"]
    assert s.peek_flash("error") == ["bad"]
    assert s.peek_flash("nothing") == []
    # The default queue is wsgisession's default category: the two APIs share messages.
    assert core.peek_flashes() == [("info", "one"), ("error", "bad"), ("info", "one")]
    core.flash("from the core")
    assert s.pop_flash("error") == ["bad"]
    assert s.pop_flash("error") == []
    assert s.peek_flash() == ["one", "one", "from the core"]
    assert s.pop_flash() == ["one", "one", "from the core"]
    assert s.pop_flash() == []
    assert core.pop_flashes() == []


def test_pyramid_flash_refuses_non_text(pyramid: ModuleType) -> None:
    from wsgisession.integrations.pyramid import PyramidSession

    s = PyramidSession(new_session())
    with pytest.raises(TypeError):
        s.flash({"not": "text"})  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        s.flash("text", queue=None)  # type: ignore[arg-type]


def test_pyramid_csrf_tokens_are_one_token(pyramid: ModuleType) -> None:
    from pyramid.csrf import check_csrf_token, get_csrf_token, new_csrf_token

    from wsgisession.integrations.pyramid import PyramidSession

    core = new_session()
    s = PyramidSession(core)
    with pyramid.testConfig():
        token = s.get_csrf_token()
        assert token == s.get_csrf_token() == core.csrf_token
        assert get_csrf_token(pyramid.DummyRequest(session=s)) == token
        assert check_csrf_token(pyramid.DummyRequest(session=s, post={"csrf_token": token}))
        assert check_csrf_token(pyramid.DummyRequest(session=s, headers={"X-CSRF-Token": token}))
        assert not check_csrf_token(pyramid.DummyRequest(session=s, post={"csrf_token": "forged"}), raises=False)
        assert not check_csrf_token(pyramid.DummyRequest(session=s), raises=False)

        fresh = s.new_csrf_token()
        assert fresh != token and core.check_csrf(fresh)
        assert not check_csrf_token(pyramid.DummyRequest(session=s, post={"csrf_token": token}), raises=False)

        # Pyramid's own policy writes through the "_csrft_" alias into the same token.
        by_pyramid = new_csrf_token(pyramid.DummyRequest(session=s))
        assert s.get_csrf_token() == by_pyramid and core.check_csrf(by_pyramid)
        assert "_csrft_" in s and s["_csrft_"] == by_pyramid
        del s["_csrft_"]
        assert "_csrft_" not in s


def make_pyramid_app(views: dict[str, Callable[[Any], Any]], **options: Any) -> webtest.TestApp:
    from pyramid.config import Configurator

    with Configurator() as config:
        config.include("wsgisession.integrations.pyramid")
        for path, view in views.items():
            config.add_route(path, path)
            config.add_view(view, route_name=path, renderer="json")
        app = config.make_wsgi_app()
    options.setdefault("store", MemoryStore())
    return webtest.TestApp(SessionMiddleware(app, secret=SECRET, **options))


def test_pyramid_request_session_across_requests(pyramid: ModuleType) -> None:
    from pyramid.csrf import check_csrf_token
    from pyramid.httpexceptions import HTTPSeeOther

    def form(request: Any) -> Any:
        request.session["visits"] = request.session.get("visits", 0) + 1
        return {"token": request.session.get_csrf_token(), "new": request.session.new}

    def submit(request: Any) -> Any:
        check_csrf_token(request)  # raises BadCSRFToken (400) on a bad token
        request.session.flash("saved", "success")
        return HTTPSeeOther(location="/done")

    def done(request: Any) -> Any:
        return {"flashes": request.session.pop_flash("success"), "visits": request.session["visits"]}

    client = make_pyramid_app({"/form": form, "/submit": submit, "/done": done})
    first = client.get("/form").json
    assert first["new"] is True
    assert client.get("/form").json == {"token": first["token"], "new": False}
    client.post("/submit", {"csrf_token": "forged"}, status=400)
    client.post("/submit", {"csrf_token": first["token"]}, status=303)
    assert client.get("/done").json == {"flashes": ["saved"], "visits": 2}
    assert client.get("/done").json == {"flashes": [], "visits": 2}


def test_pyramid_session_factory_without_middleware_says_so(pyramid: ModuleType) -> None:
    from wsgisession.integrations.pyramid import session_factory

    with pytest.raises(RuntimeError, match="SessionMiddleware"):
        session_factory(pyramid.DummyRequest(environ={}))
