"""WebOb integration: ``request.session`` on a ``webob.Request``.

Wrap the application in :class:`~wsgisession.SessionMiddleware` and write it
with :class:`wsgify` (WebOb's decorator, handing the view a
:class:`SessionRequest`)::

    from webob import Response
    from wsgisession.integrations.webob import SessionRequest, wsgify

    @wsgify
    def app(request: SessionRequest) -> Response:
        request.session["visits"] = request.session.get("visits", 0) + 1
        return Response(f"visit {request.session['visits']}")

    wsgi_app = SessionMiddleware(app, secret=..., store="sqlite:///sessions.sqlite3")

``webob.dec.wsgify(RequestClass=SessionRequest)`` is the same thing, and
``SessionRequest(environ)`` works anywhere a WebOb request is made by hand.
Only this module imports WebOb: ``import wsgisession`` does not.
"""

from __future__ import annotations

from typing import Any

import webob
import webob.dec

from ..middleware import get_session
from ..session import Session

__all__ = ["SessionRequest", "wsgify"]


class SessionRequest(webob.Request):  # type: ignore[misc]  # WebOb ships no type hints
    """A ``webob.Request`` whose :attr:`session` is the request's :class:`~wsgisession.Session`."""

    @property
    def session(self) -> Session:
        """The request's session, from :class:`~wsgisession.SessionMiddleware`.

        The same object as ``get_session(request.environ)``; nothing is read
        from the store until it is used. Raises :class:`RuntimeError` if the
        application is not wrapped in the middleware.
        """
        return get_session(self.environ)

    @property
    def user_id(self) -> str | None:
        """The user the session is bound to by :meth:`Session.login <wsgisession.Session.login>`, or ``None``."""
        return self.session.user_id

    def check_csrf(self, field: str = "csrf_token", header: str = "X-CSRF-Token") -> bool:
        """Whether the request carries the session's CSRF token (constant-time).

        Looks in the form field *field* of a POST body, then in the request
        header *header* (for scripts); a request with neither is refused.
        """
        token: Any = self.POST.get(field) if self.method == "POST" else None
        if token is None:
            token = self.headers.get(header)
        return self.session.check_csrf(token)


class wsgify(webob.dec.wsgify):  # type: ignore[misc]  # named as WebOb names it
    """``webob.dec.wsgify`` with :class:`SessionRequest` as its request class."""

    RequestClass = SessionRequest
