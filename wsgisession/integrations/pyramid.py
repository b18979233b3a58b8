"""Pyramid integration: ``request.session`` backed by wsgisession.

Wrap the Pyramid WSGI application in :class:`~wsgisession.SessionMiddleware`
and register :func:`session_factory` (or ``config.include("wsgisession.integrations.pyramid")``)::

    config.set_session_factory(session_factory)
    app = SessionMiddleware(config.make_wsgi_app(), secret=..., store="sqlite:///sessions.sqlite3")

``request.session`` is then a :class:`PyramidSession`: Pyramid's ``ISession``
over the request's :class:`~wsgisession.Session`, which the middleware saves.
Pyramid's default CSRF policy (``LegacySessionCSRFStoragePolicy``) asks the
session for its token, and ``SessionCSRFStoragePolicy`` keeps its token
under ``"_csrft_"``, which is an alias of wsgisession's own CSRF token: so
``pyramid.csrf.get_csrf_token(request)``, ``request.session.get_csrf_token()``
and :meth:`Session.check_csrf <wsgisession.Session.check_csrf>` all agree.

Where this session differs from Pyramid's own cookie session
(``SignedCookieSessionFactory``), on purpose:

* The data lives in the store, the cookie carries only a signed session ID:
  there is no 4 kB limit, and the cookie's name, lifetime and attributes are
  the middleware's options (``timeout`` is ``max_age``; instead of
  ``reissue_time``, ``rolling=True`` refreshes the expiry of a session that is
  used, at most about once a minute).
* Values must be JSON data, checked when they are set: anything else raises
  :class:`TypeError` naming the key at once (a tuple is refused, not turned
  into a list on the way back).
* :meth:`~PyramidSession.changed` is not needed and does nothing: changes made
  inside the session's lists and dicts are detected. An unchanged session is
  not written, whether or not ``changed()`` was called.
* :meth:`~PyramidSession.invalidate` deletes the session from the store at
  once and expires the cookie; writes after it start a new session, with a new
  ID (``new`` is then true again).
* A response with a 5xx status, or an exception that escapes Pyramid, saves
  nothing (Pyramid's ``set_on_exception=True`` would keep the changes). An
  ``HTTPException`` raised by a view (a redirect, a 403...) renders a response
  below 500, which saves as usual.
* Flash queues are wsgisession flash categories, shared with
  :meth:`Session.flash <wsgisession.Session.flash>`: the default queue ``""``
  is the category ``"info"``, so the queues ``""`` and ``"info"`` are one.
  A message is JSON data or a :class:`markupsafe.Markup`, which comes back as
  ``Markup`` (a ``tuple``, ``bytes``, ``datetime`` or ``UUID`` comes back as
  itself too); :meth:`~PyramidSession.peek_flash` returns a copy of the queue.
"""

from __future__ import annotations

import copy
from typing import Any

from pyramid.interfaces import ISession
from zope.interface import implementer

from .. import _json
from .._tagged import tag, untag
from ..middleware import get_session
from ..session import CSRF_KEY, FLASH_KEY, Session
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


def _encode_message(message: object) -> object:
    """*message* as the JSON data the flash storage keeps (Markup and the like tagged)."""
    try:
        data = tag(message)
        _json.check_json(FLASH_KEY, data)
    except TypeError as exc:
        raise TypeError(f"a flash message must be JSON data or Markup, not {type(message).__name__} ({exc})") from None
    return data


def _decode_message(data: object) -> object:
    if type(data) is str:
        return data
    try:
        # A copy: what the caller does to the message must not change the stored queue.
        return untag(copy.deepcopy(data))
    except (ValueError, RecursionError):
        return data  # planted data nested too deeply to walk: shown as it is, not an error page


def _is_flash(item: object) -> bool:
    return type(item) is list and len(item) == 2 and type(item[0]) is str


@implementer(ISession)
class PyramidSession(SessionView):
    """Pyramid's ``ISession`` over a :class:`~wsgisession.Session`.

    Values must be JSON data, as Pyramid 2 requires. Flash queues are
    wsgisession flash categories (the default queue ``""`` is the category
    ``"info"``); a flash message is JSON data or ``Markup``. :meth:`changed`
    is not needed: changes inside lists and dicts are detected. The wrapped
    session, with :meth:`~wsgisession.Session.regenerate` and the rest of its
    API, is :attr:`wsgi_session`. The module's docstring lists where this
    session differs from Pyramid's own.
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
        """Whether the session did not exist before this request (true again after :meth:`invalidate`)."""
        return self.wsgi_session.is_new

    def changed(self) -> None:
        """Do nothing: changes made inside a session's lists and dicts are detected without it."""

    def invalidate(self) -> None:
        """Destroy the session now (store record and cookie); later writes start a new session."""
        self.wsgi_session.destroy()

    def _queued(self) -> list[Any]:
        queued = self.wsgi_session.get(FLASH_KEY)
        return list(queued) if type(queued) is list else []

    def flash(self, msg: Any, queue: str = "", allow_duplicate: bool = True) -> None:
        """Add the message *msg* (JSON data or ``Markup``) to the end of the flash queue *queue*.

        With ``allow_duplicate=False`` a message equal to one already in that
        queue is not added again.

        :raises TypeError: if *msg* is neither JSON data nor ``Markup``, or *queue* is not a ``str``.
        """
        category = _category(queue)
        data = _encode_message(msg)
        queued = self._queued()
        if not allow_duplicate and any(
            item[0] == category and _decode_message(item[1]) == msg for item in queued if _is_flash(item)
        ):
            return
        queued.append([category, data])
        self.wsgi_session[FLASH_KEY] = queued

    def peek_flash(self, queue: str = "") -> list[Any]:
        """The messages in the flash queue *queue*, oldest first, left in place."""
        category = _category(queue)
        return [_decode_message(item[1]) for item in self._queued() if _is_flash(item) and item[0] == category]

    def pop_flash(self, queue: str = "") -> list[Any]:
        """The messages in the flash queue *queue*, oldest first, removed from it (other queues are kept)."""
        category = _category(queue)
        queued = self._queued()
        popped = [item[1] for item in queued if _is_flash(item) and item[0] == category]
        if popped:
            rest = [item for item in queued if not (_is_flash(item) and item[0] == category)]
            if rest:
                self.wsgi_session[FLASH_KEY] = rest
            else:
                del self.wsgi_session[FLASH_KEY]
        return [_decode_message(data) for data in popped]

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
