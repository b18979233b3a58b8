"""What the Bottle, Flask and Pyramid versions of the reference app share: pages and settings."""

from __future__ import annotations

import html
import sys
from collections.abc import Callable, Iterable
from typing import Any

try:
    from examples.app import DATABASE, load_secret
except ImportError:  # run as a script: examples/ is on sys.path, the repository root is not
    from app import DATABASE, load_secret  # type: ignore[no-redef]

__all__ = [
    "DATABASE",
    "FORBIDDEN",
    "LOG_IN_FIRST",
    "dashboard_page",
    "lazy_app",
    "login_page",
    "page",
    "serve",
    "session_settings",
]

FORBIDDEN = ("Forbidden", "<p>Missing or wrong CSRF token.</p>")
LOG_IN_FIRST = ("Please log in first", '<p><a href="/login">Log in</a></p>')


def session_settings(secret: str | None, store: Any, database: str = DATABASE) -> tuple[str, Any]:
    """The secret and store to use: those given, else the reference app's (SQLite at *database*)."""
    return (
        secret if secret is not None else load_secret(database),
        store if store is not None else f"sqlite:///{database}",
    )


def page(title: str, body: str) -> str:
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title></head>'
        f"<body><h1>{html.escape(title)}</h1>{body}</body></html>"
    )


def login_page(flashes: Iterable[str], csrf_token: str, message: str = "") -> str:
    notes = "".join(f'<p class="msg">{html.escape(text)}</p>' for text in flashes)
    if message:
        notes += f'<p class="msg error">{html.escape(message)}</p>'
    return page(
        "Log in",
        f'{notes}<form method="post" action="/login">'
        f'<input type="hidden" name="csrf_token" value="{html.escape(csrf_token)}">'
        '<p><label>Username <input name="username" autocomplete="username"></label></p>'
        '<p><label>Password <input name="password" type="password" autocomplete="current-password"></label></p>'
        '<p><button type="submit">Log in</button></p></form>',
    )


def dashboard_page(username: str, user_id: str, visits: int, csrf_token: str) -> str:
    return page(
        f"Welcome, {username}",
        f"<p>User ID: {html.escape(user_id)}</p>"
        f"<p>Visits this session: {visits}</p>"
        '<form method="post" action="/logout">'
        f'<input type="hidden" name="csrf_token" value="{html.escape(csrf_token)}">'
        '<button type="submit">Log out</button></form>',
    )


def lazy_app(make_app: Callable[[], Any], namespace: dict[str, Any]) -> Callable[[str], Any]:
    """A module ``__getattr__`` that builds the module's ``app`` on first use (for gunicorn),
    so that importing the module touches no file."""

    def __getattr__(name: str) -> Any:
        if name == "app":
            namespace["app"] = built = make_app()
            return built
        raise AttributeError(f"module {namespace['__name__']!r} has no attribute {name!r}")

    return __getattr__


def serve(app: Any) -> None:
    """``python examples/<framework>_app.py [PORT]``: serve *app* on 127.0.0.1."""
    from wsgiref.simple_server import make_server

    port = int(sys.argv[1]) if len(sys.argv) > 1 else 8000
    with make_server("127.0.0.1", port, app) as server:
        print(f"Serving on http://127.0.0.1:{port}/login (demo user: admin / 123)")
        server.serve_forever()
