"""The reference app (log in, see a dashboard, log out) as a Pyramid application.

Run it with ``python examples/pyramid_app.py [PORT]`` and open
http://127.0.0.1:8000/login. Demo user: ``admin`` / ``123``. Sessions live in
``sessions.sqlite3`` (or the file named by ``SESSION_DB``); set ``SESSION_SECRET``
(without it a random secret is kept beside the database, as in ``examples/app.py``).
Needs ``pip install wsgisession[pyramid]``.
"""

from __future__ import annotations

from typing import Any

from pyramid.config import Configurator
from pyramid.csrf import check_csrf_token
from pyramid.httpexceptions import HTTPSeeOther
from pyramid.request import Request
from pyramid.response import Response

from wsgisession import SessionMiddleware, Store

try:
    from examples import _common as common
    from examples.app import check_password
except ImportError:  # run as a script: examples/ is on sys.path, the repository root is not
    import _common as common  # type: ignore[no-redef]
    from app import check_password  # type: ignore[no-redef]

DATABASE = common.DATABASE


def respond(html_text: str, status: int = 200) -> Response:
    return Response(html_text, status=status, content_type="text/html", charset="utf-8")


def login_response(request: Request, message: str = "", status: int = 200) -> Response:
    flashes = request.session.pop_flash()
    return respond(common.login_page(flashes, request.session.get_csrf_token(), message), status)


def show_login(request: Request) -> Response:
    return login_response(request)


def login(request: Request) -> Response:
    if not check_csrf_token(request, raises=False):  # the csrf_token form field or X-CSRF-Token header
        return login_response(request, "The form expired; please try again.", status=403)
    username = request.POST.get("username", "")
    user_id = check_password(username, request.POST.get("password", ""))
    if user_id is None:
        return login_response(request, "Invalid username or password.", status=401)
    request.session.login(user_id)  # a new session ID (fixation defence) and CSRF token, bound to the user
    request.session["username"] = username
    return HTTPSeeOther(location="/dashboard")


def dashboard(request: Request) -> Response:
    session = request.session
    if session.user_id is None:
        return respond(common.page(*common.LOG_IN_FIRST), status=401)
    session["visits"] = session.get("visits", 0) + 1
    response = respond(
        common.dashboard_page(session["username"], session.user_id, session["visits"], session.get_csrf_token())
    )
    response.cache_control = "no-store"
    return response


def logout(request: Request) -> Response:
    if not check_csrf_token(request, raises=False):
        return respond(common.page(*common.FORBIDDEN), status=403)
    request.session.invalidate()
    request.session.flash("Logged out")
    return HTTPSeeOther(location="/login")


def make_app(secret: str | None = None, store: Store | str | None = None, **settings: Any) -> SessionMiddleware:
    """The Pyramid application wrapped in SessionMiddleware (SQLite at ``DATABASE`` by default).

    *settings* are Pyramid settings.
    """
    secret, store = common.session_settings(secret, store, DATABASE)
    with Configurator(settings=settings) as config:
        config.include("wsgisession.integrations.pyramid")  # request.session comes from the middleware
        config.add_route("login", "/login")
        config.add_route("dashboard", "/dashboard")
        config.add_route("logout", "/logout")
        config.add_view(show_login, route_name="login", request_method="GET")
        config.add_view(login, route_name="login", request_method="POST")
        config.add_view(dashboard, route_name="dashboard", request_method="GET")
        config.add_view(logout, route_name="logout", request_method="POST")
        wsgi_app = config.make_wsgi_app()
    return SessionMiddleware(wsgi_app, secret=secret, store=store)


__getattr__ = common.lazy_app(make_app, globals())  # ``examples.pyramid_app:app`` for gunicorn


if __name__ == "__main__":
    common.serve(make_app())
