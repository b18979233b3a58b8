"""The reference app (log in, see a dashboard, log out) as a Pyramid application.

Run it with ``python examples/pyramid_app.py [PORT]`` and open
http://127.0.0.1:8000. Demo user: ``admin`` / ``123``. Sessions live in
``sessions.sqlite3`` (or the file named by ``SESSION_DB``); set ``SESSION_SECRET``
(without it a random secret is kept beside the database, as in ``examples/app.py``).
Needs ``pip install wsgisession[pyramid]``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pyramid.config import Configurator
from pyramid.csrf import check_csrf_token
from pyramid.request import Request
from pyramid.response import Response

from wsgisession import SessionMiddleware, Store, get_session

try:
    from examples import _common as common
except ImportError:  # run as a script: examples/ is on sys.path, the repository root is not
    import _common as common  # type: ignore[no-redef]

DATABASE = common.DATABASE


def respond(reply: common.Reply) -> Response:
    return reply.to_webob(Response)


def home(request: Request) -> Response:
    return respond(common.home())


def dashboard(request: Request) -> Response:
    session = request.session
    if session.user_id is None:
        return respond(common.log_in_first())
    session["visits"] = session.get("visits", 0) + 1
    return respond(
        common.dashboard(
            session["username"],
            session.user_id,
            session["visits"],
            session.get_csrf_token(),
            get_session(request.environ).other_sessions(),  # the core Session, under request.session
            [("info", str(message)) for message in session.pop_flash()],
        )
    )


def logout_others(request: Request) -> Response:
    # check_csrf_token: the csrf_token form field or the X-CSRF-Token header.
    if request.session.user_id is None or not check_csrf_token(request, raises=False):
        return respond(common.forbidden())
    request.session.flash(common.ended_message(get_session(request.environ).end_other_sessions()))
    return respond(common.redirect("/dashboard"))


def logout(request: Request) -> Response:
    if not check_csrf_token(request, raises=False):
        return respond(common.forbidden())
    request.session.invalidate()  # nothing stored is left; "Logged out" rides in a cookie of its own
    return respond(common.logged_out(request.environ))


def login_views(gate: common.LoginGate) -> tuple[Callable[[Request], Response], Callable[[Request], Response]]:
    """The login page and its POST, guarded by *gate*."""

    def show_login(request: Request) -> Response:
        return respond(gate.page(request.environ))

    def login(request: Request) -> Response:
        form = request.POST
        outcome = gate.attempt(
            request.environ, form.get("csrf_token"), form.get("username", ""), form.get("password", "")
        )
        if isinstance(outcome, common.Reply):
            return respond(outcome)
        request.session.login(outcome.user_id)  # a new session ID (fixation defence) and CSRF token, bound to the user
        request.session["username"] = outcome.username
        return respond(outcome.reply)

    return show_login, login


def make_app(
    secret: str | None = None,
    store: Store | str | None = None,
    throttle: common.LoginThrottle | None = None,
    **settings: Any,
) -> SessionMiddleware:
    """The Pyramid application wrapped in SessionMiddleware (SQLite at ``DATABASE`` by default).

    *settings* are Pyramid settings.
    """
    secret, store = common.session_settings(secret, store, DATABASE)
    show_login, login = login_views(common.login_gate(secret, throttle, DATABASE))
    with Configurator(settings=settings) as config:
        config.include("wsgisession.integrations.pyramid")  # request.session comes from the middleware
        routes = {"home": "/", "login": "/login", "dashboard": "/dashboard", "logout": "/logout"}
        for name, path in {**routes, "logout_others": "/logout-others"}.items():
            config.add_route(name, path)
        config.add_view(home, route_name="home", request_method="GET")
        config.add_view(show_login, route_name="login", request_method="GET")
        config.add_view(login, route_name="login", request_method="POST")
        config.add_view(dashboard, route_name="dashboard", request_method="GET")
        config.add_view(logout, route_name="logout", request_method="POST")
        config.add_view(logout_others, route_name="logout_others", request_method="POST")
        config.add_notfound_view(lambda request: respond(common.not_found()))
        wsgi_app = config.make_wsgi_app()
    return SessionMiddleware(wsgi_app, secret=secret, store=store)


__getattr__ = common.lazy_app(make_app, globals())  # ``examples.pyramid_app:app`` for gunicorn


if __name__ == "__main__":
    common.serve(make_app())
