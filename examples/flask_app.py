"""The reference app (log in, see a dashboard, log out) as a Flask application.

Run it with ``python examples/flask_app.py [PORT]`` and open
http://127.0.0.1:8000/login. Demo user: ``admin`` / ``123``. Sessions live in
``sessions.sqlite3`` (or the file named by ``SESSION_DB``); set ``SESSION_SECRET``
(without it a random secret is kept beside the database, as in ``examples/app.py``).
Needs ``pip install wsgisession[flask]``.
"""

from __future__ import annotations

import html
import os
import sys
from typing import Any

import flask
from flask.typing import ResponseReturnValue

from wsgisession import Store
from wsgisession.integrations.flask import current_session, init_app

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


def login_page(message: str = "") -> str:
    notes = "".join(f'<p class="msg">{html.escape(text)}</p>' for text in flask.get_flashed_messages())
    if message:
        notes += f'<p class="msg error">{html.escape(message)}</p>'
    return page(
        "Log in",
        f'{notes}<form method="post" action="/login">'
        f'<input type="hidden" name="csrf_token" value="{html.escape(current_session().csrf_token)}">'
        '<p><label>Username <input name="username" autocomplete="username"></label></p>'
        '<p><label>Password <input name="password" type="password" autocomplete="current-password"></label></p>'
        '<p><button type="submit">Log in</button></p></form>',
    )


def make_app(secret: str | None = None, store: Store | str | None = None) -> flask.Flask:
    """The Flask application, its wsgi_app wrapped in SessionMiddleware (SQLite at ``DATABASE`` by default)."""
    if secret is None:
        secret = load_secret(DATABASE)
    if store is None:
        store = f"sqlite:///{DATABASE}"
    web = flask.Flask(__name__)
    init_app(web, secret=secret, store=store)  # flask.session is ours

    @web.get("/login")
    def show_login() -> str:
        return login_page()

    @web.post("/login")
    def login() -> ResponseReturnValue:
        session = current_session()  # flask.session, typed as a FlaskSession (login(), csrf_token...)
        form = flask.request.form
        if not session.check_csrf(form.get("csrf_token")):
            return login_page("The form expired; please try again."), 403
        username = form.get("username", "")
        user_id = check_password(username, form.get("password", ""))
        if user_id is None:
            return login_page("Invalid username or password."), 401
        session.login(user_id)  # a new session ID (fixation defence) and CSRF token, bound to the user
        session["username"] = username
        return flask.redirect("/dashboard", 303)

    @web.get("/dashboard")
    def dashboard() -> ResponseReturnValue:
        session = current_session()
        if session.user_id is None:
            return page("Please log in first", '<p><a href="/login">Log in</a></p>'), 401
        session["visits"] = session.get("visits", 0) + 1
        response = flask.make_response(
            page(
                f"Welcome, {session['username']}",
                f"<p>User ID: {html.escape(session.user_id)}</p>"
                f"<p>Visits this session: {session['visits']}</p>"
                '<form method="post" action="/logout">'
                f'<input type="hidden" name="csrf_token" value="{html.escape(session.csrf_token)}">'
                '<button type="submit">Log out</button></form>',
            )
        )
        response.headers["Cache-Control"] = "no-store"
        return response

    @web.post("/logout")
    def logout() -> ResponseReturnValue:
        session = current_session()
        if not session.check_csrf(flask.request.form.get("csrf_token")):
            return page("Forbidden", "<p>Missing or wrong CSRF token.</p>"), 403
        session.destroy()
        flask.flash("Logged out")
        return flask.redirect("/login", 303)

    return web


def __getattr__(name: str) -> Any:
    # The module-level ``app`` (``examples.flask_app:app`` for gunicorn), built on
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
