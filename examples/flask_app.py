"""The reference app (log in, see a dashboard, log out) as a Flask application.

Run it with ``python examples/flask_app.py [PORT]`` and open
http://127.0.0.1:8000/login. Demo user: ``admin`` / ``123``. Sessions live in
``sessions.sqlite3`` (or the file named by ``SESSION_DB``); set ``SESSION_SECRET``
(without it a random secret is kept beside the database, as in ``examples/app.py``).
Needs ``pip install wsgisession[flask]``.
"""

from __future__ import annotations

import flask
from flask.typing import ResponseReturnValue

from wsgisession import Store
from wsgisession.integrations.flask import current_session, init_app

try:
    from examples import _common as common
    from examples.app import check_password
except ImportError:  # run as a script: examples/ is on sys.path, the repository root is not
    import _common as common  # type: ignore[no-redef]
    from app import check_password  # type: ignore[no-redef]

DATABASE = common.DATABASE


def login_form(message: str = "") -> str:
    return common.login_page(flask.get_flashed_messages(), current_session().csrf_token, message)


def make_app(secret: str | None = None, store: Store | str | None = None) -> flask.Flask:
    """The Flask application, its wsgi_app wrapped in SessionMiddleware (SQLite at ``DATABASE`` by default)."""
    secret, store = common.session_settings(secret, store, DATABASE)
    web = flask.Flask(__name__)
    init_app(web, secret=secret, store=store)  # flask.session is ours

    @web.get("/login")
    def show_login() -> str:
        return login_form()

    @web.post("/login")
    def login() -> ResponseReturnValue:
        session = current_session()  # flask.session, typed as a FlaskSession (login(), csrf_token...)
        form = flask.request.form
        if not session.check_csrf(form.get("csrf_token")):
            return login_form("The form expired; please try again."), 403
        username = form.get("username", "")
        user_id = check_password(username, form.get("password", ""))
        if user_id is None:
            return login_form("Invalid username or password."), 401
        session.login(user_id)  # a new session ID (fixation defence) and CSRF token, bound to the user
        session["username"] = username
        return flask.redirect("/dashboard", 303)

    @web.get("/dashboard")
    def dashboard() -> ResponseReturnValue:
        session = current_session()
        if session.user_id is None:
            return common.page(*common.LOG_IN_FIRST), 401
        session["visits"] = session.get("visits", 0) + 1
        response = flask.make_response(
            common.dashboard_page(session["username"], session.user_id, session["visits"], session.csrf_token)
        )
        response.headers["Cache-Control"] = "no-store"
        return response

    @web.post("/logout")
    def logout() -> ResponseReturnValue:
        session = current_session()
        if not session.check_csrf(flask.request.form.get("csrf_token")):
            return common.page(*common.FORBIDDEN), 403
        session.destroy()
        flask.flash("Logged out")
        return flask.redirect("/login", 303)

    return web


__getattr__ = common.lazy_app(make_app, globals())  # ``examples.flask_app:app`` for gunicorn


if __name__ == "__main__":
    common.serve(make_app())
