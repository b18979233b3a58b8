"""The reference app (log in, see a dashboard, log out) as a Pyramid application.

Run it with ``python examples/pyramid_app.py [PORT]`` and open
http://127.0.0.1:8000/login. Demo user: ``admin`` / ``123``. Sessions live in
``sessions.sqlite3`` (or the file named by ``SESSION_DB``); set ``SESSION_SECRET``
(without it a random secret is kept beside the database, as in ``examples/app.py``).
Needs ``pip install wsgisession[pyramid]``.
"""

from __future__ import annotations

import html
import os
import sys
from typing import Any

from pyramid.config import Configurator
from pyramid.csrf import check_csrf_token
from pyramid.httpexceptions import HTTPSeeOther
from pyramid.request import Request
from pyramid.response import Response

from wsgisession import SessionMiddleware, Store

try:
    from examples.app import check_password, load_secret
except ImportError:  # run as a script: examples/ is on sys.path, the repository root is not
    from app import check_password, load_secret  # type: ignore[no-redef]

DATABASE = os.environ.get("SESSION_DB", "sessions.sqlite3")


def page(title: str, body: str, status: int = 200) -> Response:
    return Response(
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title></head>'
        f"<body><h1>{html.escape(title)}</h1>{body}</body></html>",
        status=status,
        content_type="text/html",
        charset="utf-8",
    )


def login_page(request: Request, message: str = "", status: int = 200) -> Response:
    notes = "".join(f'<p class="msg">{html.escape(text)}</p>' for text in request.session.pop_flash())
    if message:
        notes += f'<p class="msg error">{html.escape(message)}</p>'
    return page(
        "Log in",
        f'{notes}<form method="post" action="/login">'
        f'<input type="hidden" name="csrf_token" value="{html.escape(request.session.get_csrf_token())}">'
        '<p><label>Username <input name="username" autocomplete="username"></label></p>'
        '<p><label>Password <input name="password" type="password" autocomplete="current-password"></label></p>'
        '<p><button type="submit">Log in</button></p></form>',
        status=status,
    )


def show_login(request: Request) -> Response:
    return login_page(request)


def login(request: Request) -> Response:
    if not check_csrf_token(request, raises=False):  # the csrf_token form field or X-CSRF-Token header
        return login_page(request, "The form expired; please try again.", status=403)
    username = request.POST.get("username", "")
    user_id = check_password(username, request.POST.get("password", ""))
    if user_id is None:
        return login_page(request, "Invalid username or password.", status=401)
    request.session.login(user_id)  # a new session ID (fixation defence) and CSRF token, bound to the user
    request.session["username"] = username
    return HTTPSeeOther(location="/dashboard")


def dashboard(request: Request) -> Response:
    session = request.session
    if session.user_id is None:
        return page("Please log in first", '<p><a href="/login">Log in</a></p>', status=401)
    session["visits"] = session.get("visits", 0) + 1
    response = page(
        f"Welcome, {session['username']}",
        f"<p>User ID: {html.escape(session.user_id)}</p>"
        f"<p>Visits this session: {session['visits']}</p>"
        '<form method="post" action="/logout">'
        f'<input type="hidden" name="csrf_token" value="{html.escape(request.session.get_csrf_token())}">'
        '<button type="submit">Log out</button></form>',
    )
    response.cache_control = "no-store"
    return response


def logout(request: Request) -> Response:
    if not check_csrf_token(request, raises=False):
        return page("Forbidden", "<p>Missing or wrong CSRF token.</p>", status=403)
    request.session.invalidate()
    request.session.flash("Logged out")
    return HTTPSeeOther(location="/login")


def make_app(secret: str | None = None, store: Store | str | None = None, **settings: Any) -> SessionMiddleware:
    """The Pyramid application wrapped in SessionMiddleware (SQLite at ``DATABASE`` by default).

    *settings* are Pyramid settings.
    """
    if secret is None:
        secret = load_secret(DATABASE)
    if store is None:
        store = f"sqlite:///{DATABASE}"
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


def __getattr__(name: str) -> Any:
    # The module-level ``app`` (``examples.pyramid_app:app`` for gunicorn), built on
    # first use so that importing this module touches no file.
    if name == "app":
        globals()["app"] = built = make_app()
        return built
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if __name__ == "__main__":
    from wsgiref.simple_server import make_server

    port = int(sys.argv[1]) if len(sys.argv) > 1 else 8000
    with make_server("127.0.0.1", port, make_app()) as server:
        print(f"Serving on http://127.0.0.1:{port}/login (demo user: admin / 123)")
        server.serve_forever()
