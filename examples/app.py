"""The reference app: log in, see a dashboard, log out.

Run it with ``python examples/app.py`` and open http://127.0.0.1:8000.
Demo user: ``admin`` / ``123``. Sessions live in ``sessions.sqlite3`` in the
working directory. Set ``SESSION_SECRET`` in production; without it a random
secret is made once and kept in ``session-secret.txt`` beside the database.
"""

from __future__ import annotations

import hashlib
import hmac
import html
import os
import secrets
import sys
import warnings
from pathlib import Path
from typing import Any

from webob import Request, Response

from wsgisession import SessionMiddleware, get_session

DATABASE = os.environ.get("SESSION_DB", "sessions.sqlite3")


def _hash_password(password: str, salt: bytes) -> bytes:
    return hashlib.scrypt(password.encode(), salt=salt, n=2**14, r=8, p=1)


# username -> (user id, salt, scrypt hash). The demo user's password is "123".
_SALT = b"demo-salt-admin-"
USERS: dict[str, tuple[str, bytes, bytes]] = {"admin": ("admin123", _SALT, _hash_password("123", _SALT))}


def check_password(username: str, password: str) -> str | None:
    """The user's ID if the password is right, else None (constant-time compare)."""
    user = USERS.get(username)
    salt = user[1] if user else _SALT
    digest = _hash_password(password, salt)
    if user is not None and hmac.compare_digest(digest, user[2]):
        return user[0]
    return None


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 32rem; margin: 3rem auto; padding: 0 1rem; color: #222; }}
input, button {{ font: inherit; padding: .4rem .6rem; margin: .2rem 0; }}
.msg {{ padding: .5rem .8rem; background: #eef; border-radius: 4px; }}
.error {{ background: #fee; }}
</style></head><body><h1>{title}</h1>{body}</body></html>"""


def page(title: str, body: str, status: int = 200) -> Response:
    return Response(PAGE.format(title=html.escape(title), body=body), status=status, charset="utf-8")


def login_form(message: str = "") -> str:
    note = f'<p class="msg error">{html.escape(message)}</p>' if message else ""
    return (
        f"{note}<form method="
        '"post" action="/login">'
        '<p><label>Username <input name="username" autocomplete="username"></label></p>'
        '<p><label>Password <input name="password" type="password" autocomplete="current-password"></label></p>'
        '<p><button type="submit">Log in</button></p></form>'
    )


def routes(environ: dict[str, Any], start_response: Any) -> Any:
    """The app itself; the session comes from the middleware around it."""
    request = Request(environ)
    session = get_session(environ)
    path, method = request.path_info, request.method
    if path == "/" and method == "GET":
        response = page("wsgisession demo", '<p><a href="/login">Log in</a> · <a href="/dashboard">Dashboard</a></p>')
    elif path == "/login" and method == "GET":
        response = page("Log in", login_form())
    elif path == "/login" and method == "POST":
        user_id = check_password(request.POST.get("username", ""), request.POST.get("password", ""))
        if user_id is None:
            response = page("Log in", login_form("Invalid credentials"), status=401)
        else:
            session.regenerate()  # a new ID at login: fixation defence
            session["user_id"] = user_id
            session["username"] = request.POST["username"]
            response = Response(status=303, location="/dashboard")
    elif path == "/dashboard" and method == "GET":
        if "user_id" not in session:
            response = page("Please log in first", '<p><a href="/login">Log in</a></p>', status=401)
        else:
            session["visits"] = session.get("visits", 0) + 1
            response = page(
                f"Welcome {session['username']}",
                f"<p>User ID: {html.escape(session['user_id'])}</p>"
                f"<p>Visits this session: {session['visits']}</p>"
                '<form method="post" action="/logout"><button type="submit">Log out</button></form>',
            )
            response.cache_control = "no-store"
    elif path == "/logout" and method == "POST":
        session.destroy()
        response = Response(status=303, location="/login")
    else:
        response = page("Not found", "", status=404)
    return response(environ, start_response)


def _secret(database: str) -> str:
    """SESSION_SECRET, or a random secret made once and shared by every worker."""
    secret = os.environ.get("SESSION_SECRET")
    if secret:
        return secret
    path = Path(database).resolve().parent / "session-secret.txt"
    if not path.exists():
        # Write it whole under a temporary name, then link it into place: a
        # second worker starting at the same moment reads a complete file.
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


app = SessionMiddleware(routes, secret=_secret(DATABASE), store=f"sqlite:///{DATABASE}")

if __name__ == "__main__":
    from wsgiref.simple_server import make_server

    port = int(sys.argv[1]) if len(sys.argv) > 1 else 8000
    with make_server("127.0.0.1", port, app) as server:
        print(f"Serving on http://127.0.0.1:{port} (demo user: admin / 123)")
        server.serve_forever()
