"""What the four versions of the reference app share, whatever their framework.

Users and their password hashes, the app's secret, the styled pages, and what
guards the login form without a server-side session: a signed double-submit
token and a throttle on failed logins. Nothing here knows a framework: views
read the WSGI environ and return a :class:`Reply` (status, HTML, headers) that
each app turns into its framework's response.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import html
import math
import os
import re
import secrets
import sqlite3
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from webob import Response
from webob.cookies import make_cookie

from wsgisession import SessionInfo

DATABASE = os.environ.get("SESSION_DB", "sessions.sqlite3")

Clock = Callable[[], float]

# -- users -----------------------------------------------------------------------

# username -> (user ID, salt, scrypt hash of the password). Never the password.
USERS: dict[str, tuple[str, bytes, bytes]] = {}
_DUMMY_SALT = secrets.token_bytes(16)


def _hash_password(password: str, salt: bytes) -> bytes:
    return hashlib.scrypt(password.encode("utf-8", "surrogateescape"), salt=salt, n=2**14, r=8, p=1, dklen=32)


def add_user(username: str, password: str, user_id: str | None = None) -> None:
    """Register a user (user ID: *user_id*, else the username); the password is kept only as a salted scrypt hash."""
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


DEMO_USER, DEMO_PASSWORD = "admin", "123"
add_user(DEMO_USER, DEMO_PASSWORD)  # user ID "admin": `wsgisession list --user admin STORE_URL`

# -- configuration ------------------------------------------------------------------


def load_secret(database: str) -> str:
    """SESSION_SECRET, or a random secret made once and shared by every worker.

    The file is ``session-secret.txt`` beside *database*, mode 0600;
    ``wsgisession check --secret-file`` reads it.
    """
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


def session_settings(secret: str | None, store: Any, database: str = DATABASE) -> tuple[str, Any]:
    """The secret and store to use: those given, else the reference app's (SQLite at *database*)."""
    return (
        secret if secret is not None else load_secret(database),
        store if store is not None else f"sqlite:///{database}",
    )


def login_gate(secret: str, throttle: LoginThrottle | None = None, database: str = DATABASE) -> LoginGate:
    """The login form's guard: *throttle*, else one in ``login-throttle.sqlite3`` beside *database*."""
    if throttle is None:
        throttle = LoginThrottle(Path(database).resolve().parent / "login-throttle.sqlite3")
    return LoginGate(secret, throttle)


# -- replies -----------------------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    """A response as the apps share it: each framework's app turns it into its own response."""

    status: int
    body: str = ""
    headers: tuple[tuple[str, str], ...] = ()

    #: The Content-Type of every page.
    content_type = "text/html; charset=utf-8"

    def to_webob(self, response_class: type[Response] = Response) -> Response:
        """The reply as a WebOb response (the reference app's, and Pyramid's, whose Response is one)."""
        response = response_class(body=self.body.encode("utf-8"), status=self.status, content_type="text/html")
        response.charset = "utf-8"
        for name, value in self.headers:
            response.headers.add(name, value)
        return response


def redirect(location: str, *headers: tuple[str, str]) -> Reply:
    """303 See Other to *location*."""
    return Reply(303, "", (("Location", location), *headers))


def is_https(environ: Mapping[str, Any]) -> bool:
    return environ.get("wsgi.url_scheme") == "https"


def cookies(environ: Mapping[str, Any]) -> dict[str, str]:
    """The request's cookies, name -> value (the first of a repeated name), read in linear time."""
    header = environ.get("HTTP_COOKIE", "")
    found: dict[str, str] = {}
    if type(header) is not str or len(header) > 32 * 1024:
        return found  # hostile or broken: as good as no cookies
    for part in header.split(";"):
        name, _, value = part.strip().partition("=")
        found.setdefault(name, value)
    return found


def _cookie_name(name: str, secure: bool) -> str:
    # Over https the __Host- prefix: no subdomain and no plain-http page can set it.
    return f"__Host-{name}" if secure else name


def _set_cookie(name: str, value: str | None, max_age: int, secure: bool) -> tuple[str, str]:
    header = make_cookie(
        _cookie_name(name, secure), value, max_age=max_age, path="/", secure=secure, httponly=True, samesite="Lax"
    )
    return ("Set-Cookie", str(header))


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


def page(
    title: str,
    body: str,
    *,
    status: int = 200,
    flashes: Iterable[tuple[str, str]] = (),
    message: str = "",
    headers: Iterable[tuple[str, str]] = (),
) -> Reply:
    """An HTML page: *flashes* are ``(category, text)`` pairs; *message* is an error shown first."""
    notes = [("error", message)] if message else []
    notes += flashes
    shown = "".join(f'<p class="flash {html.escape(c)}" role="status">{html.escape(m)}</p>' for c, m in notes)
    return Reply(status, PAGE.format(title=html.escape(title), flashes=shown, body=body), tuple(headers))


def home() -> Reply:
    return page("wsgisession demo", '<p><a href="/login">Log in</a> · <a href="/dashboard">Dashboard</a></p>')


def not_found() -> Reply:
    return page("Not found", '<p><a href="/">Home</a></p>', status=404)


def log_in_first() -> Reply:
    return page("Please log in first", '<p><a href="/login">Log in</a></p>', status=401)


def forbidden() -> Reply:
    return page("Forbidden", "<p>Missing or wrong CSRF token.</p>", status=403)


def _ago(epoch: float) -> str:
    seconds = max(0, int(time.time() - epoch))
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size:
            n = seconds // size
            return f"{n} {unit}{'' if n == 1 else 's'} ago"
    return "just now"


def dashboard(
    username: str,
    user_id: str,
    visits: int,
    csrf_token: str,
    others: Iterable[SessionInfo],
    flashes: Iterable[tuple[str, str]] = (),
) -> Reply:
    """The logged-in user's page: their ID, the visit count, their other sessions, the log-out buttons."""
    token = html.escape(csrf_token)
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
        if rows
        else '<p id="other-sessions">No other active sessions.</p>'
    )
    body = (
        '<div class="card">'
        f"<p>User ID: <code>{html.escape(user_id)}</code></p>"
        f'<p>Visits this session: <strong id="visits">{visits}</strong></p>'
        '<form method="post" action="/logout">'
        f'<input type="hidden" name="csrf_token" value="{token}">'
        '<button type="submit">Log out</button></form></div>'
        f'<div class="card" style="margin-top:1rem">{devices}</div>'
    )
    return page(f"Welcome, {username}", body, flashes=flashes, headers=[("Cache-Control", "no-store")])


def ended_message(ended: int) -> str:
    """The flash after "log out other devices"."""
    return f"Logged out {ended} other session{'' if ended == 1 else 's'}"


# -- the notice after logout ---------------------------------------------------------

# The session is gone after logout, so "Logged out" travels in a cookie of its
# own, read and deleted by the login page: no anonymous session is stored to
# carry it. The cookie holds a code from this table, never text to display.
_NOTICE = "notice"
_NOTICES = {"logged-out": "Logged out"}
_NOTICE_MAX_AGE = 60


def logged_out(environ: Mapping[str, Any]) -> Reply:
    """After logout: to the login page, which says "Logged out" once."""
    return redirect("/login", _set_cookie(_NOTICE, "logged-out", _NOTICE_MAX_AGE, is_https(environ)))


# -- the login form's token ---------------------------------------------------------


_NONCE = re.compile(r"[A-Za-z0-9_-]{43}")  # secrets.token_urlsafe(32)


class LoginForms:
    """Signed double-submit tokens: the login form is protected without a server-side session.

    A random nonce goes in a short-lived cookie (HttpOnly, SameSite=Lax,
    ``__Host-`` and Secure over https), and the form carries
    ``nonce.timestamp.mac``: an HMAC-SHA256 of the nonce and the time, under a
    key derived from the app's secret for this purpose alone. A POST is
    accepted only if its form value is authentic, younger than *max_age*
    seconds and names the nonce of the cookie the browser sent (all compared in
    constant time). Another site can read neither the cookie nor the page, and
    cannot make a form value without the secret. What double-submit alone
    cannot stop is a cookie planted by a subdomain or over plain http (with a
    form value the attacker fetched for it): over https the ``__Host-`` name
    rules that out.
    """

    COOKIE = "login_csrf"
    _LABEL = b"wsgisession example: login form token"

    def __init__(self, secret: str, *, max_age: int = 3600, clock: Clock = time.time) -> None:
        self._key = hmac.new(secret.encode("utf-8"), self._LABEL, hashlib.sha256).digest()
        self.max_age = max_age
        self._clock = clock

    def _mac(self, nonce: str, stamp: str) -> str:
        digest = hmac.new(self._key, f"{nonce}.{stamp}".encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    @staticmethod
    def _well_formed(nonce: object) -> bool:
        return type(nonce) is str and _NONCE.fullmatch(nonce) is not None

    def issue(self, environ: Mapping[str, Any]) -> tuple[str, tuple[str, str]]:
        """A form value and the Set-Cookie header to send with it.

        The browser's nonce is kept if it has one, so two login tabs both work.
        """
        secure = is_https(environ)
        nonce = cookies(environ).get(_cookie_name(self.COOKIE, secure))
        if not self._well_formed(nonce):
            nonce = secrets.token_urlsafe(32)
        assert nonce is not None
        stamp = str(int(self._clock()))
        return f"{nonce}.{stamp}.{self._mac(nonce, stamp)}", _set_cookie(self.COOKIE, nonce, self.max_age, secure)

    def check(self, environ: Mapping[str, Any], value: object) -> bool:
        """Whether *value* (the form's field) is a live token for the nonce in the request's cookie."""
        nonce = cookies(environ).get(_cookie_name(self.COOKIE, is_https(environ)))
        if type(value) is not str or not self._well_formed(nonce):
            return False
        assert nonce is not None
        parts = value.split(".")
        if len(parts) != 3 or not (parts[1].isascii() and parts[1].isdigit() and len(parts[1]) <= 12):
            return False
        sent, stamp, mac = parts
        if not self._well_formed(sent):
            return False
        authentic = hmac.compare_digest(
            self._mac(sent, stamp).encode(), mac.encode("utf-8", "surrogateescape")
        ) & hmac.compare_digest(sent.encode(), nonce.encode())
        age = self._clock() - int(stamp)
        return bool(authentic) and -60 <= age <= self.max_age

    def clear(self, secure: bool) -> tuple[str, str]:
        """The Set-Cookie header that deletes the nonce (after a login: the session has its own token)."""
        return _set_cookie(self.COOKIE, None, 0, secure)


# -- the throttle ---------------------------------------------------------------------


class LoginThrottle:
    """Failed logins counted per account and per client address, in a SQLite file of the app's own.

    After *account_limit* failures for one username, or *address_limit* from
    one address, within *window* seconds of the first, further attempts are
    refused until the window ends; a successful login clears its account's
    count. The counts are atomic upserts in one file, so every worker process
    of a server shares them. :meth:`wait` is checked before the password hash
    is computed; guesses already in flight when the limit is reached can pass
    it, so a burst overshoots by at most the number of requests served at once.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        account_limit: int = 5,
        address_limit: int = 20,
        window: float = 900,
        clock: Clock = time.time,
    ) -> None:
        self.path = Path(path)
        self.account_limit = account_limit
        self.address_limit = address_limit
        self.window = window
        #: The time (epoch seconds) the throttle, and the login form's tokens, go by.
        self.clock = clock
        self._ready = False
        self._lock = threading.Lock()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=10, isolation_level=None)
        try:
            if not self._ready:
                with self._lock:
                    db.execute("PRAGMA journal_mode=WAL")
                    db.execute(
                        "CREATE TABLE IF NOT EXISTS login_failures"
                        " (key TEXT PRIMARY KEY, failures INTEGER NOT NULL, since REAL NOT NULL) WITHOUT ROWID"
                    )
                    db.execute("CREATE INDEX IF NOT EXISTS login_failures_since ON login_failures (since)")
                    self._ready = True
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
        finally:
            db.close()

    def _keys(self, username: str, address: str) -> tuple[str, str]:
        return f"account:{username[:256]}", f"address:{address or 'unknown'}"

    def wait(self, username: str, address: str) -> float:
        """Seconds until *username* may try again from *address*: 0 when an attempt is allowed now."""
        now = self.clock()
        account, client = self._keys(username, address)
        with self._transaction() as db:
            db.execute("DELETE FROM login_failures WHERE since <= ?", (now - self.window,))
            rows = db.execute("SELECT key, failures, since FROM login_failures WHERE key IN (?, ?)", (account, client))
            counts = {key: (failures, since) for key, failures, since in rows}
        wait = 0.0
        for key, limit in ((account, self.account_limit), (client, self.address_limit)):
            failures, since = counts.get(key, (0, now))
            if failures >= limit:
                wait = max(wait, since + self.window - now)
        return wait

    def failed(self, username: str, address: str) -> None:
        """Count a failed login against the account and the address."""
        now = self.clock()
        with self._transaction() as db:
            db.executemany(
                "INSERT INTO login_failures (key, failures, since) VALUES (?, 1, ?)"
                " ON CONFLICT (key) DO UPDATE SET"
                " failures = CASE WHEN since <= excluded.since - ? THEN 1 ELSE failures + 1 END,"
                " since = CASE WHEN since <= excluded.since - ? THEN excluded.since ELSE since END",
                [(key, now, self.window, self.window) for key in self._keys(username, address)],
            )

    def succeeded(self, username: str) -> None:
        """Clear the account's count (a successful login)."""
        with self._transaction() as db:
            db.execute("DELETE FROM login_failures WHERE key = ?", (self._keys(username, "")[0],))


# -- the login form -----------------------------------------------------------------


@dataclass(frozen=True)
class Login:
    """A successful login: bind the session to *user_id*, then send *reply* (to the dashboard)."""

    user_id: str
    username: str
    reply: Reply


class LoginGate:
    """The login page and the checks on its POST: token, throttle, password, in that order.

    The form's tokens go by the throttle's clock.
    """

    def __init__(self, secret: str, throttle: LoginThrottle) -> None:
        self.forms = LoginForms(secret, clock=throttle.clock)
        self.throttle = throttle

    def page(
        self,
        environ: Mapping[str, Any],
        *,
        message: str = "",
        status: int = 200,
        headers: Iterable[tuple[str, str]] = (),
    ) -> Reply:
        """The login page with a fresh form token, and "Logged out" if the browser just logged out."""
        secure = is_https(environ)
        token, cookie = self.forms.issue(environ)
        flashes, extra = [], [cookie, ("Cache-Control", "no-store"), *headers]
        notice = _NOTICES.get(cookies(environ).get(_cookie_name(_NOTICE, secure), ""))
        if notice is not None and not message:
            flashes.append(("info", notice))
            extra.append(_set_cookie(_NOTICE, None, 0, secure))
        form = (
            '<form method="post" action="/login" class="card">'
            f'<input type="hidden" name="csrf_token" value="{html.escape(token)}">'
            '<label for="username">Username</label>'
            '<input id="username" name="username" autocomplete="username" required>'
            '<label for="password">Password</label>'
            '<input id="password" name="password" type="password" autocomplete="current-password" required>'
            '<br><button type="submit">Log in</button></form>'
        )
        return page("Log in", form, status=status, flashes=flashes, message=message, headers=extra)

    def attempt(
        self,
        environ: Mapping[str, Any],
        token: str | None,
        username: str,
        password: str,
    ) -> Reply | Login:
        """Check a POST of the login form: a :class:`Login`, or the page that refuses it (403, 429 or 401)."""
        if not self.forms.check(environ, token):
            return self.page(environ, message="The form expired; please try again.", status=403)
        # REMOTE_ADDR only: X-Forwarded-For is whatever the client says, unless
        # a proxy you run sets it (then pass that proxy's value here instead).
        address = str(environ.get("REMOTE_ADDR", ""))
        wait = self.throttle.wait(username, address)
        if wait > 0:
            minutes = max(1, math.ceil(wait / 60))
            return self.page(
                environ,
                message=f"Too many failed logins; try again in {minutes} minute{'' if minutes == 1 else 's'}.",
                status=429,
                headers=[("Retry-After", str(math.ceil(wait)))],
            )
        user_id = check_password(username, password)
        if user_id is None:
            self.throttle.failed(username, address)
            return self.page(environ, message="Invalid username or password.", status=401)
        self.throttle.succeeded(username)
        return Login(user_id, username, redirect("/dashboard", self.forms.clear(is_https(environ))))


# -- running the apps -------------------------------------------------------------------


def lazy_app(make_app: Callable[[], Any], namespace: dict[str, Any]) -> Callable[[str], Any]:
    """A module ``__getattr__`` that builds the module's ``app`` on first use (for gunicorn),
    so that importing the module touches no file."""

    def __getattr__(name: str) -> Any:
        if name == "app":
            namespace["app"] = built = make_app()
            return built
        raise AttributeError(f"module {namespace['__name__']!r} has no attribute {name!r}")

    return __getattr__


def serve(app: Any, path: str = "/") -> None:
    """``python examples/<name>.py [PORT]``: serve *app* on 127.0.0.1."""
    from wsgiref.simple_server import make_server

    port = int(sys.argv[1]) if len(sys.argv) > 1 else 8000
    with make_server("127.0.0.1", port, app) as server:
        print(f"Serving on http://127.0.0.1:{port}{path}  (demo user: {DEMO_USER} / {DEMO_PASSWORD})", flush=True)
        server.serve_forever()
