"""The reference app: log in, see a dashboard, log out.

Run it with ``python examples/app.py`` and open http://127.0.0.1:8000, or
under gunicorn with ``gunicorn -w 4 examples.app:app``. Demo user: ``admin``
with password ``123``. Sessions live in SQLite, in ``sessions.sqlite3`` in
the working directory (``SESSION_DB`` names another file).

Set ``SESSION_SECRET`` in production. Without it a random secret is made
once and kept (mode 0600) in ``session-secret.txt`` beside the database, so
every worker process shares it.

Plain WSGI and WebOb, and only wsgisession's public API.
"""

from __future__ import annotations

import hashlib
import hmac
import html
import os
import secrets
import sys
import time
import warnings
from pathlib import Path
from typing import Any

from webob import Request, Response

from wsgisession import Session, SessionMiddleware, get_session

DATABASE = os.environ.get("SESSION_DB", "sessions.sqlite3")

# -- users -----------------------------------------------------------------------

# username -> (user ID, salt, scrypt hash of the password). Never the password.
USERS: dict[str, tuple[str, bytes, bytes]] = {}
_DUMMY_SALT = secrets.token_bytes(16)


def _hash_password(password: str, salt: bytes) -> bytes:
    return hashlib.scrypt(password.encode("utf-8"), salt=salt, n=2**14, r=8, p=1, dklen=32)


def add_user(username: str, password: str, user_id: str | None = None) -> None:
    """Register a user; the password is kept only as a salted scrypt hash."""
    salt = secrets.token_bytes(16)
    USERS[username] = (user_id or username, salt, _hash_password(password, salt))


def check_password(username: str, password: str) -> str | None:
    """The user's ID if *password* is right, else ``None``.

    An unknown user costs the same hash as a known one, so response times do
    not tell which usernames exist.
    """
    user = USERS.get(username)
    digest = _hash_password(password, user[1] if user else _DUMMY_SALT)
    if user is not None and hmac.compare_digest(digest, user[2]):
        return user[0]
    return None


add_user("admin", "123", "admin123")  # the demo user

# -- pages -----------------------------------------------------------------------

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 34rem; margin: 3rem auto; padding: 0 1rem; color: #1d2430; }}
h1 {{ font-size: 1.6rem; }} h2 {{ font-size: 1.1rem; margin-top: 0; }}
label {{ display: block; margin: .6rem 0 .2rem; }}
input, button {{ font: inherit; padding: .45rem .7rem; border: 1px solid #b8c0cc; border-radius: 6px; }}
button {{ background: #2f5bd3; color: white; border-color: #2f5bd3; cursor: pointer; margin-top: .8rem; }}
.flash {{ padding: .6rem .9rem; border-radius: 6px; background: #e8f0ff; }}
.flash.error {{ background: #ffe9e9; }}
.card {{ padding: 1rem 1.2rem; border: 1px solid #dde2ea; border-radius: 8px; }}
</style></head><body><h1>{title}</h1>{flashes}{body}</body></html>"""


def page(title: str, body: str, session: Session | None = None, status: int = 200, message: str = "") -> Response:
    """An HTML page; flash messages waiting in *session* are shown once."""
    notes = [("error", message)] if message else []
    if session is not None:
        notes += session.pop_flashes()
    flashes = "".join(f'<p class="flash {html.escape(c)}" role="status">{html.escape(m)}</p>' for c, m in notes)
    text = PAGE.format(title=html.escape(title), flashes=flashes, body=body)
    return Response(text, status=status, charset="utf-8", content_type="text/html")


def login_form(session: Session) -> str:
    return (
        '<form method="post" action="/login" class="card">'
        f'<input type="hidden" name="csrf_token" value="{html.escape(session.csrf_token)}">'
        '<label for="username">Username</label><input id="username" name="username" autocomplete="username" required>'
        '<label for="password">Password</label>'
        '<input id="password" name="password" type="password" autocomplete="current-password" required>'
        '<br><button type="submit">Log in</button></form>'
    )


def _ago(epoch: float) -> str:
    seconds = max(0, int(time.time() - epoch))
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size:
            n = seconds // size
            return f"{n} {unit}{'' if n == 1 else 's'} ago"
    return "just now"


def dashboard(session: Session) -> str:
    token = html.escape(session.csrf_token)
    others = session.other_sessions()
    rows = "".join(
        f"<li>{html.escape(o.user_agent or 'unknown browser')} — signed in {_ago(o.created_at)},"
        f" last active {_ago(o.last_seen)}</li>"
        for o in others
    )
    devices = (
        f'<h2>Your other active sessions</h2><ul id="other-sessions">{rows}</ul>'
        '<form method="post" action="/logout-others">'
        f'<input type="hidden" name="csrf_token" value="{token}">'
        '<button type="submit">Log out other devices</button></form>'
        if others
        else '<p id="other-sessions">No other active sessions.</p>'
    )
    return (
        '<div class="card">'
        f"<p>User ID: <code>{html.escape(str(session.user_id))}</code></p>"
        f'<p>Visits this session: <strong id="visits">{session["visits"]}</strong></p>'
        '<form method="post" action="/logout">'
        f'<input type="hidden" name="csrf_token" value="{token}">'
        '<button type="submit">Log out</button></form></div>'
        f'<div class="card" style="margin-top:1rem">{devices}</div>'
    )


def routes(environ: dict[str, Any], start_response: Any) -> Any:
    """The app itself; the session comes from the middleware around it."""
    request = Request(environ)
    session = get_session(environ)
    path, method = request.path_info, request.method
    if path == "/" and method == "GET":
        response = page("wsgisession demo", '<p><a href="/login">Log in</a> · <a href="/dashboard">Dashboard</a></p>')
    elif path == "/login" and method == "GET":
        response = page("Log in", login_form(session), session)
    elif path == "/login" and method == "POST":
        if not session.check_csrf(request.POST.get("csrf_token")):
            response = page("Log in", login_form(session), session, 403, "The form expired; please try again.")
        else:
            username = request.POST.get("username", "")
            user_id = check_password(username, request.POST.get("password", ""))
            if user_id is None:
                response = page("Log in", login_form(session), session, 401, "Invalid username or password.")
            else:
                # A new session ID and CSRF token, and the session indexed under
                # the user ("log out other devices"); a new ID at login defeats
                # session fixation.
                session.login(user_id)
                session["username"] = username
                response = Response(status=303, location="/dashboard")
    elif path == "/dashboard" and method == "GET":
        if session.user_id is None:
            response = page("Please log in first", '<p><a href="/login">Log in</a></p>', status=401)
        else:
            session["visits"] = session.get("visits", 0) + 1
            response = page(f"Welcome, {session['username']}", dashboard(session), session)
        response.cache_control = "no-store"
    elif path == "/logout-others" and method == "POST":
        if session.user_id is None or not session.check_csrf(request.POST.get("csrf_token")):
            response = page("Forbidden", "<p>Missing or wrong CSRF token.</p>", status=403)
        else:
            ended = session.end_other_sessions()
            session.flash(f"Logged out {ended} other session{'' if ended == 1 else 's'}")
            response = Response(status=303, location="/dashboard")
    elif path == "/logout" and method == "POST":
        if not session.check_csrf(request.POST.get("csrf_token")):
            response = page("Forbidden", "<p>Missing or wrong CSRF token.</p>", status=403)
        else:
            session.destroy()
            session.flash("Logged out")
            response = Response(status=303, location="/login")
    else:
        response = page("Not found", '<p><a href="/">Home</a></p>', status=404)
    return response(environ, start_response)


# -- configuration ------------------------------------------------------------------


def load_secret(database: str) -> str:
    """SESSION_SECRET, or a random secret made once and shared by every worker."""
    secret = os.environ.get("SESSION_SECRET")
    if secret:
        return secret
    path = Path(database).resolve().parent / "session-secret.txt"
    if not path.exists():
        # Written whole under a temporary name, then linked into place: a
        # worker starting at the same moment reads a complete file or none.
        tmp = path.with_name(f".session-secret.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
        try:
            os.link(tmp, path)
            warnings.warn(f"SESSION_SECRET is not set: using a random secret kept in {path}", stacklevel=2)
        except FileExistsError:
            pass  # another worker made it first; use theirs
        finally:
            tmp.unlink()
    return path.read_text().strip()


def make_app(secret: str | None = None, store: Any = None, **options: Any) -> SessionMiddleware:
    """The reference app wrapped in SessionMiddleware (SQLite at ``DATABASE`` by default)."""
    return SessionMiddleware(
        routes,
        secret=secret if secret is not None else load_secret(DATABASE),
        store=store if store is not None else f"sqlite:///{DATABASE}",
        **options,
    )


def __getattr__(name: str) -> Any:
    # ``examples.app:app`` for gunicorn, built on first use so that importing
    # this module (for check_password, say) touches no file.
    if name == "app":
        globals()["app"] = built = make_app()
        return built
    raise AttributeError(name)


if __name__ == "__main__":
    from wsgiref.simple_server import make_server

    port = int(sys.argv[1]) if len(sys.argv) > 1 else 8000
    with make_server("127.0.0.1", port, make_app()) as server:
        print(f"Serving on http://127.0.0.1:{port}  (demo user: admin / 123)", flush=True)
        server.serve_forever()
