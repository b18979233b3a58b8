"""Pyramid integration: ``request.session`` backed by wsgisession.

Wrap the Pyramid WSGI application in :class:`~wsgisession.SessionMiddleware`
and register :func:`session_factory` (or ``config.include("wsgisession.integrations.pyramid")``)::

    config.set_session_factory(session_factory)
    app = SessionMiddleware(config.make_wsgi_app(), secret=..., store="sqlite:///sessions.sqlite3")

``request.session`` is then a :class:`PyramidSession`: Pyramid's ``ISession``
over the request's :class:`~wsgisession.Session`, which the middleware saves.
Pyramid's default CSRF policy (``SessionCSRFStoragePolicy``) keeps its token
under ``"_csrft_"``; that key is an alias of wsgisession's own CSRF token, so
``pyramid.csrf.get_csrf_token(request)``, ``request.session.get_csrf_token()``
and :meth:`Session.check_csrf <wsgisession.Session.check_csrf>` all agree.
"""

from __future__ import annotations

from typing import Any

from pyramid.interfaces import ISession
from zope.interface import implementer

from ..middleware import get_session
from ..session import CSRF_KEY, Session
from ._view import SessionView

__all__ = ["DEFAULT_QUEUE_CATEGORY", "PyramidSession", "includeme", "session_factory"]

#: The flash category that Pyramid's default queue (``""``) maps to: the
#: default category of :meth:`Session.flash <wsgisession.Session.flash>`.
DEFAULT_QUEUE_CATEGORY = "info"

# The session key of pyramid.csrf.SessionCSRFStoragePolicy's default configuration.
_PYRAMID_CSRF_KEY = "_csrft_"


def _key(key: str) -> str:
    return CSRF_KEY if key == _PYRAMID_CSRF_KEY else key


def _category(queue: str) -> str:
    if type(queue) is not str:
        raise TypeError(f"a flash queue name must be a str, not {type(queue).__name__}")
    return queue or DEFAULT_QUEUE_CATEGORY


@implementer(ISession)
class PyramidSession(SessionView):
    """Pyramid's ``ISession`` over a :class:`~wsgisession.Session`.

    Values must be JSON data, as Pyramid 2 requires. Flash queues are
    wsgisession flash categories (the default queue ``""`` is the category
    ``"info"``) and messages must be ``str``. :meth:`changed` is not needed:
    changes inside lists and dicts are detected. The wrapped session, with
    :meth:`~wsgisession.Session.regenerate` and the rest of its API, is
    :attr:`wsgi_session`.
    """

    __slots__ = ("wsgi_session",)

    def __init__(self, session: Session) -> None:
        #: The :class:`~wsgisession.Session` this object presents.
        self.wsgi_session = session

    def __repr__(self) -> str:
        return f"<PyramidSession of {self.wsgi_session!r}>"

    # -- the mapping -------------------------------------------------------------

    _key = staticmethod(_key)

    # -- ISession ------------------------------------------------------------------

    @property
    def created(self) -> float:
        """When the session was created (epoch seconds)."""
        return self.wsgi_session.created_at

    @property
    def new(self) -> bool:
        """Whether the session did not exist before this request."""
        return self.wsgi_session.is_new

    def changed(self) -> None:
        """Do nothing: changes made inside a session's lists and dicts are detected without it."""

    def invalidate(self) -> None:
        """Destroy the session now (store record and cookie); later writes start a new session."""
        self.wsgi_session.destroy()

    def flash(self, msg: str, queue: str = "", allow_duplicate: bool = True) -> None:
        """Queue the message *msg* (a ``str``) in the flash queue *queue*.

        With ``allow_duplicate=False`` a message already in that queue is not added again.
        """
        category = _category(queue)
        if not allow_duplicate and (category, msg) in self.wsgi_session.peek_flashes():
            return
        self.wsgi_session.flash(msg, category)

    def peek_flash(self, queue: str = "") -> list[str]:
        """The messages in the flash queue *queue*, left in place."""
        category = _category(queue)
        return [message for c, message in self.wsgi_session.peek_flashes() if c == category]

    def pop_flash(self, queue: str = "") -> list[str]:
        """The messages in the flash queue *queue*, removed from it (other queues are kept)."""
        category = _category(queue)
        queued = self.wsgi_session.peek_flashes()
        popped = [message for c, message in queued if c == category]
        if popped:
            self.wsgi_session.pop_flashes()
            for c, message in queued:
                if c != category:
                    self.wsgi_session.flash(message, c)
        return popped

    def new_csrf_token(self) -> str:
        """Replace the session's CSRF token with a fresh one and return it."""
        return self.wsgi_session.new_csrf_token()

    def get_csrf_token(self) -> str:
        """The session's CSRF token, made on first use."""
        return self.wsgi_session.csrf_token


def session_factory(request: Any) -> PyramidSession:
    """Pyramid's session factory: ``request.session`` for *request*.

    Raises :class:`RuntimeError` when the request did not pass through
    :class:`~wsgisession.SessionMiddleware`.
    """
    return PyramidSession(get_session(request.environ))


def includeme(config: Any) -> None:
    """Register :func:`session_factory`: ``config.include("wsgisession.integrations.pyramid")``."""
    config.set_session_factory(session_factory)
