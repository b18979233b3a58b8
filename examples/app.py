"""The reference app: log in, see a dashboard, log out (here, or on every other device).

Run it with ``python examples/app.py`` and open http://127.0.0.1:8000, or
under gunicorn with ``gunicorn -w 4 examples.app:app``. Demo user: ``admin``
(user ID ``admin``) with password ``123``. Sessions live in SQLite, in
``sessions.sqlite3`` in the working directory (``SESSION_DB`` names another
file); failed logins are counted in ``login-throttle.sqlite3`` beside it.

Set ``SESSION_SECRET`` in production. Without it a random secret is made
once and kept (mode 0600) in ``session-secret.txt`` beside the database, so
every worker process shares it (``wsgisession check --secret-file`` reads it).

Plain WSGI and WebOb, through ``wsgisession.integrations.webob``. No session
is stored before a login: the login form is guarded by a signed cookie of
its own (see ``examples/_common.py``, which the Bottle, Flask and Pyramid
versions share).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from webob import Response

from wsgisession import SessionMiddleware, Store
from wsgisession.integrations.webob import SessionRequest, wsgify

try:
    from examples import _common as common
except ImportError:  # run as a script: examples/ is on sys.path, the repository root is not
    import _common as common  # type: ignore[no-redef]

DATABASE = common.DATABASE


def make_app(
    secret: str | None = None,
    store: Store | str | None = None,
    throttle: common.LoginThrottle | None = None,
    **options: Any,
) -> SessionMiddleware:
    """The reference app wrapped in SessionMiddleware (SQLite at ``DATABASE`` by default).

    *throttle* counts failed logins (by default in ``login-throttle.sqlite3``
    beside ``DATABASE``); *options* go to :class:`~wsgisession.SessionMiddleware`.
    """
    secret, store = common.session_settings(secret, store, DATABASE)
    gate = common.login_gate(secret, throttle, DATABASE)

    def show_login(request: SessionRequest) -> common.Reply:
        return gate.page(request.environ)

    def login(request: SessionRequest) -> common.Reply:
        form = request.POST
        outcome = gate.attempt(
            request.environ, form.get("csrf_token"), form.get("username", ""), form.get("password", "")
        )
        if isinstance(outcome, common.Reply):
            return outcome
        # A new session ID (fixation defence) and CSRF token, and the session
        # indexed under the user for "log out other devices".
        request.session.login(outcome.user_id)
        request.session["username"] = outcome.username
        return outcome.reply

    def dashboard(request: SessionRequest) -> common.Reply:
        session = request.session
        if session.user_id is None:
            return common.log_in_first()
        session["visits"] = session.get("visits", 0) + 1
        return common.dashboard(
            session["username"],
            session.user_id,
            session["visits"],
            session.csrf_token,
            session.other_sessions(),
            session.pop_flashes(),
        )

    def logout_others(request: SessionRequest) -> common.Reply:
        if request.user_id is None or not request.check_csrf():
            return common.forbidden()
        request.session.flash(common.ended_message(request.session.end_other_sessions()))
        return common.redirect("/dashboard")

    def logout(request: SessionRequest) -> common.Reply:
        if not request.check_csrf():
            return common.forbidden()
        request.session.destroy()  # nothing stored is left; "Logged out" rides in a cookie of its own
        return common.logged_out(request.environ)

    views: dict[tuple[str, str], Callable[[SessionRequest], common.Reply]] = {
        ("GET", "/"): lambda request: common.home(),
        ("GET", "/login"): show_login,
        ("POST", "/login"): login,
        ("GET", "/dashboard"): dashboard,
        ("POST", "/logout-others"): logout_others,
        ("POST", "/logout"): logout,
    }

    @wsgify
    def routes(request: SessionRequest) -> Response:
        view = views.get((request.method, request.path_info))
        return (view(request) if view else common.not_found()).to_webob()

    return SessionMiddleware(routes, secret=secret, store=store, **options)


__getattr__ = common.lazy_app(make_app, globals())  # ``examples.app:app`` for gunicorn


if __name__ == "__main__":
    common.serve(make_app())
