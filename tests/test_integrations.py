"""The Bottle, Pyramid and Flask adapters, each against the real framework.

A framework that is not installed skips its tests; with
``WSGISESSION_REQUIRE_ALL=1`` (CI) a missing framework fails them instead.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from types import ModuleType
from typing import Any

import pytest
import webtest

from wsgisession import MemoryStore, SessionMiddleware, get_session
from wsgisession.errors import ConfigurationError
from wsgisession.session import Session, SessionSettings

from .conftest import SECRET
from .servers import require_module


def new_session() -> Session:
    return Session(SessionSettings(MemoryStore()))


def test_the_core_imports_no_framework() -> None:
    code = (
        "import json, sys, wsgisession, wsgisession.integrations, wsgisession.cli;"
        "print(json.dumps(sorted({'bottle', 'flask', 'pyramid', 'zope'} & {m.split('.')[0] for m in sys.modules})))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert json.loads(out) == []


# -- Bottle ----------------------------------------------------------------------------------------


@pytest.fixture
def bottle() -> ModuleType:
    return require_module("bottle")


def test_bottle_session_helper_returns_the_request_session(bottle: ModuleType) -> None:
    from wsgisession.integrations.bottle import session

    web = bottle.Bottle()

    @web.get("/incr")
    def incr() -> dict[str, Any]:
        s = session()
        assert s is get_session(bottle.request.environ)
        s["n"] = s.get("n", 0) + 1
        return {"n": s["n"]}

    client = webtest.TestApp(SessionMiddleware(web, secret=SECRET, store=MemoryStore()))
    assert client.get("/incr").json == {"n": 1}
    assert client.get("/incr").json == {"n": 2}


def test_bottle_session_helper_without_middleware_says_so(bottle: ModuleType) -> None:
    from wsgisession.integrations.bottle import session

    web = bottle.Bottle()
    web.config["catchall"] = False

    @web.get("/")
    def index() -> str:
        session()
        return "unreachable"

    with pytest.raises(RuntimeError, match="SessionMiddleware"):
        webtest.TestApp(web).get("/")


def test_bottle_plugin_injects_the_session_where_asked(bottle: ModuleType) -> None:
    from wsgisession.integrations.bottle import SessionPlugin

    web = bottle.Bottle()
    web.install(SessionPlugin())
    seen: dict[str, Any] = {}

    @web.get("/with/<name>")
    def with_session(name: str, session: Session) -> str:
        seen["session"] = session
        session["name"] = name
        return name

    @web.get("/without")
    def without() -> str:
        return "plain"

    client = webtest.TestApp(SessionMiddleware(web, secret=SECRET, store=MemoryStore()))
    assert client.get("/with/ada").text == "ada"
    assert isinstance(seen["session"], Session)
    assert client.get("/without").text == "plain"
    assert "session" in client.cookies


def test_bottle_plugin_keyword_is_configurable(bottle: ModuleType) -> None:
    from wsgisession.integrations.bottle import SessionPlugin

    web = bottle.Bottle()
    web.install(SessionPlugin(keyword="sess"))

    @web.get("/")
    def index(sess: Session) -> str:
        return str(sess.is_new)

    client = webtest.TestApp(SessionMiddleware(web, secret=SECRET, store=MemoryStore()))
    assert client.get("/").text == "True"


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


# -- Flask -----------------------------------------------------------------------------------------


@pytest.fixture
def flask() -> ModuleType:
    return require_module("flask")


def make_flask_app(flask: ModuleType, **options: Any) -> tuple[Any, webtest.TestApp]:
    from wsgisession.integrations.flask import init_app

    app = flask.Flask(__name__)
    options.setdefault("store", MemoryStore())
    init_app(app, secret=SECRET, **options)
    return app, webtest.TestApp(app)


def test_flask_session_is_ours_and_lasts(flask: ModuleType) -> None:
    from wsgisession.integrations.flask import FlaskSession, current_session

    app, client = make_flask_app(flask)

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
    # Flask's own test client goes through the middleware too.
    with app.test_client() as flask_client:
        assert flask_client.get("/incr").json == {"n": 1, "new": True}
        assert flask_client.get("/incr").json == {"n": 2, "new": False}


def test_flask_request_that_ignores_the_session_sets_no_cookie(flask: ModuleType) -> None:
    store = MemoryStore()
    app, client = make_flask_app(flask, store=store)

    @app.get("/plain")
    def plain() -> Any:
        return "plain"

    response = client.get("/plain")
    assert "Set-Cookie" not in response.headers
    assert "Vary" not in response.headers or "Cookie" not in response.headers["Vary"]
    assert not client.cookies


def test_flask_session_mixin_semantics(flask: ModuleType) -> None:
    app, client = make_flask_app(flask)

    @app.get("/state")
    def state() -> Any:
        session = flask.session
        before = session.modified
        session.modified = True  # what Flask code does after a nested change: harmless
        after_flag = session.modified
        session.permanent = False  # no effect: the middleware's max_age decides
        session.setdefault("cart", []).append("x")
        return {
            "before": before,
            "after_flag": after_flag,
            "modified": session.modified,
            "permanent": session.permanent,
            "accessed": session.accessed,
            "keys": sorted(session),
        }

    @app.get("/read")
    def read() -> Any:
        return {"cart": flask.session.get("cart"), "modified": flask.session.modified}

    assert client.get("/state").json == {
        "before": False,
        "after_flag": False,
        "modified": True,
        "permanent": True,
        "accessed": True,
        "keys": ["cart"],
    }
    response = client.get("/read")
    assert response.json == {"cart": ["x"], "modified": False}
    assert "Cookie" in response.headers["Vary"]


def test_flask_permanent_follows_max_age(flask: ModuleType) -> None:
    app, client = make_flask_app(flask, max_age=None)

    @app.get("/")
    def index() -> Any:
        return {"permanent": flask.session.permanent}

    assert client.get("/").json == {"permanent": False}
    assert "session" not in client.cookies


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

    shown = client.post("/save", status=303).follow().json
    assert shown == {"flashes": [["message", "Saved"], ["warning", "Careful"]], "same_in_request": True, "tuples": True}
    assert client.get("/show").json["flashes"] == []


def test_flask_flash_is_shared_with_the_core_api(flask: ModuleType) -> None:
    app, client = make_flask_app(flask)

    @app.get("/flash")
    def flash() -> Any:
        get_session(flask.request.environ).flash("from the core", "info")
        flask.flash("from flask", "error")
        return {"core": get_session(flask.request.environ).peek_flashes()}

    @app.get("/show")
    def show() -> Any:
        return {"only_errors": flask.get_flashed_messages(category_filter=["error"])}

    assert client.get("/flash").json == {"core": [["info", "from the core"], ["error", "from flask"]]}
    assert client.get("/show").json == {"only_errors": ["from flask"]}


def test_flask_tuples_outside_the_flash_key_are_still_refused(flask: ModuleType) -> None:
    from wsgisession.integrations.flask import FlaskSession

    session = FlaskSession(new_session())
    with pytest.raises(TypeError, match="'pair'"):
        session["pair"] = (1, 2)
    session["_flashes"] = [("message", "hi")]
    assert session.wsgi_session["_flashes"] == [["message", "hi"]]
    assert session["_flashes"] == [("message", "hi")]


def test_flask_login_helpers(flask: ModuleType) -> None:
    from wsgisession.integrations.flask import current_session

    app, client = make_flask_app(flask)

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


def test_flask_error_saves_nothing(flask: ModuleType) -> None:
    app, client = make_flask_app(flask)

    @app.get("/boom")
    def boom() -> Any:
        flask.session["n"] = 1
        raise RuntimeError("boom")

    client.get("/boom", status=500)
    assert "session" not in client.cookies


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


def test_flask_init_app_checks_the_options(flask: ModuleType) -> None:
    from wsgisession.integrations.flask import init_app

    with pytest.raises(ConfigurationError):
        init_app(flask.Flask(__name__), secret=SECRET, store=MemoryStore(), samesite="None")
    with pytest.raises(ValueError, match="secret"):
        init_app(flask.Flask(__name__), secret="", store=MemoryStore())
