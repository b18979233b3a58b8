"""The reference app (log in, see a dashboard, log out) as a Flask application.

Run it with ``python examples/flask_app.py [PORT]`` and open
http://127.0.0.1:8000. Demo user: ``admin`` / ``123``. Sessions live in
``sessions.sqlite3`` (or the file named by ``SESSION_DB``); set ``SESSION_SECRET``
(without it a random secret is kept beside the database, as in ``examples/app.py``).
Needs ``pip install wsgisession[flask]``.
"""

from __future__ import annotations

from typing import cast

import flask

from wsgisession import Store, get_session
from wsgisession.integrations.flask import current_session, init_app

try:
    from examples import _common as common
except ImportError:  # run as a script: examples/ is on sys.path, the repository root is not
    import _common as common  # type: ignore[no-redef]

DATABASE = common.DATABASE


def respond(reply: common.Reply) -> flask.Response:
    return flask.Response(reply.body, reply.status, list(reply.headers), content_type=reply.content_type)


def make_app(
    secret: str | None = None, store: Store | str | None = None, throttle: common.LoginThrottle | None = None
) -> flask.Flask:
    """The Flask application, its wsgi_app wrapped in SessionMiddleware (SQLite at ``DATABASE`` by default)."""
    secret, store = common.session_settings(secret, store, DATABASE)
    gate = common.login_gate(secret, throttle, DATABASE)
    web = flask.Flask(__name__)
    init_app(web, secret=secret, store=store)  # flask.session is ours

    @web.get("/")
    def home() -> flask.Response:
        return respond(common.home())

    @web.get("/login")
    def show_login() -> flask.Response:
        return respond(gate.page(flask.request.environ))

    @web.post("/login")
    def login() -> flask.Response:
        form = flask.request.form
        outcome = gate.attempt(
            flask.request.environ, form.get("csrf_token"), form.get("username", ""), form.get("password", "")
        )
        if isinstance(outcome, common.Reply):
            return respond(outcome)
        session = current_session()  # flask.session, typed as a FlaskSession (login(), csrf_token...)
        session.login(outcome.user_id)  # a new session ID (fixation defence) and CSRF token, bound to the user
        session["username"] = outcome.username
        return respond(outcome.reply)

    @web.get("/dashboard")
    def dashboard() -> flask.Response:
        session = current_session()
        if session.user_id is None:
            return respond(common.log_in_first())
        session["visits"] = session.get("visits", 0) + 1
        return respond(
            common.dashboard(
                session["username"],
                session.user_id,
                session["visits"],
                session.csrf_token,
                get_session(flask.request.environ).other_sessions(),  # the core Session, under flask.session
                cast("list[tuple[str, str]]", flask.get_flashed_messages(with_categories=True)),
            )
        )

    @web.post("/logout-others")
    def logout_others() -> flask.Response:
        session = current_session()
        if session.user_id is None or not session.check_csrf(flask.request.form.get("csrf_token")):
            return respond(common.forbidden())
        flask.flash(common.ended_message(get_session(flask.request.environ).end_other_sessions()))
        return respond(common.redirect("/dashboard"))

    @web.post("/logout")
    def logout() -> flask.Response:
        session = current_session()
        if not session.check_csrf(flask.request.form.get("csrf_token")):
            return respond(common.forbidden())
        session.destroy()  # nothing stored is left; "Logged out" rides in a cookie of its own
        return respond(common.logged_out(flask.request.environ))

    @web.errorhandler(404)
    def not_found(error: Exception) -> flask.Response:
        return respond(common.not_found())

    return web


__getattr__ = common.lazy_app(make_app, globals())  # ``examples.flask_app:app`` for gunicorn


if __name__ == "__main__":
    common.serve(make_app())
