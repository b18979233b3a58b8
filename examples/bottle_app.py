"""The reference app (log in, see a dashboard, log out) as a Bottle application.

Run it with ``python examples/bottle_app.py [PORT]`` and open
http://127.0.0.1:8000. Demo user: ``admin`` / ``123``. Sessions live in
``sessions.sqlite3`` (or the file named by ``SESSION_DB``); set ``SESSION_SECRET``
(without it a random secret is kept beside the database, as in ``examples/app.py``).
Needs ``pip install wsgisession[bottle]``.
"""

from __future__ import annotations

import bottle

from wsgisession import Session, SessionMiddleware, Store
from wsgisession.integrations.bottle import SessionPlugin

try:
    from examples import _common as common
except ImportError:  # run as a script: examples/ is on sys.path, the repository root is not
    import _common as common  # type: ignore[no-redef]

DATABASE = common.DATABASE


def respond(reply: common.Reply) -> bottle.HTTPResponse:
    return bottle.HTTPResponse(reply.body, reply.status, [("Content-Type", reply.content_type), *reply.headers])


def form(name: str) -> str:
    return str(bottle.request.forms.getunicode(name, default=""))


def make_app(
    secret: str | None = None, store: Store | str | None = None, throttle: common.LoginThrottle | None = None
) -> SessionMiddleware:
    """The Bottle application wrapped in SessionMiddleware (SQLite at ``DATABASE`` by default)."""
    secret, store = common.session_settings(secret, store, DATABASE)
    gate = common.login_gate(secret, throttle, DATABASE)
    web = bottle.Bottle()
    web.install(SessionPlugin())  # routes that take a `session` argument get the session

    @web.get("/")
    def home() -> bottle.HTTPResponse:
        return respond(common.home())

    @web.get("/login")
    def show_login() -> bottle.HTTPResponse:
        return respond(gate.page(bottle.request.environ))

    @web.post("/login")
    def login(session: Session) -> bottle.HTTPResponse:
        outcome = gate.attempt(bottle.request.environ, form("csrf_token"), form("username"), form("password"))
        if isinstance(outcome, common.Reply):
            return respond(outcome)
        session.login(outcome.user_id)  # a new session ID (fixation defence) and CSRF token, bound to the user
        session["username"] = outcome.username
        return respond(outcome.reply)

    @web.get("/dashboard")
    def dashboard(session: Session) -> bottle.HTTPResponse:
        if session.user_id is None:
            return respond(common.log_in_first())
        session["visits"] = session.get("visits", 0) + 1
        return respond(
            common.dashboard(
                session["username"],
                session.user_id,
                session["visits"],
                session.csrf_token,
                session.other_sessions(),
                session.pop_flashes(),
            )
        )

    @web.post("/logout-others")
    def logout_others(session: Session) -> bottle.HTTPResponse:
        if session.user_id is None or not session.check_csrf(form("csrf_token")):
            return respond(common.forbidden())
        session.flash(common.ended_message(session.end_other_sessions()))
        return respond(common.redirect("/dashboard"))

    @web.post("/logout")
    def logout(session: Session) -> bottle.HTTPResponse:
        if not session.check_csrf(form("csrf_token")):
            return respond(common.forbidden())
        session.destroy()  # nothing stored is left; "Logged out" rides in a cookie of its own
        return respond(common.logged_out(bottle.request.environ))

    @web.error(404)
    def not_found(error: bottle.HTTPError) -> str:
        bottle.response.content_type = common.Reply.content_type
        return common.not_found().body

    return SessionMiddleware(web, secret=secret, store=store)


__getattr__ = common.lazy_app(make_app, globals())  # ``examples.bottle_app:app`` for gunicorn


if __name__ == "__main__":
    common.serve(make_app())
