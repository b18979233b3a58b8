"""A trivial WSGI page without sessions: the baseline for benchmarks/server_load.py.

Served by the same gunicorn configuration as the reference app, it shows what
the server, the sockets and the load generator cost on their own.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

# About the size of the reference app's dashboard, so the bytes on the wire match.
PAGE = (
    b"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>Welcome, admin</title></head><body>"
    b"<h1>Welcome, admin</h1><div class='card'><p>User ID: <code>admin</code></p>"
    + b"<p>"
    + b"A page without a session. " * 40
    + b"</p></div></body></html>"
)


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    start_response(
        "200 OK",
        [
            ("Content-Type", "text/html; charset=utf-8"),
            ("Content-Length", str(len(PAGE))),
            ("Cache-Control", "no-store"),
        ],
    )
    return [PAGE]
