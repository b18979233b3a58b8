"""The reference app (log in, see a dashboard, log out) as a Bottle application.

Run it with ``python examples/bottle_app.py [PORT]`` and open
http://127.0.0.1:8000/login. Demo user: ``admin`` / ``123``. Sessions live in
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
    from examples.app import check_password
except ImportError:  # run as a script: examples/ is on sys.path, the repository root is not
    import _common as common  # type: ignore[no-redef]
    from app import check_password  # type: ignore[no-redef]

DATABASE = common.DATABASE


def flashes(session: Session) -> list[str]:
    return [text for _, text in session.pop_flashes()]


def make_app(secret: str | None = None, store: Store | str | None = None) -> SessionMiddleware:
    """The Bottle application wrapped in SessionMiddleware (SQLite at ``DATABASE`` by default)."""
    secret, store = common.session_settings(secret, store, DATABASE)
    web = bottle.Bottle()
    web.install(SessionPlugin())  # routes that take a `session` argument get the session

    @web.get("/login")
    def show_login(session: Session) -> str:
        return common.login_page(flashes(session), session.csrf_token)

    @web.post("/login")
    def login(session: Session) -> str:
        form = bottle.request.forms
        if not session.check_csrf(form.getunicode("csrf_token")):
            bottle.response.status = 403
            return common.login_page(flashes(session), session.csrf_token, "The form expired; please try again.")
        username = form.getunicode("username", default="")
        user_id = check_password(username, form.getunicode("password", default=""))
        if user_id is None:
            bottle.response.status = 401
            return common.login_page(flashes(session), session.csrf_token, "Invalid username or password.")
        session.login(user_id)  # a new session ID (fixation defence) and CSRF token, bound to the user
        session["username"] = username
        raise bottle.HTTPResponse(status=303, headers={"Location": "/dashboard"})

    @web.get("/dashboard")
    def dashboard(session: Session) -> str:
        if session.user_id is None:
            bottle.response.status = 401
            return common.page(*common.LOG_IN_FIRST)
        session["visits"] = session.get("visits", 0) + 1
        bottle.response.set_header("Cache-Control", "no-store")
        return common.dashboard_page(session["username"], session.user_id, session["visits"], session.csrf_token)

    @web.post("/logout")
    def logout(session: Session) -> str:
        if not session.check_csrf(bottle.request.forms.getunicode("csrf_token")):
            bottle.response.status = 403
            return common.page(*common.FORBIDDEN)
        session.destroy()
        session.flash("Logged out")
        raise bottle.HTTPResponse(status=303, headers={"Location": "/login"})

    return SessionMiddleware(web, secret=secret, store=store)


__getattr__ = common.lazy_app(make_app, globals())  # ``examples.bottle_app:app`` for gunicorn


if __name__ == "__main__":
    common.serve(make_app())
