"""The reference app (log in, see a dashboard, log out) as a Bottle application.

Run it with ``python examples/bottle_app.py [PORT]`` and open
http://127.0.0.1:8000/login. Demo user: ``admin`` / ``123``. Sessions live in
``sessions.sqlite3`` (or the file named by ``SESSION_DB``); set ``SESSION_SECRET``
(without it a random secret is kept beside the database, as in ``examples/app.py``).
Needs ``pip install wsgisession[bottle]``.
"""

from __future__ import annotations

import html
import os
import sys
from typing import Any

import bottle

from wsgisession import Session, SessionMiddleware, Store
from wsgisession.integrations.bottle import SessionPlugin

try:
    from examples.app import check_password, load_secret
except ImportError:  # run as a script: examples/ is on sys.path, the repository root is not
    from app import check_password, load_secret  # type: ignore[no-redef]

DATABASE = os.environ.get("SESSION_DB", "sessions.sqlite3")


def page(title: str, body: str) -> str:
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title></head>'
        f"<body><h1>{html.escape(title)}</h1>{body}</body></html>"
    )


def login_page(session: Session, message: str = "") -> str:
    notes = "".join(f'<p class="msg">{html.escape(text)}</p>' for _, text in session.pop_flashes())
    if message:
        notes += f'<p class="msg error">{html.escape(message)}</p>'
    return page(
        "Log in",
        f'{notes}<form method="post" action="/login">'
        f'<input type="hidden" name="csrf_token" value="{html.escape(session.csrf_token)}">'
        '<p><label>Username <input name="username" autocomplete="username"></label></p>'
        '<p><label>Password <input name="password" type="password" autocomplete="current-password"></label></p>'
        '<p><button type="submit">Log in</button></p></form>',
    )


def make_app(secret: str | None = None, store: Store | str | None = None) -> SessionMiddleware:
    """The Bottle application wrapped in SessionMiddleware (SQLite at ``DATABASE`` by default)."""
    if secret is None:
        secret = load_secret(DATABASE)
    if store is None:
        store = f"sqlite:///{DATABASE}"
    web = bottle.Bottle()
    web.install(SessionPlugin())  # routes that take a `session` argument get the session

    @web.get("/login")
    def show_login(session: Session) -> str:
        return login_page(session)

    @web.post("/login")
    def login(session: Session) -> str:
        form = bottle.request.forms
        if not session.check_csrf(form.getunicode("csrf_token")):
            bottle.response.status = 403
            return login_page(session, "The form expired; please try again.")
        username = form.getunicode("username", default="")
        user_id = check_password(username, form.getunicode("password", default=""))
        if user_id is None:
            bottle.response.status = 401
            return login_page(session, "Invalid username or password.")
        session.login(user_id)  # a new session ID (fixation defence) and CSRF token, bound to the user
        session["username"] = username
        raise bottle.HTTPResponse(status=303, headers={"Location": "/dashboard"})

    @web.get("/dashboard")
    def dashboard(session: Session) -> str:
        if session.user_id is None:
            bottle.response.status = 401
            return page("Please log in first", '<p><a href="/login">Log in</a></p>')
        session["visits"] = session.get("visits", 0) + 1
        bottle.response.set_header("Cache-Control", "no-store")
        return page(
            f"Welcome, {session['username']}",
            f"<p>User ID: {html.escape(session.user_id)}</p>"
            f"<p>Visits this session: {session['visits']}</p>"
            '<form method="post" action="/logout">'
            f'<input type="hidden" name="csrf_token" value="{html.escape(session.csrf_token)}">'
            '<button type="submit">Log out</button></form>',
        )

    @web.post("/logout")
    def logout(session: Session) -> str:
        if not session.check_csrf(bottle.request.forms.getunicode("csrf_token")):
            bottle.response.status = 403
            return page("Forbidden", "<p>Missing or wrong CSRF token.</p>")
        session.destroy()
        session.flash("Logged out")
        raise bottle.HTTPResponse(status=303, headers={"Location": "/login"})

    return SessionMiddleware(web, secret=secret, store=store)


def __getattr__(name: str) -> Any:
    # The module-level ``app`` (``examples.bottle_app:app`` for gunicorn), built on
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
