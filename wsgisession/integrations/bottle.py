"""Bottle integration: the session of the current Bottle request.

Wrap the Bottle application in :class:`~wsgisession.SessionMiddleware`, then
call :func:`session` in a route, or install :class:`SessionPlugin` to have the
session passed to every route that takes a ``session`` argument::

    app = bottle.Bottle()
    app.install(SessionPlugin())

    @app.get("/")
    def index(session):
        session["visits"] = session.get("visits", 0) + 1
        ...

    wsgi_app = SessionMiddleware(app, secret=..., store="sqlite:///sessions.sqlite3")
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

import bottle

from ..middleware import get_session
from ..session import Session

__all__ = ["SessionPlugin", "session"]


def session() -> Session:
    """The session of the request Bottle is handling (from ``bottle.request.environ``).

    Raises :class:`RuntimeError` if the application is not wrapped in
    :class:`~wsgisession.SessionMiddleware`.
    """
    return get_session(bottle.request.environ)


class SessionPlugin:
    """A Bottle plugin that passes the session to routes taking a *keyword* argument.

    Routes whose callback has no parameter of that name are left as they are.
    The application must still be wrapped in :class:`~wsgisession.SessionMiddleware`.
    """

    name = "wsgisession"
    api = 2

    def __init__(self, keyword: str = "session") -> None:
        self.keyword = keyword

    def apply(self, callback: Callable[..., Any], route: Any) -> Callable[..., Any]:
        """Wrap *callback* if it takes the keyword argument (called by Bottle)."""
        # inspect.signature, not route.get_callback_args(): Bottle's version loops
        # forever on a closure over no callable (bottlepy/bottle#926).
        try:
            parameters = inspect.signature(route.callback).parameters
        except (TypeError, ValueError):  # no signature to read: leave the route alone
            return callback
        if self.keyword not in parameters:
            return callback
        keyword = self.keyword

        @functools.wraps(callback)
        def with_session(*args: Any, **kwargs: Any) -> Any:
            kwargs[keyword] = session()
            return callback(*args, **kwargs)

        return with_session
