"""The Flask adapter, against the real framework.

A framework that is not installed skips its tests; with
``WSGISESSION_REQUIRE_ALL=1`` (CI) a missing framework fails them instead.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import pytest
import webtest

from wsgisession import MemoryStore, get_session
from wsgisession.errors import ConfigurationError
from wsgisession.session import Session, SessionSettings

from .conftest import SECRET
from .servers import require_module


def new_session() -> Session:
    return Session(SessionSettings(MemoryStore()))


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
